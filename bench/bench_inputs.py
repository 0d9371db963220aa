"""Does a pretrained network's feature help? A tagger on mel alone against mel + musicnn's taggram.

    python pipeline/extract.py --features mel,mfcc,chroma,musicnn --data cache/demo --split standard \\
        --out cache/features-std-musicnn.h5
    python bench/bench_inputs.py [--features cache/features-std-musicnn.h5] [--out cache/input-bench]
                                 [--epochs 6] [--seeds 0] [--pairs mel:mel,musicnn]

For each seed and each pair ``A:B`` of ``--inputs``, trains the default tagger (``shortres``) on A
and on B with everything else equal, and compares them on the test split: macro ROC-AUC and PR-AUC
with 95 % bootstrap intervals over clips and the paired difference B - A (``eval.auc.macro_ci``),
and Recall@1/2 of their penultimate embeddings with the paired difference per query. The course's
menu item: "a model using both mel-spectrograms and features extracted using the pre-trained
models". A run folder already finished is reused.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eval.auc import macro_ci, tag_auc  # noqa: E402
from eval.bootstrap import paired_ci  # noqa: E402
from eval.recall import recall_at_k  # noqa: E402

PY = sys.executable


def train(out: Path, *args) -> Path:
    if not (out / "metrics.json").is_file():
        subprocess.run([PY, "train/run.py", "--out", str(out), "--quiet", *map(str, args)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    return out


def compare(a: Path, b: Path) -> dict:
    """Test scores of runs ``a`` and ``b`` (the same clips) and the paired differences b - a."""
    pa, pb = np.load(a / "predictions.npy"), np.load(b / "predictions.npy")
    labels = np.load(a / "labels.npy")
    row = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tags without a positive in the test split are left out
        for name, pred in (("a", pa), ("b", pb)):
            auc = tag_auc(pred, labels)
            row[name] = {"roc_auc": auc["roc_auc_macro"], "pr_auc": auc["pr_auc_macro"], "ci95": macro_ci(pred, labels)}
        row["b_minus_a"] = macro_ci(pb, labels, other=pa)
    ra = recall_at_k(np.load(a / "embeddings.npy"), labels, ks=(1, 2))
    rb = recall_at_k(np.load(b / "embeddings.npy"), labels, ks=(1, 2))
    row["a"]["recall"], row["b"]["recall"] = ra["recall"], rb["recall"]
    row["recall_b_minus_a"] = dict(zip((1, 2), paired_ci(rb["per_query"], ra["per_query"])))
    row["n_clips"] = len(labels)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_inputs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=REPO / "cache/features-std-musicnn.h5")
    p.add_argument("--out", type=Path, default=REPO / "cache/input-bench")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", default="0")
    p.add_argument("--pairs", default="mel:mel,musicnn", help="A:B pairs of --inputs, separated by ';'")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    res = {"features": str(a.features), "epochs": a.epochs, "rows": []}
    lines = ["| inputs A -> B | seed | ROC-AUC A -> B (B - A, paired 95 % interval) | PR-AUC A -> B (B - A) "
             "| R@1 A -> B (B - A) |", "|---|---|---|---|---|"]
    for seed in map(int, a.seeds.split(",")):
        for pair in a.pairs.split(";"):
            ia, ib = pair.split(":")
            runs = [train(a.out / f"{i.replace(',', '-')}-s{seed}", "--features", a.features, "--epochs", a.epochs,
                          "--seed", seed, "--inputs", i) for i in (ia, ib)]
            row = {"a": ia, "b": ib, "seed": seed, **compare(*runs)}
            res["rows"].append(row)
            d, r = row["b_minus_a"], row["recall_b_minus_a"][1]
            cells = [f"{row['a'][m]:.3f} -> {row['b'][m]:.3f} ({row['b'][m] - row['a'][m]:+.3f} "
                     f"[{d[m][0]:+.3f}, {d[m][1]:+.3f}])" for m in ("roc_auc", "pr_auc")]
            rec = (f"{row['a']['recall'][1]:.3f} -> {row['b']['recall'][1]:.3f} ({r['diff']:+.3f} "
                   f"[{r['low']:+.3f}, {r['high']:+.3f}])")
            lines.append(f"| {ia} -> {ib} | {seed} | {cells[0]} | {cells[1]} | {rec} |")
    print("\n".join(lines))
    if res["rows"]:
        print(f"\n{res['rows'][0]['n_clips']} test clips; an interval leaving out 0 is a difference beyond the noise")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
