"""One epoch of the course's sampled triplets (``--mining none``) on MTAT's real labels, against the old draw.

    python bench/bench_sampler.py [--csv ../shared/mtat-real/annotations_final.csv] [--crops-per-clip 9]
                                  [--repeat 2]

``train.tag_samplers.TagTripletSampler`` with ``overlap=True`` (the default ``overlap`` sampler)
draws, for each triplet, a negative sharing no tag with the anchor. The trainer draws a whole
epoch's triplets before the epoch: MTAT's standard training split (15,247 clips) at 9 crops per
clip is 137,223 triplets, and the host does this while a GPU waits.

* baseline (the draw until this commit, re-run here as it was): per chunk of 256 anchors, the
  ``(256, N)`` matrix 'shares no tag' from a float32 product, and a draw from its running sum;
* now: a compiled draw (``_draw_disjoint``) that counts the disjoint clips by whole blocks of clips
  per distinct tag set, then clip by clip in one block.

Both draw the same triplets from the same seed (checked here, and in tests/test_metric.py).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from data.mtat import TAGS, read_annotations  # noqa: E402
from train.tag_samplers import TagTripletSampler, _sample_rows  # noqa: E402


class Baseline(TagTripletSampler):
    """The negatives drawn from the ``(chunk, N)`` weight matrix, as before."""

    def _sample_tag(self, t, m, rng, chunk=256):
        pos, anchors = self._pos[t], self._anchors[t]
        a = anchors[rng.integers(len(anchors), size=m)]
        p, n = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
        lf, sizes = self._labels_f, self._sizes
        for s in range(0, m, chunk):
            aa = a[s:s + chunk]
            inter = lf[aa] @ lf[pos].T
            jac = inter / (sizes[aa][:, None] + sizes[pos][None, :] - inter)
            jac[aa[:, None] == pos[None, :]] = 0.0
            p[s:s + chunk] = pos[_sample_rows(jac**self.jaccard_power, rng)]
            disjoint = (lf[aa] @ lf.T) == 0
            disjoint[np.arange(len(aa)), aa] = False
            n[s:s + chunk] = _sample_rows(disjoint.astype(np.float32), rng)
        return np.stack([a, p, n], axis=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_sampler.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--csv", type=Path, default=REPO.parent / "shared/mtat-real/annotations_final.csv",
                   help="the real annotation file")
    p.add_argument("--crops-per-clip", type=int, default=9, help="triplets per training clip in an epoch")
    p.add_argument("--repeat", type=int, default=2, help="timed epochs of each, interleaved; the best counts")
    a = p.parse_args(argv)
    if not a.csv.is_file():
        p.error(f"--csv {a.csv}: not found")
    df = read_annotations(a.csv, "standard")
    y = df.loc[df["split"] == "train", list(TAGS)].to_numpy()
    n = len(y) * a.crops_per_clip
    t = time.perf_counter()
    samplers = {"now": TagTripletSampler(y, n, seed=0, overlap=True)}
    print(f"set-up {time.perf_counter() - t:.2f} s (the same for both: the baseline differs in its draw only)")
    samplers["baseline"] = Baseline(y, n, seed=0, overlap=True)
    best, epochs = {k: np.inf for k in samplers}, {}
    for r in range(a.repeat):
        for name, s in samplers.items():
            t = time.perf_counter()
            epochs[name] = s.epoch(np.random.default_rng(r))
            best[name] = min(best[name], time.perf_counter() - t)
    assert np.array_equal(epochs["now"], epochs["baseline"]), "the two draws differ"
    print(f"{len(y)} training clips ({len(np.unique(y, axis=0))} distinct tag sets), {n} triplets per epoch; "
          f"{platform.machine()}, best of {a.repeat}; the same triplets")
    for name, s in best.items():
        print(f"  {name:9s} {s:6.2f} s per epoch")
    print(f"  baseline / now: {best['baseline'] / best['now']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
