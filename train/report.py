"""Results table of finished runs: one row per run folder, read from its metrics.json.

    python train/report.py [cache/runs] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.runfolder import finished_runs

COLUMNS = ("test_roc_auc", "test_pr_auc", "test_recall@1", "test_recall@2", "test_recall@4", "test_recall@8")


def collect(root: Path) -> list[dict]:
    """``metrics.json`` of every run folder under ``root``, sorted by task then name."""
    rows = []
    for folder, m in finished_runs(root):
        rows.append({"run": folder.name, "task": m["task"], "model": m["model"],
                     "epochs": m["epochs_run"], "minutes": m["seconds"] / 60, **{c: m.get(c) for c in COLUMNS}})
    return sorted(rows, key=lambda r: (r["task"], r["run"]))


def table(rows: list[dict]) -> str:
    head = ["run", "task", "epochs", "min", "ROC-AUC", "PR-AUC", "R@1", "R@2", "R@4", "R@8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    for r in rows:
        lines.append(f"| {r['run']} | {r['task']} | {r['epochs']} | {r['minutes']:.1f} | "
                     + " | ".join(fmt(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python train/report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", type=Path, default=Path("cache/runs"), help="folder of run folders")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = p.parse_args(argv)
    rows = collect(a.root)
    if not rows:
        print(f"error: no finished run (no */metrics.json) under {a.root}; train one with `python train/run.py`",
              file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if a.json else f"Test split, {a.root}\n\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
