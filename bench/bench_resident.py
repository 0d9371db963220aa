"""The host's side of loading the features into a GPU's memory (``--feed resident``), against the old loader.

    python bench/bench_resident.py [--features cache/full16.h5] [--repeat 2]

A GPU run with the resident feed first reads every clip's features from the file into host blocks
and copies them to the device. This times the host's part, which is all a GPU waits for:

* new (``train.feed.read_rows``): each block of at most 256 MiB copied as the file stores it
  (frames x bins, no transposition) into a buffer that every block reuses, as ``Resident``'s two
  pinned buffers are reused in turn on a GPU;
* baseline (the loader until commit b252d92, re-run here as it was): per block of 512 clips, each
  clip's crop transposed to bins x frames (``FeatureFile.crop``) and the crops concatenated into a
  new array, which the GPU then copied from pageable memory.

Without a GPU the device copy itself is not timed. MTAT's full-size float16 file
(``python data/fullscale.py ../shared/mtat-real/annotations_final.csv --out cache/mtat-full``, then
``python pipeline/extract.py --data cache/mtat-full --split standard --features mel,mfcc,chroma
--dtype float16 --out cache/full16.h5``) is the case that matters: 9.2 GiB.
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
from train.feed import FeatureFile, Resident, read_rows  # noqa: E402

BLOCK_BYTES = 256 * 2**20


def new_loader(ff: FeatureFile, idx: np.ndarray) -> None:
    """``Resident``'s blocks of at most 256 MiB read into one reused buffer, as it stages them on a GPU."""
    lengths = ff.n_frames[idx]
    blocks = Resident.blocks(lengths, BLOCK_BYTES // (ff.bins * ff.dtype.itemsize))
    buf = np.empty((max(int(lengths[b].sum()) for b in blocks), ff.bins), ff.dtype)
    for b in blocks:
        read_rows(ff, idx[b], buf[:int(lengths[b].sum())])


def old_loader(ff: FeatureFile, idx: np.ndarray, block: int = 512) -> None:
    """The loader until b252d92: per block of 512 clips, transposed crops concatenated into a new array."""
    for at in range(0, len(idx), block):
        part = idx[at:at + block]
        np.concatenate([ff.crop(int(i), 0, int(ff.n_frames[i]), dtype=ff.dtype) for i in part], axis=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_resident.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--features", type=Path, default=REPO / "cache/full16.h5", help="features file")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each loader, interleaved; the best counts")
    a = p.parse_args(argv)
    if not a.features.is_file():
        p.error(f"--features {a.features}: not found (see --help for how to make MTAT's full-size file)")
    ff = FeatureFile(a.features, ("mel", "mfcc", "chroma"))
    idx = np.arange(len(ff))
    gib = int(ff.n_frames.sum()) * ff.bins * ff.dtype.itemsize / 2**30
    best = {"new": np.inf, "baseline": np.inf}
    for _ in range(a.repeat):
        for name, fn in (("new", new_loader), ("baseline", old_loader)):
            t = time.perf_counter()
            fn(ff, idx)
            best[name] = min(best[name], time.perf_counter() - t)
    print(f"{a.features}: {len(ff)} clips, {ff.bins} bins, {ff.dtype}, {gib:.2f} GiB; "
          f"{platform.machine()}, best of {a.repeat}")
    for name, s in best.items():
        print(f"  {name:9s} {s:6.2f} s  {gib / s:5.2f} GiB/s")
    print(f"  baseline / new: {best['baseline'] / best['new']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
