"""End-to-end extraction throughput against the naive librosa loop, on the same clips, in one run.

    python bench/bench_extract.py [--data cache/demo] [--clips 1000] [--features mel,mfcc,chroma] [--json]

Measured, in this order, each on the same first ``--clips`` clips of the standard split:

* naive: one process, per clip ``librosa.load(sr=16000)`` then ``librosa.feature.melspectrogram`` (+ dB),
  ``mfcc`` and ``chroma_stft`` on the waveform, each result written with ``np.save``: the notebook way;
* decode only: our decoder alone, in one process and in the pipeline's worker pool with 1 and with
  all workers (the floor: the pipeline cannot beat decoding);
* the parts, each alone in this process, as CPU seconds per clip: decode, front-end (each STFT
  back-end) and the HDF5 write. ``ideal = cores / (decode + front-end + write)`` is the rate of a
  pipeline in which no part ever waits on another;
* pipeline: ``pipeline/extract.py`` with each back-end as users run it, a new process: its wall time
  (start-up, imports and all: the whole process) and the seconds its summary gives the clips (after
  start-up: the in-process rate). Each timed method starts with nothing left to write back.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np

from data.audio import load_audio
from data.mtat import ANNOTATIONS, find_audio, read_annotations
from pipeline import store

REPO = Path(__file__).resolve().parents[1]


def naive(paths, features, out_dir: Path) -> None:
    kw = dict(sr=16000, n_fft=512, hop_length=256)
    for k, path in enumerate(paths):
        y, sr = librosa.load(path, sr=16000)
        if "mel" in features:
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, n_mels=96, fmax=8000, **kw))
            np.save(out_dir / f"{k}_mel.npy", mel)
        if "mfcc" in features:
            np.save(out_dir / f"{k}_mfcc.npy", librosa.feature.mfcc(y=y, n_mfcc=20, n_mels=96, fmax=8000, **kw))
        if "chroma" in features:
            np.save(out_dir / f"{k}_chroma.npy", librosa.feature.chroma_stft(y=y, **kw))


NAIVE_SCRIPT = """
import sys
from pathlib import Path
import librosa
import numpy as np
{source}
paths = Path(sys.argv[1]).read_text().splitlines()
naive(paths, sys.argv[2].split(","), Path(sys.argv[3]))
"""


def naive_process(paths, features: str, tmp: Path) -> float:
    """The naive loop as its own process (a notebook's imports and all), like the whole-process pipeline."""
    import inspect
    (tmp / "paths.txt").write_text("\n".join(map(str, paths)))
    (tmp / "naive").mkdir(exist_ok=True)
    script = NAIVE_SCRIPT.format(source=inspect.getsource(naive))
    return timed(lambda: subprocess.run([sys.executable, "-c", script, str(tmp / "paths.txt"), features,
                                         str(tmp / "naive")], check=True))


def _decode(path):
    return len(load_audio(path))


def run_pipeline(argv: list[str]) -> tuple[float, float]:
    """``pipeline/extract.py argv`` as a new process: its wall seconds, and the seconds its summary gives
    the clips (``N clips in X s``, after start-up)."""
    os.sync()
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "pipeline/extract.py", *argv], cwd=REPO, check=True, capture_output=True,
                         text=True)
    wall = time.perf_counter() - t
    return wall, float(re.search(r"\d+ clips in ([\d.]+) s", res.stdout + res.stderr)[1])


def timed(fn, *args) -> float:
    """Seconds of ``fn(*args)``, started with nothing left to write back: each method pays for its own
    writes only (the pipeline's final fsync would otherwise also wait for the files the steps before
    it left in the page cache, several GB in all)."""
    os.sync()
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def part_costs(paths, clips, features, tmp: Path, batch: int = 32) -> dict:
    """CPU seconds per clip of decoding, of the front-end (each back-end) and of the HDF5 write, each
    done as the pipeline's workers do it: one torch thread, the front-end one clip at a time."""
    import torch

    from features.frontend import FeatureParams, FrontEnd
    from pipeline.engine import featurize_clips

    cpu = time.process_time
    t = cpu()
    waves = [load_audio(p) for p in paths]
    costs = {"decode": (cpu() - t) / len(paths)}
    batches = [waves[b:b + batch] for b in range(0, len(waves), batch)]
    feats, threads = None, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stft in ("fft", "nnaudio"):
            fe = FrontEnd(features, FeatureParams(stft=stft))
            featurize_clips(fe, batches[0][:2])  # warm-up
            t = cpu()
            outs = [featurize_clips(fe, part) for part in batches]
            costs[f"frontend_{stft}"] = (cpu() - t) / len(paths)
            feats = feats or outs
    finally:
        torch.set_num_threads(threads)
    params = FeatureParams()
    rooms = [params.n_frames(len(y)) for y in waves]
    store.create(tmp / "w.h5", clips, store.Header(tuple(features), params), rooms)
    writer = store.Writer(tmp / "w.h5")
    t = cpu()
    for k, out in enumerate(feats):
        out = dict(out)
        n = out.pop("n_frames").numpy()
        rows = list(range(k * batch, k * batch + len(n)))
        writer.write(rows, {f: v.numpy() for f, v in out.items()}, n, [])
    costs["write"] = (cpu() - t) / len(paths)
    writer.close()
    return costs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "cache/demo", help="dataset root (default: the demo corpus)")
    p.add_argument("--clips", type=int, default=1000, help="first clips of the standard split (the demo has 1,372)")
    p.add_argument("--features", default="mel,mfcc,chroma")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not (a.data / ANNOTATIONS).is_file():
        from data.demo import ensure_demo
        ensure_demo(a.data)
    clips = read_annotations(a.data / ANNOTATIONS, "standard").head(a.clips)
    layout = find_audio(a.data)
    paths = [layout.path(m) for m in clips["mp3_path"]]
    n, cores = len(paths), os.cpu_count() or 1
    features = a.features.split(",")
    audio_s = sum(len(load_audio(q)) for q in paths[:20]) / 16000 / min(n, 20)  # also warms the page cache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_naive = timed(naive, paths, features, tmp)
        t_naive_proc = naive_process(paths, a.features, tmp)
        t_dec1 = timed(lambda: [_decode(q) for q in paths])
        floors = {}
        for w in sorted({1, cores}):
            with mp.Pool(w) as pool:
                floors[w] = timed(lambda: pool.map(_decode, paths, chunksize=4))
        costs = part_costs(paths, clips, features, tmp)
        # The pipeline as users run it, on a root holding only these clips.
        root = tmp / "subset"
        root.mkdir()
        lines = (a.data / ANNOTATIONS).read_bytes().split(b"\r\n")
        keep = {m.encode() for m in clips["mp3_path"]}
        (root / ANNOTATIONS).write_bytes(b"\r\n".join(
            [lines[0]] + [ln for ln in lines[1:] if ln.rsplit(b"\t", 1)[-1].strip(b'"') in keep] + [b""]))
        os.symlink(layout.base.resolve(), root / ("waveform" if layout.kind == "npy" else "mp3"))
        pipe, whole = {}, {}
        for stft in ("fft", "nnaudio"):
            whole[stft], pipe[stft] = run_pipeline(["--data", str(root), "--split", "standard", "--features",
                                                    a.features, "--stft", stft, "--quiet", "--device", "cpu",
                                                    "--out", str(tmp / f"{stft}.h5")])

    workers = cores
    rows = {"naive librosa loop (1 process)": t_naive, "naive librosa loop, whole process": t_naive_proc,
            "decode only, 1 process": t_dec1,
            **{f"decode only, {w} worker(s)": v for w, v in floors.items()},
            **{f"pipeline, {s} STFT, after start-up ({workers} worker(s))": v for s, v in pipe.items()},
            **{f"pipeline, {s} STFT, whole process": v for s, v in whole.items()}}
    ideal = {s: cores / (costs["decode"] + costs[f"frontend_{s}"] + costs["write"]) for s in ("fft", "nnaudio")}
    result = {"clips": n, "clip_seconds": round(audio_s, 2), "features": a.features, "cpus": cores,
              "machine": platform.processor() or platform.machine(),
              "clips_per_s": {k: n / v for k, v in rows.items()},
              "cpu_ms_per_clip": {k: 1e3 * v for k, v in costs.items()},
              "ideal_clips_per_s": ideal,
              "speedup_vs_naive": {**{f"{s} in-process": t_naive / pipe[s] for s in pipe},
                                   **{f"{s} whole process vs naive whole process": t_naive_proc / whole[s]
                                      for s in whole}},
              "ideal_over_pipeline": {s: ideal[s] / (n / pipe[s]) for s in pipe}}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n} clips of {audio_s:.1f} s, features {a.features}, {cores} CPUs\n")
    print("| method | clips/s | x naive |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {n / v:.1f} | {t_naive / v:.2f} |")
    print("\n| part | CPU ms per clip |\n|---|---|")
    for k, v in costs.items():
        print(f"| {k} | {1e3 * v:.2f} |")
    for s in whole:
        print(f"\n{s}: whole process {t_naive_proc / whole[s]:.2f}x the naive loop's whole process")
    for s in pipe:
        print(f"\n{s}: ideal {ideal[s]:.1f} clips/s = {cores} cores / (decode + front-end + write); "
              f"in-process pipeline {n / pipe[s]:.1f} clips/s, ideal / pipeline = {ideal[s] / (n / pipe[s]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
