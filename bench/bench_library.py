"""Your own music library (train/library.py): index rate, query latency, memory of a long track.

    python bench/bench_library.py [--clips 300] [--run RUN ...] [--work cache/bench-library]
                                  [--sizes 25000,1000000] [--dim 200] [--tag-files 8] [--minutes 10]

1. Index rate on the demo corpus (``data/demo.py --clips N``, 10-s MP3s), in tracks/s, against
   ``pipeline/extract.py`` on the same files (features only, no network) and against calling
   ``train/tag.py`` once per file (what a user does without the library; timed on ``--tag-files``
   files, tagging runs only). Each ``--run`` is one row; the default is musicnn's MTT network
   (``train/pretrained.py MTT_musicnn``, made under WORK).
2. Query latency of the exact search over N synthetic embeddings (clustered, ``--dim``
   dimensions): building the search (once per process), one query (median of 20 warm ones), and
   the whole ``similar`` command from a cold start (Python, imports, reading the index, search).
3. Peak memory (max RSS of the process and of its decoding worker) of indexing one ``--minutes``
   long 44.1-kHz stereo MP3, against ``train/tag.py`` on the same file (all crops in one pass).

Prints markdown tables; ``--json`` also writes the figures to WORK/bench_library.json.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.library_store import Library, Searcher, load_library, write_index

# Run in a child: the peak RSS of one command (VmHWM, its own high-water mark: ru_maxrss would
# include the parent's RSS at fork) and of its worker processes (VmHWM polled while they live).
PEAK = """import glob, os, runpy, sys, threading, time
def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0
workers = [0]
def poll():
    while True:
        for f in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
            for pid in open(f).read().split():
                workers[0] = max(workers[0], hwm(pid))
        time.sleep(0.05)
threading.Thread(target=poll, daemon=True).start()
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("PEAK", hwm(os.getpid()), workers[0], file=sys.stderr)
"""


def py(*args, check=True) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, args))}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t, done


def make_corpus(work: Path, clips: int) -> Path:
    root = work / f"demo-{clips}"
    if not (root / "demo.json").is_file():
        print(f"making the demo corpus ({clips} clips) in {root} ...", file=sys.stderr)
        py("data/demo.py", "--out", root, "--clips", clips, "--quiet")
    return root


def bench_index(run: Path, root: Path, work: Path) -> dict:
    out = work / f"library-{run.name}.h5"
    out.unlink(missing_ok=True)
    wall, done = py("train/library.py", "index", root / "mp3", "--run", run, "--out", out, "--json")
    s = json.loads(done.stdout)
    return {"tracks": s["indexed"], "wall_s": wall, "rate": s["tracks_per_s"], "rate_wall": s["indexed"] / wall,
            "startup_s": s["startup"], "workers": s["workers"], "device": s["device"], "index": out}


def bench_extract(root: Path, work: Path, inputs: list[str]) -> dict:
    import h5py

    out = work / "features.h5"
    out.unlink(missing_ok=True)
    # The standard split keeps every clip with a tag (the demo drops about one in eight without).
    wall, done = py("pipeline/extract.py", "--data", root, "--out", out, "--features", ",".join(inputs),
                    "--split", "standard", "--quiet")
    with h5py.File(out, "r") as f:
        clips = int((f["status"][()] == 1).sum())
    inner = re.search(r"= ([\d.]+) clips/s", done.stdout)
    return {"tracks": clips, "wall_s": wall, "rate": float(inner.group(1)) if inner else clips / wall,
            "rate_wall": clips / wall}


def bench_tag_py(run: Path, files: list[Path]) -> dict:
    t = time.perf_counter()
    for f in files:
        py("train/tag.py", f, "--run", run, "--top-k", "3")
    wall = time.perf_counter() - t
    return {"tracks": len(files), "wall_s": wall, "rate": len(files) / wall, "rate_wall": len(files) / wall}


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered embeddings (1,000 clusters), float32, made in blocks to keep memory to the result."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x[s:s + m] = centres[rng.integers(0, 1000, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
    return x


def bench_query(n: int, dim: int, work: Path, queries: int = 20) -> dict:
    x = synthetic(n, dim)
    t = time.perf_counter()
    s = Searcher(x)
    build = time.perf_counter() - t
    s.nearest(x[0], 10, exclude=0)  # numba's cached kernels load on the first call
    rows = np.random.default_rng(1).integers(0, n, queries)
    times = []
    for r in rows:
        t = time.perf_counter()
        s.nearest(x[r], 10, exclude=int(r))
        times.append(time.perf_counter() - t)
    # Exactness spot check against a float64 brute force.
    q = int(rows[0])
    unit = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ unit[q]
    cos[q] = -np.inf
    got, _ = s.nearest(x[q], 10, exclude=q)
    exact = set(got.tolist()) == set(np.argsort(-cos)[:10].tolist())
    del unit, cos, s
    # The whole command, cold: an index file of n tracks (50 tag scores each).
    index = work / f"synthetic-{n}.h5"
    if not index.is_file():
        lib = Library(np.array([f"/music/artist_{i // 12:06d}/track_{i:07d}.mp3" for i in range(n)], dtype=object),
                      np.full(n, 5_000_000, np.int64), np.zeros(n, np.int64), np.full(n, 240.0, np.float32),
                      np.full(n, 80, np.int32), np.zeros((n, 50), np.float32), x, {},
                      {"run": "synthetic", "run_sha256": "0", "task": "metric", "tags": [f"tag{i}" for i in range(50)]})
        write_index(index, lib)
        del lib
    del x
    t = time.perf_counter()
    load_library(index)
    load = time.perf_counter() - t
    cli, done = py("train/library.py", "similar", f"track_{n // 2:07d}", "--index", index, "--json")
    assert json.loads(done.stdout)["neighbours"], done.stderr
    return {"n": n, "dim": dim, "build_s": build, "query_ms": 1e3 * float(np.median(times)),
            "query_p95_ms": 1e3 * float(np.percentile(times, 95)), "load_s": load, "cli_s": cli, "exact": exact,
            "index_mib": index.stat().st_size / 2 ** 20}


def long_file(work: Path, minutes: float) -> Path:
    import soundfile as sf

    path = work / f"long-{minutes:g}min" / "long.mp3"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        sr, n = 44100, int(44100 * 60 * minutes)
        rng = np.random.default_rng(0)
        t = np.arange(n) / sr
        y = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1)
        y += 0.05 * rng.standard_normal(y.shape)
        sf.write(path, y.astype(np.float32), sr, format="MP3")
    return path


def peak(*args) -> tuple[float, float, float]:
    """Wall seconds and max RSS (GiB) of a command and of its largest worker process."""
    wall, done = py("-c", PEAK, *args)
    m = re.search(r"PEAK (\d+) (\d+)", done.stderr)
    return wall, int(m.group(1)) / 2 ** 20, int(m.group(2)) / 2 ** 20


def bench_long(run: Path, work: Path, minutes: float, with_tag_py: bool) -> dict:
    path = long_file(work, minutes)
    out = work / "long.h5"
    out.unlink(missing_ok=True)
    res = {"minutes": minutes}
    res["index_s"], res["index_gib"], res["worker_gib"] = peak("train/library.py", "index", path.parent, "--run", run,
                                                              "--out", out, "--quiet", "--workers", "1")
    assert len(load_library(out)) == 1
    if with_tag_py:
        res["tag_s"], res["tag_gib"], _ = peak("train/tag.py", path, "--run", run)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_library.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=300, help="demo clips to index")
    p.add_argument("--run", type=Path, action="append", default=None,
                   help="run folder(s) to index with; default musicnn's MTT network, made under WORK")
    p.add_argument("--work", type=Path, default=REPO / "cache" / "bench-library", help="scratch folder")
    p.add_argument("--sizes", default="25000,1000000", help="library sizes of the query benchmark")
    p.add_argument("--dim", type=int, default=200, help="embedding size of the query benchmark (musicnn's: 200)")
    p.add_argument("--tag-files", type=int, default=8, help="files tagged with one train/tag.py call each")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long file")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: index, query, long")
    p.add_argument("--json", action="store_true", help="also write WORK/bench_library.json")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    runs = a.run
    if not runs:
        from train import pretrained

        runs = [a.work / "MTT_musicnn"]
        if not (runs[0] / "best.pt").is_file():
            pretrained.convert("MTT_musicnn", runs[0])
    import os

    res = {"cpus": os.cpu_count(), "index": [], "query": [], "long": []}
    if "index" not in skip:
        root = make_corpus(a.work, a.clips)
        files = sorted((root / "mp3").rglob("*.mp3"))
        for run in runs:
            cfg = json.loads((run / "config.json").read_text())
            print(f"indexing {len(files)} clips with {run} ...", file=sys.stderr)
            row = {"run": str(run), "model": cfg["model"], "library": bench_index(run, root, a.work),
                   "extract": bench_extract(root, a.work, cfg["inputs"])}
            if cfg.get("task", "tagging") == "tagging" and a.tag_files:
                row["tag_py"] = bench_tag_py(run, files[: a.tag_files])
            res["index"].append(row)
    if "query" not in skip:
        for n in (int(s) for s in a.sizes.split(",")):
            print(f"query latency, {n} tracks ...", file=sys.stderr)
            res["query"].append(bench_query(n, a.dim, a.work))
    if "long" not in skip:
        for run in runs:
            print(f"a {a.minutes:g}-minute file with {run} ...", file=sys.stderr)
            tagging = json.loads((run / "config.json").read_text()).get("task", "tagging") == "tagging"
            res["long"].append({"run": str(run), **bench_long(run, a.work, a.minutes, tagging)})
    report(res)
    if a.json:
        (a.work / "bench_library.json").write_text(json.dumps(res, indent=1, default=str))
    return 0


def report(res: dict) -> None:
    print(f"\n### Indexing ({res['cpus']} CPU cores)\n")
    print("| run | what | files | tracks/s (work) | tracks/s (wall, start-up included) | wall s |")
    print("|---|---|---|---|---|---|")
    for row in res["index"]:
        lib = row["library"]
        name = Path(row["run"]).name
        print(f"| {name} | `library.py index` ({lib['device']}, {lib['workers']} decoding worker(s)) | "
              f"{lib['tracks']} | {lib['rate']:.2f} | {lib['rate_wall']:.2f} | {lib['wall_s']:.1f} |")
        ex = row["extract"]
        print(f"| {name} | `pipeline/extract.py` (features only, no network) | {ex['tracks']} | {ex['rate']:.2f} | "
              f"{ex['rate_wall']:.2f} | {ex['wall_s']:.1f} |")
        if "tag_py" in row:
            tp = row["tag_py"]
            print(f"| {name} | `train/tag.py`, one call per file | {tp['tracks']} | - | {tp['rate']:.2f} | "
                  f"{tp['wall_s']:.1f} |")
    if res["query"]:
        print("\n### Exact search (cosine, k=10)\n")
        print("| tracks | dim | one query (median / p95) | build search | read index | `similar` cold, end to end "
              "| index file | exact |")
        print("|---|---|---|---|---|---|---|---|")
        for q in res["query"]:
            print(f"| {q['n']:,} | {q['dim']} | {q['query_ms']:.1f} / {q['query_p95_ms']:.1f} ms | "
                  f"{q['build_s']:.2f} s | {q['load_s']:.2f} s | {q['cli_s']:.1f} s | {q['index_mib']:.0f} MiB | "
                  f"{q['exact']} |")
    if res["long"]:
        print("\n### One long file (44.1 kHz stereo MP3)\n")
        print("| run | minutes | `library.py index`: peak RSS (worker) | time | `train/tag.py`: peak RSS | time |")
        print("|---|---|---|---|---|---|")
        for r in res["long"]:
            tag = f"{r['tag_gib']:.2f} GiB | {r['tag_s']:.1f} s" if "tag_gib" in r else "- | -"
            worker = f"{r['worker_gib']:.2f} GiB" if r["worker_gib"] else "none: one file is decoded in-process"
            print(f"| {Path(r['run']).name} | {r['minutes']:g} | {r['index_gib']:.2f} GiB ({worker}) | "
                  f"{r['index_s']:.1f} s | {tag} |")


if __name__ == "__main__":
    sys.exit(main())
