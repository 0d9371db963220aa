"""Results table of finished runs: one row per run folder, read from its metrics.json.

    python train/report.py [cache/runs] [--json] [--no-ci]

Each score comes with its 95 % bootstrap interval over the test clips (``eval.bootstrap``: 1,000
resamples, seed 0), computed from the run's saved predictions, embeddings and labels, so that two
rows can be told apart from noise; ``eval/recall.py A.npy --against B.npy`` gives the paired
difference of two runs on the same clips.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train.runfolder import finished_runs, recall_distance

COLUMNS = ("test_roc_auc", "test_pr_auc", "test_recall@1", "test_recall@2", "test_recall@4", "test_recall@8")


def intervals(folder: Path, n_boot: int = 1000) -> dict:
    """``{column: (low, high)}``: 95 % bootstrap intervals of a run's test scores from its saved outputs
    (Recall@K under the run's own distance)."""
    import numpy as np

    from eval.auc import macro_ci
    from eval.bootstrap import mean_ci
    from eval.recall import recall_at_k

    cfg_path = folder / "config.json"
    distance = recall_distance(json.loads(cfg_path.read_text())) if cfg_path.is_file() else "cosine"
    try:
        labels = np.load(folder / "labels.npy")
        emb = np.load(folder / "embeddings.npy")
    except (OSError, ValueError):
        return {}
    out = {}
    ks = [k for k in (1, 2, 4, 8) if k < len(emb)]
    if ks and labels.any():
        res = recall_at_k(emb, labels, ks=ks, metric=distance)  # as metrics.json's scores
        for k, c in zip(ks, mean_ci(res["per_query"], n_boot)):
            out[f"test_recall@{k}"] = (c["low"], c["high"])
    if (folder / "predictions.npy").is_file():
        ci = macro_ci(np.load(folder / "predictions.npy"), labels, n_boot=n_boot)
        out["test_roc_auc"], out["test_pr_auc"] = ci["roc_auc"], ci["pr_auc"]
    return out


def collect(root: Path, ci: bool = True) -> list[dict]:
    """``metrics.json`` of every run folder under ``root`` (with the intervals), sorted by task then name."""
    rows = []
    for folder, m in finished_runs(root):
        rows.append({"run": folder.name, "task": m["task"], "model": m["model"],
                     "epochs": m["epochs_run"], "minutes": m["seconds"] / 60, **{c: m.get(c) for c in COLUMNS},
                     "ci95": intervals(folder) if ci else {}})
    return sorted(rows, key=lambda r: (r["task"], r["run"]))


def table(rows: list[dict]) -> str:
    head = ["run", "task", "epochs", "min", "ROC-AUC", "PR-AUC", "R@1", "R@2", "R@4", "R@8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def fmt(r, c):
        v, ci = r[c], r.get("ci95", {}).get(c)
        if v is None:
            return "-"
        return f"{v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    for r in rows:
        lines.append(f"| {r['run']} | {r['task']} | {r['epochs']} | {r['minutes']:.1f} | "
                     + " | ".join(fmt(r, c) for c in COLUMNS) + " |")
    if any(r.get("ci95") for r in rows):
        lines.append("\n[low, high]: 95% bootstrap interval over the test clips; compare two runs with "
                     "`python eval/recall.py A/embeddings.npy --against B/embeddings.npy` (add `--metric euclidean` "
                     "for runs trained with Euclidean distance)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python train/report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", type=Path, default=Path("cache/runs"),
                   help="folder of run folders, or one run folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--no-ci", dest="ci", action="store_false", help="leave out the bootstrap intervals (faster)")
    a = p.parse_args(argv)
    rows = collect(a.root, a.ci)
    if not rows:
        print(f"error: no finished run (no */metrics.json) under {a.root}; train one with `python train/run.py`",
              file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if a.json else f"Test split, {a.root}\n\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
