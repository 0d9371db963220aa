"""Sharded extraction and the merged file's feed against one unsharded run, on the same clips.

    python bench/bench_shard.py [--data cache/demo] [--clips 600] [--shards 2] [--launcher processes|torchrun]
                                [--crops 20000] [--repeats 2] [--json]

Measured, each as users run it (new processes, start-up and all), on the first ``--clips`` clips of
the standard split:

* unsharded: one ``pipeline/extract.py`` with its default workers (the cores);
* sharded: ``--shards`` extraction processes at once (``--shard k/N``, or one torchrun rank each),
  the cores shared among them (``--workers cores // N``, what torchrun's ranks take by default),
  then ``pipeline/merge.py``; its wall time over the unsharded one is the ratio reported;
* the feed: random crops of 3 s (mel+MFCC+chroma) through ``train.feed.FeatureFile`` from the
  merged file and from the unsharded one, interleaved, best of 3 each; crops/s and their ratio.

Unsharded and sharded runs alternate ``--repeats`` times and the best of each is kept, so that other
load on the machine weighs on both alike. The merged file is checked to equal the unsharded one
(tables and every feature value).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data.mtat import ANNOTATIONS, find_audio, read_annotations

REPO = Path(__file__).resolve().parents[1]
FEATURES = "mel,mfcc,chroma"


def subset_root(data: Path, clips: int, into: Path) -> Path:
    """A dataset root holding only the first ``clips`` clips of the standard split (audio linked)."""
    keep = set(read_annotations(data / ANNOTATIONS, "standard").head(clips)["mp3_path"])
    rows = pd.read_csv(data / ANNOTATIONS, sep="\t", dtype=str, keep_default_na=False)
    into.mkdir(parents=True)
    rows[rows["mp3_path"].isin(keep)].to_csv(into / ANNOTATIONS, sep="\t", index=False, quoting=csv.QUOTE_ALL)
    layout = find_audio(data)
    os.symlink(layout.base.resolve(), into / ("waveform" if layout.kind == "npy" else "mp3"))
    return into


def extract_cmd(root: Path, *extra) -> list[str]:
    return [sys.executable, "pipeline/extract.py", "--data", str(root), "--split", "standard", "--features",
            FEATURES, "--device", "cpu", "--quiet", *extra]


def wall(cmds: list[list[str]], env=None) -> float:
    """Seconds until every one of ``cmds``, started at once, has finished (each must succeed)."""
    t = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    for c, p in zip(cmds, procs):
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(c)} failed ({p.returncode}):\n{err.decode()[-2000:]}")
    return time.perf_counter() - t


def same_file(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb), (sorted(fa), sorted(fb))
        for k in fa:
            if not np.array_equal(fa[k][:], fb[k][:]):
                raise SystemExit(f"{b}: {k} differs from the unsharded {a}")


def crops_per_s(path: Path, n: int, seed: int = 0) -> float:
    """Random 3-s crops of every feature read through the memory-mapped feed, per second."""
    from train.feed import FeatureFile

    ff = FeatureFile(path, tuple(FEATURES.split(",")))
    length = ff.params.frames(3.0)
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, len(ff), n)
    starts = (rng.random(n) * (ff.n_frames[clips] - length + 1)).astype(np.int64)
    t = time.perf_counter()
    for i, s in zip(clips, starts):
        ff.crop(int(i), int(s), length)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "cache/demo", help="dataset root (default: the demo corpus)")
    p.add_argument("--clips", type=int, default=600, help="first clips of the standard split (the demo has 1,372)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--launcher", choices=("processes", "torchrun"), default="processes",
                   help="processes: one `--shard k/N` process each; torchrun: `torchrun --nproc-per-node N`")
    p.add_argument("--crops", type=int, default=20000, help="crops per feed measurement")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is kept")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not (a.data / ANNOTATIONS).is_file():
        from data.demo import ensure_demo
        ensure_demo(a.data)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=REPO / "cache") as tmp:
        tmp = Path(tmp)
        root = subset_root(a.data, a.clips, tmp / "subset")
        n = len(read_annotations(root / ANNOTATIONS, "standard"))
        wall([extract_cmd(root, "--out", str(tmp / "warm.h5"))])  # page cache and imports warm for both
        out = str(tmp / "shards" / "part-{index}-of-{count}.h5")
        workers = str(max(1, cores // a.shards))
        if a.launcher == "torchrun":
            torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
            rank = extract_cmd(root, "--out", out)[1:]  # every rank the same arguments
            sharded = [[torchrun, "--standalone", f"--nproc-per-node={a.shards}", *rank]]
        else:
            sharded = [extract_cmd(root, "--out", out, "--shard", f"{k}/{a.shards}", "--workers", workers)
                       for k in range(a.shards)]
        parts = [str(tmp / "shards" / f"part-{k}-of-{a.shards}.h5") for k in range(a.shards)]
        merged = tmp / "shards" / "merged.h5"
        times = {"unsharded": [], "shards": [], "merge": []}
        for _ in range(a.repeats):
            for q in [tmp / "full.h5", merged, *map(Path, parts)]:
                q.unlink(missing_ok=True)
            times["unsharded"].append(wall([extract_cmd(root, "--out", str(tmp / "full.h5"))]))
            times["shards"].append(wall(sharded))
            times["merge"].append(wall([[sys.executable, "pipeline/merge.py", str(merged), *parts]]))
        same_file(tmp / "full.h5", merged)
        t_full, t_shards, t_merge = (min(v) for v in times.values())
        feed = {"unsharded": [], "merged": []}
        for _ in range(5):  # interleaved, so a neighbour's load hits both alike
            feed["unsharded"].append(crops_per_s(tmp / "full.h5", a.crops))
            feed["merged"].append(crops_per_s(merged, a.crops))
        merged_bytes = merged.stat().st_size
        shard_bytes = sum(Path(q).stat().st_size for q in parts)
    best = {k: max(v) for k, v in feed.items()}
    res = {"clips": n, "shards": a.shards, "launcher": a.launcher, "cpus": cores,
           "machine": platform.processor() or platform.machine(),
           "all_seconds": times, "seconds": {"unsharded": t_full, "shards": t_shards, "merge": t_merge, "sharded": t_shards + t_merge},
           "sharded_over_unsharded": (t_shards + t_merge) / t_full,
           "merged_file_bytes": merged_bytes, "shard_bytes": shard_bytes,
           "feed_crops_per_s": best, "feed_merged_over_unsharded": best["merged"] / best["unsharded"]}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{n} clips, features {FEATURES}, {cores} CPUs, {a.shards} shards ({a.launcher}, {workers} worker(s) each)\n")
    print("| step | s | clips/s |\n|---|---|---|")
    for k, v in res["seconds"].items():
        print(f"| {k} | {v:.1f} | {n / v:.1f} |")
    print(f"\nsharded (shards at once + merge) / unsharded wall time: {res['sharded_over_unsharded']:.2f}")
    print(f"merged file {merged_bytes / 2**20:.2f} MiB beside {shard_bytes / 2**20:.1f} MiB of shards")
    print(f"feed, 3-s crops of {FEATURES}: unsharded {best['unsharded']:.0f}/s, merged {best['merged']:.0f}/s, "
          f"merged / unsharded {res['feed_merged_over_unsharded']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
