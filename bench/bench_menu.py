"""The course's menu on the demo corpus: every backbone for tagging, every sampler for metric learning.

    python bench/bench_menu.py [--features cache/features.h5] [--augmented cache/features-aug2.h5]
                               [--out cache/quality] [--epochs 6] [--metric-epochs 3] [--runs all|report]
                               [--against OTHER_OUT]

Trains (unless a finished run folder is already there) and then reports, on the test split:

- tagging ROC-AUC / PR-AUC of baseline, cnn2d, fcn, crnn, musicnn and shortres, and of shortres on the
  file with augmented versions (``pipeline/extract.py --augment 2``);
- Recall@1/2/4/8 of a metric network (shortres backbone started from the shortres tagging run, the
  default recipe) for each sampler, next to the tagging network's own embedding.

Differences are judged against a paired bootstrap over the test clips (1,000 resamples of the clips,
the same resample for both runs): a difference is called within noise when its 95 % interval
contains 0. Every run uses the seed 0 of ``train/run.py``; no setting is tuned to the demo corpus.
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

from eval.auc import tag_auc  # noqa: E402
from eval.recall import DEFAULT_KS, recall_at_k  # noqa: E402

BACKBONES = ("baseline", "cnn2d", "fcn", "crnn", "musicnn", "shortres")
SAMPLERS = ("overlap", "tag", "instance", "latent", "timbre", "beat")


def train(out: Path, features: Path, args: list[str]) -> Path:
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "train/run.py", "--features", str(features), "--out", str(out), "--quiet", *args]
        print("$", " ".join(cmd[1:]), flush=True)
        resume = ["--resume"] if (out / "last.pt").exists() else []
        subprocess.run(cmd + resume, cwd=REPO, check=True)
    return out


def hits(emb, labels, ks=DEFAULT_KS) -> dict[int, np.ndarray]:
    """Per query: the share of its tags found among its K nearest clips (the mean is Recall@K)."""
    r = recall_at_k(emb, labels, ks=ks)
    y = labels.astype(bool)
    yq = y[r["rows"]]
    found = np.logical_or.accumulate(y[r["neighbours"]], axis=1) & yq[:, None, :]  # (queries, max K, tags)
    out = {k: found[:, k - 1].sum(axis=1) / yq.sum(axis=1) for k in ks}
    for k in ks:  # the bootstrap resamples exactly what eval/recall.py averages
        assert abs(out[k].mean() - r["recall"][k]) < 1e-9, (k, out[k].mean(), r["recall"][k])
    return out


def boot_auc_diff(a, b, labels, n=1000, seed=0):
    """95 % interval of macro ROC-AUC(a) - ROC-AUC(b) over paired resamples of the test clips."""
    rng = np.random.default_rng(seed)
    d = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            i = rng.integers(0, len(labels), len(labels))
            d.append(tag_auc(a[i], labels[i])["roc_auc_macro"] - tag_auc(b[i], labels[i])["roc_auc_macro"])
    return np.nanpercentile(d, [2.5, 97.5])


def boot_mean_diff(x, y, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), (n, len(x)))
    return np.percentile((x[i] - y[i]).mean(axis=1), [2.5, 97.5])


def load(run: Path):
    m = json.loads((run / "metrics.json").read_text())
    pred = np.load(run / "predictions.npy") if (run / "predictions.npy").exists() else None
    return m, pred, np.load(run / "embeddings.npy"), np.load(run / "labels.npy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=Path("cache/features.h5"))
    p.add_argument("--augmented", type=Path, default=Path("cache/features-aug2.h5"))
    p.add_argument("--out", type=Path, default=Path("cache/quality"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--metric-epochs", type=int, default=3)
    p.add_argument("--runs", choices=("all", "report"), default="all", help="report: only read finished runs")
    p.add_argument("--against", type=Path, default=None,
                   help="also compare each tagging run with the run of the same name in this folder (an earlier trainer)")
    a = p.parse_args()
    q = a.out
    plan = [(f"tagging-{m}", a.features, ["--model", m, "--epochs", str(a.epochs)]) for m in BACKBONES]
    plan.append(("tagging-shortres-aug", a.augmented, ["--model", "shortres", "--epochs", str(a.epochs)]))
    # the course's tag rule is that of its sampled triplets (in mined batches it is the overlap sampler's;
    # the folder "metric-tag" of before holds that)
    plan += [(f"metric-{s}" + ("-sampled" if s == "tag" else ""), a.features,
              ["--task", "metric", "--init", str(q / "tagging-shortres"), "--sampler", s,
               *(["--mining", "none"] if s == "tag" else []), "--epochs", str(a.metric_epochs)]) for s in SAMPLERS]
    if a.runs == "all":
        for name, feats, args in plan:
            train(q / name, feats, args)
    done = {name: load(q / name) for name, *_ in plan if (q / name / "metrics.json").exists()}
    res = {"tagging": {}, "metric": {}}
    ref = done.get("tagging-shortres")
    print(f"{'tagging run':24s} ROC-AUC  PR-AUC   best/epochs  d ROC-AUC vs shortres (95% CI)")
    for name, (m, pred, emb, lab) in done.items():
        if not name.startswith("tagging"):
            continue
        ci = boot_auc_diff(pred, ref[1], lab) if ref is not None and name != "tagging-shortres" else None
        res["tagging"][name] = {"roc_auc": m["test_roc_auc"], "pr_auc": m["test_pr_auc"], "best_epoch": m["best_epoch"],
                                "epochs_run": m["epochs_run"], "diff_ci": None if ci is None else ci.tolist()}
        print(f"{name:24s} {m['test_roc_auc']:.4f}   {m['test_pr_auc']:.4f}   {m['best_epoch']}/{m['epochs_run']}"
              + ("" if ci is None else f"          [{ci[0]:+.4f}, {ci[1]:+.4f}]"
                 + ("  within noise" if ci[0] <= 0 <= ci[1] else "")))
    if ref is not None:
        base = hits(ref[2], ref[3])
        rows = [("tagging-shortres (its own embedding)", ref)] + [(n, v) for n, v in done.items() if n.startswith("metric")]
        print(f"\n{'embedding':38s} " + "  ".join(f"R@{k}   " for k in DEFAULT_KS) + "  (vs the tagging embedding, 95% CI)")
        for name, (m, _, emb, lab) in rows:
            h = hits(emb, lab)
            cis = {k: boot_mean_diff(h[k], base[k]) for k in DEFAULT_KS}
            res["metric"][name] = {f"recall@{k}": float(h[k].mean()) for k in DEFAULT_KS} | \
                {f"diff_ci@{k}": cis[k].tolist() for k in DEFAULT_KS}
            print(f"{name:38s} " + "  ".join(f"{h[k].mean():.4f}" for k in DEFAULT_KS)
                  + ("" if name.startswith("tagging") else "   " + " ".join(
                      f"[{cis[k][0]:+.3f},{cis[k][1]:+.3f}]" for k in DEFAULT_KS)))
    if a.against is not None:
        res["against"] = {"folder": str(a.against)}
        print(f"\n{'tagging run':24s} ROC-AUC here  in {a.against}  difference (95% CI)")
        for name, (m, pred, _, lab) in done.items():
            if not name.startswith("tagging") or not (a.against / name / "metrics.json").exists():
                continue
            old_m, old_pred, _, old_lab = load(a.against / name)
            assert np.array_equal(lab, old_lab), f"{name}: other test clips in {a.against}"
            ci = boot_auc_diff(pred, old_pred, lab)
            res["against"][name] = {"roc_auc": m["test_roc_auc"], "before": old_m["test_roc_auc"], "diff_ci": ci.tolist()}
            print(f"{name:24s} {m['test_roc_auc']:.4f}        {old_m['test_roc_auc']:.4f}   [{ci[0]:+.4f}, {ci[1]:+.4f}]"
                  + ("  within noise" if ci[0] <= 0 <= ci[1] else ""))
    (q / "menu.json").write_text(json.dumps(res, indent=1))
    print(f"-> {q / 'menu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
