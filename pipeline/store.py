"""The features file: chunked HDF5, one uncompressed chunk per clip and feature.

Layout (``N`` clips, ``T`` = ``max_frames``)::

    /tags          (50,)         str     tag names, label order
    /clip_id       (N,)          int64
    /mp3_path      (N,)          str
    /split         (N,)          str     'train' | 'valid' | 'test'
    /labels        (N, 50)       uint8
    /n_frames      (N,)          int32   valid frames of each clip (the rest is zero padding)
    /status        (N,)          int8    1 extracted, 0 not yet, -1 skipped (bad clip)
    /<feature>     (N, T, bins)  float32 chunks (1, T, bins): 'mel', 'mfcc', 'chroma'

Root attributes: ``format``, ``version``, ``features``, every ``FeatureParams`` field, ``max_frames``,
``split_scheme``, ``source`` and ``audio_kind``.

All chunks are allocated when the file is created and nothing but raw data is written after that,
so a run killed at any moment leaves the HDF5 structure intact: resuming only needs ``status``.
Time-major chunks make a crop of consecutive frames one contiguous byte range, which the trainer
reads through ``numpy.memmap`` at the offsets given by :func:`chunk_offsets`.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data.mtat import TAGS
from features.frontend import FeatureParams, parse_features

FORMAT = "mtat-toolkit/features"
VERSION = 1
_STR = h5py.string_dtype("utf-8")


class StoreError(ValueError):
    """A features file that cannot be used as asked; the message names it and says what to do."""


def create(path, clips: pd.DataFrame, features, params: FeatureParams, max_frames: int, **attrs) -> None:
    """Create an empty features file for ``clips`` with every chunk allocated.

    Parameters
    ----------
    path : path
        File to create (overwritten).
    clips : pandas.DataFrame
        ``clip_id``, ``mp3_path``, ``split`` and the 50 tag columns, as ``data.mtat.read_annotations``.
    features : sequence of str
    params : FeatureParams
    max_frames : int
        Frames per clip slot; longer clips are truncated by the writer.
    **attrs
        Extra root attributes describing the source (``split_scheme``, ``source``, ``audio_kind``).
    """
    features = parse_features(features)
    n = len(clips)
    with h5py.File(path, "w") as f:
        f.attrs.update(format=FORMAT, version=VERSION, features=",".join(features), max_frames=max_frames,
                       **params.as_dict(), **attrs)
        f["tags"] = np.array(TAGS, dtype=object).astype(_STR)
        f["clip_id"] = clips["clip_id"].to_numpy(np.int64)
        f.create_dataset("mp3_path", data=clips["mp3_path"].to_numpy(object), dtype=_STR)
        f.create_dataset("split", data=clips["split"].to_numpy(object), dtype=_STR)
        f["labels"] = clips[list(TAGS)].to_numpy(np.uint8)
        f["n_frames"] = np.zeros(n, np.int32)
        f["status"] = np.zeros(n, np.int8)
        for name in features:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every chunk is written whole, padding included
            f.create_dataset(name, shape=(n, max_frames, params.bins(name)), dtype=np.float32,
                             chunks=(1, max_frames, params.bins(name)), dcpl=dcpl)


def header(path) -> dict:
    """Root attributes of a features file, with ``features`` as a tuple.

    Raises
    ------
    StoreError
        When the file is missing, not HDF5, or not a features file of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: features file not found; run `python pipeline/extract.py` first")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not a features file written by pipeline/extract.py (no format={FORMAT!r})")
    if attrs.get("version") != VERSION:
        raise StoreError(f"{path}: features file version {attrs.get('version')}, this code reads {VERSION}; "
                         "re-run extraction")
    attrs["features"] = tuple(attrs["features"].split(","))
    return attrs


def read_table(path) -> pd.DataFrame:
    """Per-clip table of a features file: clip_id, mp3_path, split, n_frames, status and labels.

    Returns
    -------
    pandas.DataFrame
        One row per clip slot, in file order; ``labels`` is an (N, 50) uint8 array in ``df.attrs``.
    """
    with h5py.File(path, "r") as f:
        df = pd.DataFrame({
            "clip_id": f["clip_id"][:],
            "mp3_path": f["mp3_path"].asstr()[:],
            "split": f["split"].asstr()[:],
            "n_frames": f["n_frames"][:],
            "status": f["status"][:],
        })
        df.attrs["labels"] = f["labels"][:]
        df.attrs["tags"] = tuple(f["tags"].asstr()[:])
    return df


def chunk_offsets(path, feature: str) -> np.ndarray:
    """Byte offset in the file of each clip's chunk of ``feature``.

    A clip's chunk holds ``max_frames x bins`` float32 values, C order, uncompressed, so frame ``t``
    of clip ``i`` starts at ``offsets[i] + t * bins * 4``.
    """
    with h5py.File(path, "r") as f:
        if feature not in f:
            raise StoreError(f"{path}: holds no {feature!r} features (it has {f.attrs['features']})")
        ds = f[feature]
        if ds.compression is not None or ds.chunks != (1, *ds.shape[1:]):
            raise StoreError(f"{path}: {feature!r} is not stored as one uncompressed chunk per clip")
        return np.array([ds.id.get_chunk_info_by_coord((i, 0, 0)).byte_offset for i in range(ds.shape[0])],
                        dtype=np.int64)


class Writer:
    """Writes whole clips into a file made by :func:`create`; raw data only, then ``status``."""

    def __init__(self, path):
        self.file = h5py.File(path, "r+")
        self.features = tuple(self.file.attrs["features"].split(","))
        self.max_frames = int(self.file.attrs["max_frames"])
        self.status = self.file["status"][:]
        self.n_frames = self.file["n_frames"][:]

    def write(self, rows: list[int], feats: dict[str, np.ndarray], n_frames: np.ndarray, bad: list[int]) -> None:
        """Store a batch: ``feats[name][j]`` (frames, bins) for clip ``rows[j]``; mark ``bad`` as skipped.

        Features are flushed before ``status`` so a clip is never marked done without its data.
        """
        for name in self.features:
            ds = self.file[name]
            for j, i in enumerate(rows):
                block = np.zeros((self.max_frames, ds.shape[2]), np.float32)
                t = min(int(n_frames[j]), self.max_frames)
                block[:t] = feats[name][j, :t]
                ds.id.write_direct_chunk((i, 0, 0), block.tobytes())
        self.n_frames[rows] = np.minimum(n_frames, self.max_frames)
        self.file["n_frames"][:] = self.n_frames
        self.file.flush()
        self.status[rows] = 1
        self.status[bad] = -1
        self.file["status"][:] = self.status
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def replace_atomically(src, dst) -> None:
    """Move ``src`` onto ``dst`` in one step after syncing it, so ``dst`` is never half-written."""
    with open(src, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dst)
