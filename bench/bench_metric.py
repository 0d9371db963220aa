"""Does the metric stage beat the embedding it starts from? Paired intervals, several seeds, in one run.

    python bench/bench_metric.py [--features cache/features-std.h5] [--out cache/metric-bench]
                                 [--epochs 6] [--seeds 0,1] [--starts tagging,musicnn]
                                 [--recipes triplet,contrastive] [--heldout cache/features-heldout.h5]

For each seed: a tagging run of ``shortres`` (the start), then the metric stage started from it
(``--init``) with each recipe of ``--recipes`` (``RECIPES``: the loss, the backbone's learning
rate, the projection's start, the batch). From musicnn's network trained on the real MTAT
(``train/pretrained.py MTT_musicnn``) the recipes of ``--musicnn-recipes`` (its backbone frozen by
default: fine-tuning all of it costs some 10 minutes an epoch on 2 cores), against its own
embedding (``train/embed.py``). Every embedding is scored on the test split with Recall@1/2/4/8 and compared
with its start by the paired bootstrap difference per K (``eval/recall.py --against``); the
tagging runs also give ROC-AUC and PR-AUC with intervals. The table also shows each run's
validation mean Recall@K, which is what picks a default (never the test columns). Use a features
file of the standard split (several hundred test queries): ``python pipeline/extract.py --split
standard ...``. With ``--heldout`` (the features of a second corpus no run has seen, e.g.
``data/demo.py --seed 1``), every embedding and its start are also scored on all of that corpus's
clips, which narrows the intervals by the square root of the query counts. A run folder already
finished is reused, so the script can be re-run to add seeds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eval.auc import macro_ci, tag_auc  # noqa: E402
from eval.bootstrap import mean_ci, paired_ci  # noqa: E402
from eval.recall import recall_at_k  # noqa: E402

KS = (1, 2, 4, 8)
PY = sys.executable
#: The metric stages compared: their run folder's name and their train/run.py arguments.
RECIPES = {
    "random": ["--loss", "triplet", "--start", "random"],  # before --start existed
    "triplet": ["--loss", "triplet"],  # semi-hard triplets + tag loss, the default until 2026-12-04
    "triplet-blr0.1": ["--loss", "triplet", "--backbone-lr", "0.1"],
    "contrastive": ["--loss", "contrastive"],
    "contrastive-blr0.1": ["--loss", "contrastive", "--backbone-lr", "0.1"],
    "contrastive-b128": ["--loss", "contrastive", "--batch", "128"],
    "contrastive-frozen": ["--loss", "contrastive", "--backbone-lr", "0"],
}


def train(out: Path, *args) -> Path:
    if not (out / "metrics.json").is_file():
        subprocess.run([PY, "train/run.py", "--out", str(out), "--quiet", *map(str, args)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    return out


def embed(run: Path, features: Path, split: str, out: Path) -> Path:
    """``train/embed.py`` of ``run`` on ``features`` into ``out`` (kept: a second call reads it)."""
    if not (out / "embeddings.npy").is_file():
        subprocess.run([PY, "train/embed.py", "--run", str(run), "--features", str(features), "--split", split,
                        "--out", str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out


def recall(folder: Path, start: Path | None = None) -> dict:
    """Recall@K of ``folder``'s embeddings with intervals, and against ``start``'s the paired difference."""
    emb, labels = np.load(folder / "embeddings.npy"), np.load(folder / "labels.npy")
    res = recall_at_k(emb, labels, ks=KS)
    row = {"recall": {k: res["recall"][k] for k in KS},
           "ci95": {k: (c["low"], c["high"]) for k, c in zip(KS, mean_ci(res["per_query"]))},
           "n_queries": res["n_queries"]}
    if start is not None:
        base = recall_at_k(np.load(start / "embeddings.npy"), labels, ks=KS)
        row["vs_start"] = {k: d for k, d in zip(KS, paired_ci(res["per_query"], base["per_query"]))}
    return row


def scores(folder: Path, start: Path | None = None, run: Path | None = None, heldout: tuple | None = None) -> dict:
    """Test scores of ``folder`` (a run folder, or an embedding folder of ``run``) against ``start``'s; with
    ``heldout`` (features file, the start's run) the same on every clip of that held-out corpus."""
    run = run or folder
    row = recall(folder, start)
    if (run / "metrics.json").is_file():
        val = json.loads((run / "metrics.json").read_text()).get("valid", {})
        recalls = [val[f"recall@{k}"] for k in KS if f"recall@{k}" in val]
        row["val_mean_recall"] = float(np.mean(recalls)) if recalls else None
    if (folder / "predictions.npy").is_file():
        pred, labels = np.load(folder / "predictions.npy"), np.load(folder / "labels.npy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = tag_auc(pred, labels)
            row.update(roc_auc=a["roc_auc_macro"], pr_auc=a["pr_auc_macro"], auc_ci95=macro_ci(pred, labels))
    if heldout is not None:
        file, start_run = heldout
        mine = embed(run, file, "all", run / f"embed-{file.stem}-all")
        theirs = None if start_run is None else embed(start_run, file, "all", start_run / f"embed-{file.stem}-all")
        row["heldout"] = recall(mine, theirs)
    return row


def diff_cells(r: dict, ks=(1, 2)) -> str:
    return "; ".join(f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + (" *" if d["beyond_noise"] else "")
                     for k, d in r.get("vs_start", {}).items() if k in ks) or "-"


def table(rows: list) -> str:
    lines = ["| embedding | seed | valid mean R@K | test R@1 | R@2 | R@4 | R@8 | test vs its start: R@1; R@2 "
             "(paired 95 % interval) | held-out R@1 | R@2 | held-out vs its start: R@1; R@2 | ROC-AUC | PR-AUC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = " | ".join(f"{r['recall'][k]:.3f}" for k in KS)
        val = f"{r['val_mean_recall']:.3f}" if r.get("val_mean_recall") is not None else "-"
        h = r.get("heldout")
        held = (f"{h['recall'][1]:.3f} | {h['recall'][2]:.3f} | {diff_cells(h)}") if h else "- | - | -"
        auc = f"{r['roc_auc']:.3f} | {r['pr_auc']:.3f}" if "roc_auc" in r else "- | -"
        lines.append(f"| {r['name']} | {r['seed']} | {val} | {rec} | {diff_cells(r)} | {held} | {auc} |")
    if rows:
        q, h = rows[0]["n_queries"], rows[0].get("heldout", {}).get("n_queries")
        lines.append(f"\n{q} test queries" + (f", {h} held-out queries" if h else "")
                     + "; * the paired interval leaves out 0.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_metric.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=REPO / "cache/features-std.h5")
    p.add_argument("--heldout", type=Path, default=None,
                   help="features file of a held-out corpus (e.g. data/demo.py --seed 1): every run is also "
                        "scored on all its clips, several times the test split's queries")
    p.add_argument("--out", type=Path, default=REPO / "cache/metric-bench")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--starts", default="tagging,musicnn")
    p.add_argument("--recipes", default="triplet,contrastive", help=f"any of {', '.join(RECIPES)}")
    p.add_argument("--musicnn-recipes", default="contrastive-frozen",
                   help="the recipes from musicnn's network (fine-tuning all of it costs ~10 min an epoch on 2 cores)")
    p.add_argument("--musicnn-epochs", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    f, e = a.features, a.epochs
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    m_recipes = [r.strip() for r in a.musicnn_recipes.split(",") if r.strip()]
    if unknown := sorted(set(recipes + m_recipes) - set(RECIPES)):
        p.error(f"unknown recipe {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    res, t0 = {"features": str(f), "heldout": str(a.heldout), "epochs": e, "rows": []}, time.time()
    for seed in map(int, a.seeds.split(",")):
        common = ["--features", f, "--seed", seed]
        if "tagging" in a.starts:
            tag = train(a.out / f"tagging-s{seed}", *common, "--epochs", e)
            held = (a.heldout, None) if a.heldout else None
            res["rows"].append({"name": "tagging shortres (the start)", "seed": seed, **scores(tag, heldout=held)})
            held = (a.heldout, tag) if a.heldout else None
            for name in recipes:
                m = train(a.out / f"metric-{name}-s{seed}", *common, "--epochs", e, "--task", "metric", "--init", tag,
                          *RECIPES[name])
                res["rows"].append({"name": f"metric from tagging, {name}", "seed": seed,
                                    **scores(m, tag, heldout=held)})
        if "musicnn" in a.starts and seed == int(a.seeds.split(",")[0]):  # the start has no seed
            pre = REPO / "cache/pretrained/MTT_musicnn"
            if not (pre / "config.json").is_file():
                subprocess.run([PY, "train/pretrained.py", "MTT_musicnn", "--out", str(pre)], cwd=REPO, check=True)
            emb = embed(pre, f, "test", pre / f"embed-{f.stem}-test")
            held = (a.heldout, None) if a.heldout else None
            res["rows"].append({"name": "musicnn MTT (pretrained, the start)", "seed": "-",
                                **scores(emb, run=pre, heldout=held)})
            held = (a.heldout, pre) if a.heldout else None
            for name in m_recipes:
                m = train(a.out / f"metric-musicnn-{name}-s{seed}", *common, "--epochs", a.musicnn_epochs, "--task",
                          "metric", "--model", "musicnn", "--init", pre, *RECIPES[name])
                res["rows"].append({"name": f"metric from musicnn, {name}", "seed": seed,
                                    **scores(m, emb, heldout=held)})
        print(f"seed {seed} done at {time.time() - t0:.0f} s", flush=True)
    print(table(res["rows"]))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
