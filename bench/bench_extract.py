"""End-to-end extraction throughput against the naive librosa loop, on the same clips, in one run.

    python bench/bench_extract.py [--data cache/demo] [--clips 200] [--features mel,mfcc,chroma] [--json]

Measured, in this order, each on the same first ``--clips`` clips of the gct634 split:

* naive: one process, per clip ``librosa.load(sr=16000)`` then ``librosa.feature.melspectrogram`` (+ dB),
  ``mfcc`` and ``chroma_stft`` on the waveform, each result written with ``np.save``: the notebook way;
* decode only: our decoder alone, in one process and in the pipeline's worker pool (the floor: the
  pipeline cannot beat decoding);
* pipeline: ``pipeline/extract.py``'s ``main()`` with the arguments users give (worker decoding,
  batched nnAudio, HDF5), in this process so that, like the others, it pays no interpreter start-up.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np

from data.audio import load_audio
from data.mtat import ANNOTATIONS, find_audio, read_annotations
from pipeline import extract

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


def _decode(path):
    return len(load_audio(path))


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "cache/demo", help="dataset root (default: the demo corpus)")
    p.add_argument("--clips", type=int, default=600, help="clips of the gct634 split (the demo has 600)")
    p.add_argument("--features", default="mel,mfcc,chroma")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not (a.data / ANNOTATIONS).is_file():
        from data.demo import ensure_demo
        ensure_demo(a.data)
    clips = read_annotations(a.data / ANNOTATIONS, "gct634").head(a.clips)
    layout = find_audio(a.data)
    paths = [layout.path(m) for m in clips["mp3_path"]]
    n = len(paths)
    features = a.features.split(",")
    audio_s = sum(len(load_audio(q)) for q in paths[:20]) / 16000 / min(n, 20)  # also warms the page cache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_naive = timed(naive, paths, features, tmp)
        t_dec1 = timed(lambda: [_decode(q) for q in paths])
        with mp.Pool(a.workers) as pool:
            t_decw = timed(lambda: pool.map(_decode, paths, chunksize=2))
        # The pipeline as users run it, on a root holding only these clips.
        root = tmp / "subset"
        root.mkdir()
        (root / ANNOTATIONS).write_text("\n".join(
            [(a.data / ANNOTATIONS).read_text().splitlines()[0]]
            + [line for line in (a.data / ANNOTATIONS).read_text().splitlines()[1:]
               if line.split("\t")[-1].strip('"') in set(clips["mp3_path"])]) + "\n")
        os.symlink(layout.base.resolve(), root / ("waveform" if layout.kind == "npy" else "mp3"))
        argv = ["--data", str(root), "--features", a.features, "--out", str(tmp / "f.h5"),
                "--workers", str(a.workers), "--quiet", "--device", "cpu"]
        t_pipe = timed(extract.main, argv)  # in-process like the others: interpreter start-up excluded

    rows = {"naive librosa loop (1 process)": t_naive, "decode only, 1 process": t_dec1,
            f"decode only, {a.workers} worker(s) (floor)": t_decw,
            f"pipeline/extract.py main() ({a.workers} worker(s))": t_pipe}
    result = {"clips": n, "clip_seconds": round(audio_s, 2), "features": a.features, "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(),
              "clips_per_s": {k: n / v for k, v in rows.items()}, "speedup_vs_naive": t_naive / t_pipe}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n} clips of {audio_s:.1f} s, features {a.features}, {os.cpu_count()} CPUs\n")
    print("| method | clips/s | x naive |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {n / v:.1f} | {t_naive / v:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
