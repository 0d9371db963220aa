"""Model quality on the held-out test split, against non-deep and untrained peers, in one run.

    python bench/bench_quality.py [--features cache/features.h5] [--out cache/quality] [--epochs N]

Tagging (test ROC-AUC / PR-AUC, macro over tags): ``baseline``, ``cnn2d`` and ``shortres`` trained by
``train/run.py`` with its default budget, and a logistic regression per tag (scikit-learn) on each
clip's MFCC mean and standard deviation, fitted on the same train split.

Metric learning (test Recall@K): the metric model started from the ``shortres`` tagging run above
(``--init``), the same trained from scratch (the default ``--task metric``), from scratch with
triplets alone (shared-tag negatives, no tag loss), and the course's linear projection with
tag-sampled triplets, against random embeddings, the same backbone untrained, and cosine nearest
neighbours on the MFCC statistics. All numbers come from ``eval/``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from eval.auc import tag_auc
from eval.recall import DEFAULT_KS, recall_at_k
from train import run
from train.feed import Crops, FeatureFile, standardizer
from train.models import build_embedding_model

REPO = Path(__file__).resolve().parents[1]
KS = DEFAULT_KS


def mfcc_stats(ff: FeatureFile, idx) -> np.ndarray:
    """Per clip: mean and standard deviation of each MFCC over its valid frames."""
    out = []
    for i in idx:
        x = ff.crop(i, 0, int(ff.n_frames[i]))
        out.append(np.concatenate([x.mean(axis=1), x.std(axis=1)]))
    return np.array(out)


def untrained_embeddings(ff_path, model: str, seed: int = 0) -> np.ndarray:
    """Test-clip embeddings (chunk-averaged) of a freshly initialised metric backbone."""
    inputs = run.parse_args(["--task", "metric", "--model", model, "--features", str(ff_path)]).inputs
    ff = FeatureFile(ff_path, inputs)
    mean, std = standardizer(ff, ff.indices("train"), seed=seed)
    frames = ff.params.frames(3.0)
    ds = Crops(ff, ff.indices("test"), frames, mean, std, "chunks")
    torch.manual_seed(seed)
    net = build_embedding_model(model, ff.bins, n_mels=ff.params.n_mels).eval()
    with torch.no_grad():
        emb = torch.cat([net(ds.__getitems__(range(k, min(k + 64, len(ds))))[0]) for k in range(0, len(ds), 64)])
    return ds.per_clip(emb.numpy())


def train_run(features, out: Path, argv: list[str]) -> dict:
    """Train with ``train/run.py`` unless the run folder already holds a finished run."""
    if not (out / "metrics.json").exists():
        code = run.main(["--features", str(features), "--out", str(out), "--quiet", *argv]
                        + (["--resume"] if (out / "last.pt").exists() else []))
        if code != 0:
            raise SystemExit(f"training {out.name} failed with exit code {code}")
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=REPO / "cache/features.h5")
    p.add_argument("--out", type=Path, default=REPO / "cache/quality")
    p.add_argument("--epochs", type=int, default=None, help="cap every run's epochs (default: the trainer's)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    extra = ["--seed", str(a.seed)] + (["--epochs", str(a.epochs)] if a.epochs else [])
    t0 = time.time()

    tagging = {}
    for model in ("baseline", "cnn2d", "shortres"):
        m = train_run(a.features, a.out / f"tagging-{model}", ["--model", model, *extra])
        tagging[model] = {"roc_auc": m["test_roc_auc"], "pr_auc": m["test_pr_auc"], "epochs": m["epochs_run"],
                          "minutes": m["seconds"] / 60}

    ff = FeatureFile(a.features, ("mfcc",))
    tr, te = ff.indices("train"), ff.indices("test")
    scaler = StandardScaler().fit(mfcc_stats(ff, tr))
    x_tr, x_te = scaler.transform(mfcc_stats(ff, tr)), scaler.transform(mfcc_stats(ff, te))
    # Tags without a positive training clip get a constant score (their test AUC is then 0.5).
    keep = ff.labels[tr].sum(axis=0) > 0
    clf = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=1.0)).fit(x_tr, ff.labels[tr][:, keep])
    scores = np.full((len(te), ff.labels.shape[1]), 0.5)
    scores[:, keep] = clf.predict_proba(x_te)
    auc = tag_auc(scores, ff.labels[te])
    tagging["logistic regression on MFCC mean+std"] = {"roc_auc": auc["roc_auc_macro"], "pr_auc": auc["pr_auc_macro"]}

    metric = {}
    for name, folder, argv_m in (
            ("shortres started from the tagging run (--init)", "metric-shortres-init",
             ["--task", "metric", "--init", str(a.out / "tagging-shortres")]),
            ("shortres from scratch (default --task metric)", "metric-shortres", ["--task", "metric"]),
            # (its folder of before, "metric-shortres-triplets", holds a contrastive run)
            ("shortres from scratch, triplets alone", "metric-shortres-triplet-loss",
             ["--task", "metric", "--tag-weight", "0", "--negatives", "disjoint"]),
            ("linear projection, tag triplets (course)", "metric-linear", [
                "--task", "metric", "--model", "linear", "--mining", "none", "--sampler", "tag", "--tag-weight", "0"])):
        folder = a.out / folder
        m = train_run(a.features, folder, [*argv_m, *extra])
        metric[name] = {f"recall@{k}": m[f"test_recall@{k}"] for k in KS}
    labels_te = ff.labels[te]
    rng = np.random.default_rng(a.seed)
    peers = {"random embeddings": rng.standard_normal((len(te), 128)),
             "untrained shortres backbone": untrained_embeddings(a.features, "shortres", a.seed),
             "cosine NN on MFCC mean+std": x_te}
    for name, emb in peers.items():
        rec = recall_at_k(emb, labels_te, ks=KS, metric="cosine")
        metric[name] = {f"recall@{k}": rec["recall"][k] for k in KS}

    result = {"features": str(a.features), "test_clips": len(te), "tagging": tagging, "metric": metric,
              "minutes": (time.time() - t0) / 60}
    (a.out / "quality.json").write_text(json.dumps(result, indent=2))
    print(f"test split: {len(te)} clips\n\n| tagging model | ROC-AUC | PR-AUC |\n|---|---|---|")
    for k, v in tagging.items():
        print(f"| {k} | {v['roc_auc']:.4f} | {v['pr_auc']:.4f} |")
    print("\n| embedding | " + " | ".join(f"R@{k}" for k in KS) + " |\n|---|" + "---|" * len(KS))
    for k, v in metric.items():
        print(f"| {k} | " + " | ".join(f"{v[f'recall@{q}']:.4f}" for q in KS) + " |")
    print(f"\n{result['minutes']:.1f} min; details in {a.out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
