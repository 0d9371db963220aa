"""Rhythm statistics: the numpy implementation (``features.rhythm``) against the librosa one it replaced.

    python bench/bench_rhythm.py [--clips 200] [--batch 32] [--seconds 29] [--repeats 5] [--json PATH]

Measured, in one run, on the same synthetic log-mels (dB noise plus a click pattern at a tempo of
its own per clip, 96 bands, in the front-end's memory layout, at the default ``FeatureParams``):

* steady state: ``rhythm_batch`` over every clip in batches of ``--batch``, as extraction calls it,
  after one warm-up batch; milliseconds per clip of wall time and of this process's CPU time (the
  best of ``--repeats`` runs, and the median); plus the new ``rhythm_statistics`` clip by clip (the
  trainer's path when a features file has no ``/rhythm``);
* start-up: a fresh Python process per implementation (numpy already imported there, untimed):
  seconds to import the module and compute a first batch of one clip, then a second one. The old
  module imported librosa at its first call, whose lazy submodules, scipy.signal and numba
  kernels (compiled, or loaded from numba's on-disk cache when it has one) load then;
* the two implementations' outputs on every clip, compared bit for bit.

The reference is ``tests/test_rhythm.py``'s copy of the old module.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.params import FeatureParams
from features.rhythm import RHYTHM_FIELDS, rhythm_batch, rhythm_statistics


def synthetic_mels(clips: int, seconds: float, params: FeatureParams, seed: int = 0) -> np.ndarray:
    """``(clips, frames, n_mels)`` float32 dB log-mels, band-major in memory like the front-end's output."""
    rng = np.random.default_rng(seed)
    frames = params.n_frames(int(seconds * params.sr))
    mel = rng.standard_normal((clips, params.n_mels, frames), dtype=np.float32) * 6.0 - 50.0
    fps = params.sr / params.hop_length
    decay = np.float32(25.0) * np.exp(-np.arange(4, dtype=np.float32))  # a click: +25 dB, fading in 4 frames
    for i in range(clips):
        bpm = rng.uniform(70, 170)
        for beat in np.arange(rng.uniform(0, 0.5), seconds, 60.0 / bpm):
            at = int(beat * fps)
            piece = decay[:frames - at]
            mel[i, :, at:at + len(piece)] += piece * rng.uniform(0.5, 1.0)
    np.clip(mel, -80.0, 0.0, out=mel)
    return mel.transpose(0, 2, 1)


def steady(fn, mel: np.ndarray, n_frames: np.ndarray, batch: int, repeats: int) -> dict:
    """ms per clip (wall, CPU) of ``fn(mel_batch, n_frames_batch)`` over every clip, after a warm-up batch."""
    fn(mel[:batch], n_frames[:batch])
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        rows = []
        w, c = time.perf_counter(), time.process_time()
        for at in range(0, len(mel), batch):
            rows.append(fn(mel[at:at + batch], n_frames[at:at + batch]))
        walls.append((time.perf_counter() - w) / len(mel) * 1e3)
        cpus.append((time.process_time() - c) / len(mel) * 1e3)
        out = np.concatenate(rows)
    return {"wall_ms_best": min(walls), "wall_ms_median": statistics.median(walls),
            "cpu_ms_best": min(cpus), "cpu_ms_median": statistics.median(cpus), "out": out}


STARTUP = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
{pre}
mel = np.load({path!r})
n = np.array([mel.shape[1]])
t0 = time.perf_counter()
{imp}
t1 = time.perf_counter()
fn(mel, n)
t2 = time.perf_counter()
fn(mel, n)
t3 = time.perf_counter()
mods = sorted(k for k in ("librosa", "scipy.signal", "numba", "torch") if k in sys.modules)
print({{"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2, "modules": mods}})
"""

IMPLEMENTATIONS = {
    # The old module's own import was numpy only (librosa came at the first call): the test
    # module's imports (pytest, the fixtures' helpers) are left out of the timing.
    "old (librosa)": ("import tests.test_rhythm", "from tests.test_rhythm import reference_rhythm_batch as fn"),
    "new (numpy)": ("", "from features.rhythm import rhythm_batch as fn"),
}


def startup(mel_one: np.ndarray, tmp: Path) -> dict:
    path = tmp / "one_clip.npy"
    np.save(path, mel_one)
    got = {}
    for name, (pre, imp) in IMPLEMENTATIONS.items():
        code = STARTUP.format(repo=str(REPO), pre=pre, imp=imp, path=str(path))
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        got[name] = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    return got


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32, help="clips per rhythm_batch call (extraction's batch)")
    ap.add_argument("--seconds", type=float, default=29.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes of the new implementation")
    ap.add_argument("--old-repeats", type=int, default=2, help="timed passes of the old one (slow)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from tests.test_rhythm import reference_rhythm_batch

    p = FeatureParams()
    mel = synthetic_mels(args.clips, args.seconds, p)
    n_frames = np.full(len(mel), mel.shape[1])
    print(f"{args.clips} synthetic log-mels of {args.seconds:g} s ({mel.shape[1]} frames x {p.n_mels} bands), "
          f"batches of {args.batch}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")

    old = steady(lambda m, n: reference_rhythm_batch(m, n, p), mel, n_frames, args.batch, args.old_repeats)
    new = steady(lambda m, n: rhythm_batch(m, n, p), mel, n_frames, args.batch, args.repeats)
    single = steady(lambda m, n: np.stack([rhythm_statistics(x[:k], p) for x, k in zip(m, n)]),
                    mel, n_frames, args.batch, args.repeats)
    same = np.array_equal(old["out"], new["out"]) and np.array_equal(old["out"], single["out"])
    differing = [f for k, f in enumerate(RHYTHM_FIELDS) if not np.array_equal(old["out"][:, k], new["out"][:, k])]

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        start = startup(np.ascontiguousarray(mel[:1]), Path(tmp))

    print("\nsteady state, ms per clip (best of runs / median)")
    print(f"  {'':34s} {'wall':>15s} {'CPU':>15s}")
    for name, r in (("old: librosa, reference_rhythm_batch", old), ("new: numpy, rhythm_batch", new),
                    ("new: rhythm_statistics clip by clip", single)):
        print(f"  {name:34s} {r['wall_ms_best']:7.3f} / {r['wall_ms_median']:6.3f} "
              f"{r['cpu_ms_best']:7.3f} / {r['cpu_ms_median']:6.3f}")
    print(f"  speed-up (CPU, best): {old['cpu_ms_best'] / new['cpu_ms_best']:.1f}x batched, "
          f"{old['cpu_ms_best'] / single['cpu_ms_best']:.1f}x clip by clip")
    print("\nfresh process, seconds (numpy imported beforehand)")
    for name, r in start.items():
        print(f"  {name:14s} import {r['import_s']:.3f}  first call {r['first_call_s']:.3f}  "
              f"second call {r['second_call_s']:.4f}  loaded: {', '.join(r['modules']) or 'none of librosa/scipy.signal/numba/torch'}")
    o, n = start["old (librosa)"], start["new (numpy)"]
    print(f"  start-up (import + first call): {o['import_s'] + o['first_call_s']:.3f} s -> "
          f"{n['import_s'] + n['first_call_s']:.3f} s, {(o['import_s'] + o['first_call_s']) / (n['import_s'] + n['first_call_s']):.0f}x")
    print(f"\noutputs identical to the bit on all {args.clips} clips: {same}"
          + (f" (differing fields: {', '.join(differing)})" if differing else ""))

    figures = {"clips": args.clips, "seconds": args.seconds, "batch": args.batch,
               "load_average": os.getloadavg()[0], "identical": bool(same),
               "old": {k: v for k, v in old.items() if k != "out"}, "new": {k: v for k, v in new.items() if k != "out"},
               "new_clip_by_clip": {k: v for k, v in single.items() if k != "out"}, "startup": start}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
