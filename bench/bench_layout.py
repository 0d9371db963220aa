"""Disk cost of the features file's layout for a collection of songs of very different lengths.

    python bench/bench_layout.py [--songs 1000] [--min-seconds 30] [--max-seconds 600] [--seed 0]

Song lengths are drawn log-uniformly between ``--min-seconds`` and ``--max-seconds`` (a user's own
library: 30-s previews to 10-min tracks). Compared, for mel + MFCC + chroma in float32:

* fixed slots (features file v1): every clip a slot of the longest clip's frames, the longest
  capped by ``--max-seconds`` of extraction (60 s by default then, which cut longer songs);
* own rooms (v2, now): every clip stores its own frames, back to back, in chunks of 1,024 frames.

Arithmetic on the layouts (``pipeline.store.nbytes``), not a timing.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from features.frontend import FeatureParams
from pipeline import store


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_layout.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--songs", type=int, default=1000)
    p.add_argument("--min-seconds", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    params, feats = FeatureParams(), ("mel", "mfcc", "chroma")
    rng = np.random.default_rng(a.seed)
    seconds = np.exp(rng.uniform(np.log(a.min_seconds), np.log(a.max_seconds), a.songs))
    frames = np.array([params.n_frames(int(s * params.sr)) for s in seconds])
    per_frame = sum(params.bins(f) for f in feats) * 4
    audio = frames.sum() * per_frame
    print(f"{a.songs} songs of {a.min_seconds:.0f}-{a.max_seconds:.0f} s (log-uniform, median "
          f"{np.median(seconds):.0f} s), mel+mfcc+chroma float32: {audio / 2**30:.2f} GiB of features\n")
    print("| layout | cap | GiB on disk | x the features | frames cut |\n|---|---|---|---|---|")
    for cap_s in (60.0, a.max_seconds):
        cap = params.n_frames(int(cap_s * params.sr))
        kept = np.minimum(frames, cap)
        fixed = a.songs * kept.max() * per_frame
        own = store.nbytes(kept, store.Header(feats, params))
        cut = 1 - kept.sum() / frames.sum()
        print(f"| fixed slots (v1) | {cap_s:.0f} s | {fixed / 2**30:.2f} | {fixed / (kept.sum() * per_frame):.2f} | "
              f"{100 * cut:.0f}% |")
        print(f"| own rooms (v2) | {cap_s:.0f} s | {own / 2**30:.2f} | {own / (kept.sum() * per_frame):.2f} | "
              f"{100 * cut:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
