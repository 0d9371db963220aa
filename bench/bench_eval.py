"""Speed and memory of the evaluators against the usual way, ratios in one run.

    python bench/bench_eval.py [--n 20000] [--scale 200000] [--json]

Measured, in this order:

* AUC: ``eval.auc.tag_auc`` against ``sklearn.metrics.roc_auc_score`` plus
  ``average_precision_score`` (``average=None``) on N clips x 50 tags, same process, best of
  several runs each, and the largest difference between the two;
* Recall@K (K = 1, 2, 4, 8, cosine; ours also Euclidean) on N x 128 float32 embeddings, each method in a fresh
  process so its peak resident memory (``ru_maxrss``) is its own:
  naive (the full N x N similarity matrix, ``np.argsort`` of each row), the floor (the bare
  product ``X @ X.T`` of the unit rows, nothing else), the same products in blocks of 1,024
  queries into one reused buffer (arithmetic only) and ``eval.recall.recall_at_k``; peak
  memory is the process's ``VmHWM``, reset after the data are made, and "extra" is that peak
  minus the resident size before the method ran (interpreter, libraries and data);
* scale: ``recall_at_k`` on ``--scale`` x 128 embeddings in a fresh process (0 skips it);
* start-up: ``python eval/recall.py`` and ``python eval/auc.py`` on a small run folder with an
  empty numba cache (first call: compilation) and again with the cache filled.

Data are synthetic and seeded: 50 tags with MTAT-like frequencies (1 % to 20 %), embeddings
clustered by tag, predictions correlated with the labels and rounded to float32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KS = (1, 2, 4, 8)  # eval.recall.DEFAULT_KS, not imported: this script times the imports


def make_labels(n: int, rng) -> np.ndarray:
    freq = np.geomspace(0.2, 0.01, 50)
    return (rng.random((n, 50)) < freq).astype(np.uint8)


def make_embeddings(n: int, d: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = make_labels(n, rng)
    centres = rng.standard_normal((50, d)).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32) * np.float32(2.0)
    for t in range(50):  # each tag pulls its clips towards its centre
        x[y[:, t] == 1] += centres[t]
    return x, y


def make_predictions(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = make_labels(n, rng)
    logits = 1.5 * y + rng.standard_normal((n, 50)) - 1.0
    return (1 / (1 + np.exp(-logits))).astype(np.float32), y


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_auc(n: int) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from eval.auc import tag_auc

    s, y = make_predictions(n)
    t_first = time.perf_counter()
    ours = tag_auc(s, y)  # first call loads (or compiles) the kernel
    t_first = time.perf_counter() - t_first
    t_ours, ours = best_of(lambda: tag_auc(s, y), 7)
    t_sk, (roc, ap) = best_of(lambda: (roc_auc_score(y, s, average=None),
                                       average_precision_score(y, s, average=None)), 3)
    diff = max(np.abs(roc - ours["roc_auc"]).max(), np.abs(ap - ours["pr_auc"]).max())
    return {"n": n, "tags": 50, "ours_s": t_ours, "sklearn_s": t_sk, "speedup": t_sk / t_ours,
            "max_abs_diff": float(diff), "first_call_s": t_first,
            "distinct_scores_per_tag": float(np.mean([len(np.unique(s[:, j])) for j in range(50)]))}


# ---- Recall@K, one method per fresh process --------------------------------------------------

def _naive_recall(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1)[:, :max(KS)]
    del s
    has = y.any(axis=1)
    pos = y.sum(axis=1)
    out = {}
    for k in KS:
        found = y[idx[:, :k]].any(axis=1)
        out[k] = float(((y & found).sum(axis=1)[has] / pos[has]).mean())
    return out


def _floor(x):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return xn @ xn.T


def _floor_blocked(x, rows=1024):
    # The same products in blocks of queries into one reused buffer: the arithmetic alone,
    # without writing an N x N matrix (not the floor, shown for the overhead).
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    buf = np.empty((rows, len(x)), np.float32)
    for b0 in range(0, len(x), rows):
        q = xn[b0:b0 + rows]
        np.matmul(q, xn.T, out=buf[:len(q)])


def _status_mib(field: str) -> float:
    # VmHWM (peak) and VmRSS of this process. Unlike ru_maxrss, which Linux carries over
    # exec from the parent, VmHWM belongs to this program alone.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(method: str, n: int, repeat: int) -> dict:
    x, y = make_embeddings(n)
    metric = "euclidean" if method == "ours_euclidean" else "cosine"
    if method.startswith("ours"):
        from eval.recall import recall_at_k
        recall_at_k(x[:500], y[:500], metric=metric)  # numba cache load, outside the timing
    try:  # reset the peak to the current size, so the peak is the method's (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = _status_mib("VmRSS")
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        if method == "naive":
            result = _naive_recall(x, y)
        elif method == "floor":
            s = _floor(x)
            del s
        elif method == "floor_blocked":
            _floor_blocked(x)
        else:
            result = recall_at_k(x, y, ks=KS, metric=metric)["recall"]
        times.append(time.perf_counter() - t)
    peak = _status_mib("VmHWM")
    return {"method": method, "n": n, "times_s": times, "best_s": min(times),
            "base_rss_mib": base, "peak_rss_mib": peak, "extra_rss_mib": peak - base,
            "recall": None if result is None else {str(k): v for k, v in result.items()}}


def run_child(method: str, n: int, repeat: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--n", str(n),
                           "--repeat", str(repeat)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- start-up time of the commands -----------------------------------------------------------

def bench_startup() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        x, y = make_embeddings(2000)
        s, _ = make_predictions(2000)
        np.save(run / "embeddings.npy", x)
        np.save(run / "predictions.npy", s)
        np.save(run / "labels.npy", y)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "numba"))
        out = {}
        for name, args in [("recall_cosine", ["eval/recall.py", str(run / "embeddings.npy")]),
                           ("recall_euclidean", ["eval/recall.py", str(run / "embeddings.npy"),
                                                 "--metric", "euclidean"]),
                           ("auc", ["eval/auc.py", str(run / "predictions.npy")])]:
            for phase in ("cold", "cached"):
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr)
                out[f"{name}_{phase}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, numba"], check=True)
        out["python_numpy_numba_import_s"] = time.perf_counter() - t
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="clips for AUC and Recall@K")
    parser.add_argument("--scale", type=int, default=200000,
                        help="clips for the scale run (0: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.repeat)))
        return 0

    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "loadavg_start": os.getloadavg()}}
    import numba
    report["machine"]["numba"] = numba.__version__
    t0 = time.perf_counter()
    report["auc"] = auc = bench_auc(args.n)
    print(f"AUC {args.n} x 50: ours {auc['ours_s'] * 1e3:.1f} ms, scikit-learn "
          f"{auc['sklearn_s'] * 1e3:.1f} ms, {auc['speedup']:.1f}x; max |diff| "
          f"{auc['max_abs_diff']:.1e}", flush=True)

    rec = {m: run_child(m, args.n, r)
           for m, r in [("naive", 1), ("floor", 3), ("floor_blocked", 3), ("ours", 3),
                        ("ours_euclidean", 3)]}
    report["recall"] = rec
    naive, floor, ours = rec["naive"], rec["floor"], rec["ours"]
    report["recall_ratios"] = ratios = {
        "speedup_vs_naive": naive["best_s"] / ours["best_s"],
        "memory_naive_over_ours_peak": naive["peak_rss_mib"] / ours["peak_rss_mib"],
        "memory_naive_over_ours_extra": naive["extra_rss_mib"] / max(ours["extra_rss_mib"], 1e-9),
        "time_over_floor": ours["best_s"] / floor["best_s"],
        "time_over_floor_blocked": ours["best_s"] / rec["floor_blocked"]["best_s"],
        "max_recall_diff_vs_naive": max(abs(naive["recall"][k] - ours["recall"][k])
                                        for k in ours["recall"]),
        "euclidean_over_floor": rec["ours_euclidean"]["best_s"] / floor["best_s"],
    }
    for m in rec:
        r = rec[m]
        print(f"Recall@K {args.n} x 128 {m:>13}: best {r['best_s']:.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in r['times_s'])}), peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB (+{r['extra_rss_mib']:.0f} over the data)", flush=True)
    print(f"  ours: {ratios['speedup_vs_naive']:.1f}x faster than naive, "
          f"{ratios['memory_naive_over_ours_peak']:.1f}x less peak memory "
          f"({ratios['memory_naive_over_ours_extra']:.0f}x less extra), "
          f"{ratios['time_over_floor']:.2f}x the floor (the full product), "
          f"{ratios['time_over_floor_blocked']:.2f}x the blocked products alone", flush=True)

    if args.scale:
        report["scale"] = sc = run_child("ours", args.scale, 1)
        print(f"Recall@K {args.scale} x 128 ours: {sc['best_s']:.1f} s, peak RSS "
              f"{sc['peak_rss_mib']:.0f} MiB", flush=True)

    report["startup"] = st = bench_startup()
    print("start-up (whole command, 2,000 clips): " + ", ".join(
        f"{k[:-2]} {v:.2f} s" for k, v in st.items()), flush=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
