"""The features file: chunked HDF5, every clip's frames back to back in one dataset per feature.

Layout (``N`` clips, ``F`` = the sum of the clips' rooms, in frames)::

    /tags          (50,)         str     tag names, label order
    /clip_id       (N,)          int64
    /mp3_path      (N,)          str
    /split         (N,)          str     'train' | 'valid' | 'test'
    /labels        (N, 50)       uint8
    /frame_start   (N,)          int64   first frame of each clip's room in the feature datasets
    /room          (N,)          int32   frames reserved for each clip (its length from the audio header,
                                         capped by ``--max-seconds``); ``frame_start`` is their running sum
    /n_frames      (N,)          int32   valid frames of each clip (the rest of its room is zero)
    /status        (N,)          int8    1 extracted, 0 not yet, -1 skipped (bad clip)
    /<feature>     (F, bins)     float32 or float16, time-major, chunks of ``CHUNK_FRAMES`` frames:
                                         'mel', 'mfcc', 'chroma'
    /rhythm        (N, 14)       float32 ``features.rhythm.rhythm_statistics`` of each clip's dB log-mel
                                         (only with 'mel'; NaN for a clip not done or skipped); its
                                         ``fields`` attribute names the columns (``RHYTHM_FIELDS``)

Augmented versions (``extract.py --augment V``, only when V > 0): V versions of every training clip
(split 'train'; never validation or test), each an effect chain of ``features/augment.py`` rendered
on the clip's audio and sent through the same front-end. ``M`` = V x the training clips, rows in
clip order, versions 1..V within a clip; ``Fa`` = the sum of their rooms::

    /augmented/row          (M,)        int64   the clip's row in the tables above
    /augmented/version      (M,)        int16   1..V (0 is the original, never stored here)
    /augmented/chain        (M,)        str     the effect chain, JSON (``augment.draw(default_rng(
                                                [augment_seed, clip_id, version]))``, ``augment.apply``)
    /augmented/frame_start  (M,)        int64   first frame of the version's room in its datasets
    /augmented/room         (M,)        int32   the clip's room grown by ``augment.max_length_factor()``
                                                (time stretch lengthens it)
    /augmented/n_frames     (M,)        int32
    /augmented/status       (M,)        int8    1 done, 0 not yet, -1 skipped (it failed to render, or
                                                its clip was skipped)
    /augmented/<feature>    (Fa, bins)  as the originals' datasets: same dtype, chunks and layout

so the feed maps a version exactly as it maps an original. A version is a pure function of the
clip's audio and its chain, so it is the same whatever the batching, workers or shards.

Root attributes: ``format``, ``version``, ``features``, ``dtype``, every ``FeatureParams`` field,
``split_scheme``, ``source``, ``audio_kind``, ``augment`` (V; 0, or absent in older files: none),
``augment_seed``, ``shard`` (``'I/N'`` for the I-th of N parts, counted from 0; empty for a
whole clip list) and ``min_seconds``, ``max_seconds`` (absent in older files); files made since
sharding also record where their clips come
from (:class:`Part`): ``annotations`` (the annotation file, absolute), ``annotations_sha256``,
``clips_total`` (clips in the split's whole list) and ``clips_start``, ``clips_stop`` (the block of that
list this file holds).

Sharded extraction gives each shard a complete file of this layout for its contiguous block of the
clip list. ``pipeline/merge.py`` joins them into a file of the same layout whose small tables
(``/rhythm`` and the ``/augmented`` ones included) are copied and whose feature datasets (the
augmented ones too) are HDF5 virtual datasets over the shards' (``shards`` attribute: the shard
files, relative to the merged file's folder where possible); readers see one file, the feed
memory-maps each shard (:func:`sources`).

Each clip gets the room its own length needs, so a collection of 30-s and 10-min songs stores no
padding up to the longest one. All chunks are allocated when the file is created, uncompressed, and
nothing but raw data is written after that, so a run killed at any moment leaves the HDF5 structure
intact: resuming only needs ``status`` (and ``/augmented/status``: a batch of clips is done again
until its clips and their versions are all recorded). Time-major storage makes a crop of
consecutive frames one contiguous byte range within a chunk (two where it crosses a chunk
boundary), which the trainer reads through ``numpy.memmap`` at the offsets given by
:func:`chunk_offsets`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from data.mtat import TAGS
from features.params import FeatureParams, parse_features

FORMAT = "mtat-toolkit/features"
VERSION = 2
#: Frames per chunk: 1024 frames of 96 float32 mel bins are 384 KiB, inside HDF5's advised range.
CHUNK_FRAMES = 1024
#: Storage types of the feature datasets (float16 halves the file; the feed always gives float32).
DTYPES = ("float32", "float16")
_STR = h5py.string_dtype("utf-8")


class StoreError(ValueError):
    """A features file that cannot be used as asked; the message names it and says what to do."""


@dataclass(frozen=True)
class Header:
    """What a features file was made with: the settings a resumed or reused run must share.

    Attributes
    ----------
    features : tuple of str
        Stored features, in ``features.frontend.FEATURES`` order.
    params : FeatureParams
        The front-end's parameters.
    dtype : {'float32', 'float16'}
        Storage type of the features.
    split_scheme, source, audio_kind : str
        The split scheme, the dataset root (absolute) and its audio layout (``'mp3'`` or ``'npy'``).
    shard : str
        ``'I/N'``: the file holds the I-th (from 0) of N blocks of the clip list; ``''``: all of it.
        A setting like the others, so a shard is never resumed as another one or as the whole list.
    augment, augment_seed : int
        Augmented versions per training clip (0: none) and the seed of their effect chains.
    min_seconds, max_seconds : float or None
        The clips kept and the length they are cut to; ``None`` where not known (a file made before
        they were recorded), and then not compared.
    """

    features: tuple[str, ...]
    params: FeatureParams = FeatureParams()
    dtype: str = "float32"
    split_scheme: str = ""
    source: str = ""
    audio_kind: str = ""
    shard: str = ""
    augment: int = 0
    augment_seed: int = 0
    min_seconds: float | None = None
    max_seconds: float | None = None

    def attrs(self) -> dict:
        """The root attributes that record it (``features`` comma-joined, the parameters flat)."""
        return dict(features=",".join(self.features), dtype=self.dtype, split_scheme=self.split_scheme,
                    source=self.source, audio_kind=self.audio_kind, shard=self.shard, augment=int(self.augment),
                    augment_seed=int(self.augment_seed), **self.params.as_dict(),
                    **{k: float(v) for k, v in (("min_seconds", self.min_seconds), ("max_seconds", self.max_seconds))
                       if v is not None})

    def changed(self, other: "Header") -> list[str]:
        """Names of the settings in which ``other`` differs from this header (of those both know)."""
        mine, theirs = self.attrs(), other.attrs()
        return [k for k, v in mine.items() if k in theirs
                and (not np.isclose(float(theirs[k]), v) if isinstance(v, float) else theirs[k] != v)]


def parse_shard(text: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)``, the I-th (counted from 0) of N parts.

    Raises
    ------
    ValueError
        Unless ``text`` is two integers ``0 <= I < N`` joined by ``/``.
    """
    index, sep, count = str(text).partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise ValueError(f"{text!r} is not I/N (the I-th of N parts, counted from 0, e.g. 0/4)") from None
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"{text!r}: need 0 <= I < N in I/N (parts are counted from 0, e.g. 0/4 ... 3/4)")
    return index, count


def shard_bounds(index: int, count: int, total: int) -> tuple[int, int]:
    """Clips ``[start, stop)`` of a list of ``total`` that shard ``index`` of ``count`` holds.

    Contiguous blocks, sizes differing by at most one: the shards in index order are the list in its
    order, so merging them gives the clip order of an unsharded run exactly.
    """
    return total * index // count, total * (index + 1) // count


@dataclass(frozen=True)
class Part:
    """Which clips of which annotation file a features file holds.

    Attributes
    ----------
    annotations : str
        The annotation file, absolute.
    sha256 : str
        Its content hash (hex): shards made on other machines name other paths for the same file.
    total : int
        Clips in the split's whole list (those with one of the 50 tags, in file order).
    start, stop : int
        The block ``[start, stop)`` of that list the file holds.
    """

    annotations: str
    sha256: str
    total: int
    start: int
    stop: int

    def attrs(self) -> dict:
        return dict(annotations=self.annotations, annotations_sha256=self.sha256, clips_total=self.total,
                    clips_start=self.start, clips_stop=self.stop)


def read_part(path) -> Part | None:
    """The :class:`Part` a features file records, or ``None`` for a file made before it was recorded."""
    with h5py.File(path, "r") as f:
        a = f.attrs
        if "annotations_sha256" not in a:
            return None
        return Part(str(a["annotations"]), str(a["annotations_sha256"]), int(a["clips_total"]),
                    int(a["clips_start"]), int(a["clips_stop"]))


def nbytes(rooms, head: Header, version_rooms=()) -> int:
    """Bytes the feature datasets of a file with these per-clip (and per-version) rooms take on disk."""
    frames = [int(np.sum(r, dtype=np.int64)) for r in (rooms, version_rooms)]
    chunked = sum(-(-n // CHUNK_FRAMES) * CHUNK_FRAMES for n in frames)  # whole chunks are allocated
    return chunked * sum(head.params.bins(f) for f in parse_features(head.features)) * np.dtype(head.dtype).itemsize


def check_space(path, need: int) -> None:
    """Raise :class:`StoreError` when the disk holding ``path`` has less than ``need`` bytes free.

    Chunks are allocated without being written, so a too-small disk would only fail later, mid-run.
    """
    folder = Path(path).resolve().parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise StoreError(f"{path}: the features need {need / 2**30:.2f} GiB but {folder} has "
                         f"{free / 2**30:.2f} GiB free; free some space, choose another --out, store "
                         "--dtype float16 or extract fewer --features")


#: The group holding the augmented versions, and its per-version tables.
AUGMENTED = "augmented"
VERSION_TABLES = ("row", "version", "chain", "frame_start", "room", "n_frames", "status")


@dataclass(frozen=True)
class Versions:
    """The augmented versions a new file reserves room for (:func:`create`).

    Attributes
    ----------
    row : np.ndarray [shape=(M,), dtype=int64]
        Each version's clip row, ascending.
    version : np.ndarray [shape=(M,), dtype=int16]
        1..V within a clip.
    room : np.ndarray [shape=(M,), dtype=int32]
        Frames reserved for each version.
    chain : list of str
        Each version's effect chain, JSON.
    """

    row: np.ndarray
    version: np.ndarray
    room: np.ndarray
    chain: list


def _feature_datasets(group, features, params, dtype, total: int) -> None:
    for name in features:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every room is written whole, padding included
        group.create_dataset(name, shape=(max(total, 1), params.bins(name)), dtype=dtype,
                             chunks=(min(CHUNK_FRAMES, max(total, 1)), params.bins(name)), dcpl=dcpl)


def _starts(rooms: np.ndarray) -> tuple[np.ndarray, int]:
    if not len(rooms):  # a shard without training clips has no versions
        return np.zeros(0, np.int64), 0
    starts = np.concatenate([[0], np.cumsum(rooms[:-1], dtype=np.int64)]).astype(np.int64)
    return starts, int(starts[-1] + rooms[-1])


def create(path, clips: pd.DataFrame, head: Header, rooms, part: Part | None = None,
           versions: Versions | None = None, rhythm_fields=None) -> None:
    """Create an empty features file for ``clips`` with every chunk allocated.

    Parameters
    ----------
    path : path
        File to create (overwritten).
    clips : pandas.DataFrame
        ``clip_id``, ``mp3_path``, ``split`` and the 50 tag columns, as ``data.mtat.read_annotations``.
    head : Header
        The features, their parameters and storage type, and the source they come from.
    rooms : array-like of int [shape=(N,)]
        Frames reserved for each clip (at least 1); longer clips are truncated by the writer.
    part : Part, optional
        Where the clips come from, recorded in the root attributes.
    versions : Versions, optional
        Augmented versions to reserve (the ``/augmented`` group); needed when ``head.augment > 0``.
    rhythm_fields : sequence of str, optional
        Names of the ``/rhythm`` columns; ``None``: no ``/rhythm``.
    """
    features, params, dtype = parse_features(head.features), head.params, head.dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    rooms = np.asarray(rooms, np.int32)
    if len(rooms) != len(clips) or (rooms < 1).any():
        raise ValueError(f"need one room of at least 1 frame per clip ({len(clips)}), got {len(rooms)}")
    if (versions is None) != (head.augment == 0):
        raise ValueError(f"augment={head.augment} needs versions exactly when it is above 0")
    starts, total = _starts(rooms)
    with h5py.File(path, "w") as f:
        f.attrs.update(format=FORMAT, version=VERSION, **head.attrs(), **(part.attrs() if part else {}))
        f["tags"] = np.array(TAGS, dtype=object).astype(_STR)
        f["clip_id"] = clips["clip_id"].to_numpy(np.int64)
        f.create_dataset("mp3_path", data=clips["mp3_path"].to_numpy(object), dtype=_STR)
        f.create_dataset("split", data=clips["split"].to_numpy(object), dtype=_STR)
        f["labels"] = clips[list(TAGS)].to_numpy(np.uint8)
        f["frame_start"] = starts
        f["room"] = rooms
        f["n_frames"] = np.zeros(len(rooms), np.int32)
        f["status"] = np.zeros(len(rooms), np.int8)
        _feature_datasets(f, features, params, dtype, total)
        if rhythm_fields is not None:
            f.create_dataset("rhythm", data=np.full((len(rooms), len(rhythm_fields)), np.nan, np.float32))
            f["rhythm"].attrs["fields"] = ",".join(rhythm_fields)
        if versions is not None:
            g = f.create_group(AUGMENTED)
            vrooms = np.asarray(versions.room, np.int32)
            if (vrooms < 1).any() or not len(versions.row) == len(versions.version) == len(vrooms) == len(versions.chain):
                raise ValueError("versions need one row, version, room of at least 1 frame and chain each")
            vstarts, vtotal = _starts(vrooms)
            g["row"] = np.asarray(versions.row, np.int64)
            g["version"] = np.asarray(versions.version, np.int16)
            g.create_dataset("chain", data=np.array(versions.chain, dtype=object), dtype=_STR)
            g["frame_start"] = vstarts
            g["room"] = vrooms
            g["n_frames"] = np.zeros(len(vrooms), np.int32)
            g["status"] = np.zeros(len(vrooms), np.int8)
            _feature_datasets(g, features, params, dtype, vtotal)


def read_versions(path) -> pd.DataFrame | None:
    """Per-version table of a features file (``VERSION_TABLES`` columns), or ``None`` when it has none."""
    with h5py.File(path, "r") as f:
        if AUGMENTED not in f:
            return None
        g = f[AUGMENTED]
        return pd.DataFrame({k: g[k].asstr()[:] if k == "chain" else g[k][:] for k in VERSION_TABLES})


def read_rhythm(path) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """``(rhythm (N, 14) float32, column names)`` of a features file, or ``None`` for a file without."""
    with h5py.File(path, "r") as f:
        if "rhythm" not in f:
            return None
        return f["rhythm"][:], tuple(str(f["rhythm"].attrs["fields"]).split(","))


def header(path) -> Header:
    """What a features file was made with, from its root attributes.

    Raises
    ------
    StoreError
        When the file is missing, not HDF5, or not a features file of this project; for a merged
        file, also when one of its shards is missing (HDF5 would read its frames as fill values).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: a folder, not a features file (pipeline/extract.py writes one .h5 file)")
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
    gone = [s for s in shard_paths(path, attrs.get("shards", ())) if not s.is_file()]
    if gone:
        raise StoreError(f"{path}: a merged file whose shard {gone[0]} is missing"
                         + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
                         + "; the shards must stay where they were merged from, beside it")
    return Header(features=tuple(attrs["features"].split(",")), params=FeatureParams.from_dict(attrs),
                  dtype=attrs["dtype"], split_scheme=attrs["split_scheme"], source=attrs["source"],
                  audio_kind=attrs["audio_kind"], shard=attrs.get("shard", ""),
                  augment=int(attrs.get("augment", 0)), augment_seed=int(attrs.get("augment_seed", 0)),
                  min_seconds=attrs.get("min_seconds"), max_seconds=attrs.get("max_seconds"))


def shard_paths(path, names) -> list[Path]:
    """The shard files a merged file at ``path`` names, resolved as HDF5 does: beside the merged file."""
    return [Path(path).parent / str(n) for n in names]


def read_table(path) -> pd.DataFrame:
    """Per-clip table of a features file: clip_id, mp3_path, split, frame_start, room, n_frames, status.

    Returns
    -------
    pandas.DataFrame
        One row per clip, in file order; ``labels`` is an (N, 50) uint8 array in ``df.attrs``.
    """
    with h5py.File(path, "r") as f:
        df = pd.DataFrame({
            "clip_id": f["clip_id"][:],
            "mp3_path": f["mp3_path"].asstr()[:],
            "split": f["split"].asstr()[:],
            "frame_start": f["frame_start"][:],
            "room": f["room"][:],
            "n_frames": f["n_frames"][:],
            "status": f["status"][:],
        })
        df.attrs["labels"] = f["labels"][:]
        df.attrs["tags"] = tuple(f["tags"].asstr()[:])
    return df


def read_clip(f: h5py.File, feature: str, i: int, valid: bool = True) -> np.ndarray:
    """Frames of clip ``i`` from an open features file: ``(n_frames, bins)``, or its whole room."""
    start = int(f["frame_start"][i])
    n = int(f["n_frames"][i] if valid else f["room"][i])
    return f[feature][start:start + n]


def chunk_offsets(path, feature: str) -> tuple[np.ndarray, int]:
    """Byte offset in the file of every chunk of ``feature``, in frame order, and the chunk's frames.

    Chunks hold ``C x bins`` values, C order, uncompressed, so frame ``g`` of the dataset (clip
    ``i``'s frame ``t`` is ``g = frame_start[i] + t``) starts at ``offsets[g // C] + (g % C) * bins *
    itemsize``.
    """
    with h5py.File(path, "r") as f:
        if feature not in f:
            raise StoreError(f"{path}: holds no {feature!r} features (it has {f.attrs['features']})")
        ds = f[feature]
        if ds.is_virtual:
            raise StoreError(f"{path}: {feature!r} is a virtual dataset over shards (a merged file); "
                             "take its shards' offsets from store.sources()")
        if ds.compression is not None or ds.chunks is None or ds.chunks[1] != ds.shape[1]:
            raise StoreError(f"{path}: {feature!r} is not stored in uncompressed time-major chunks")
        step = ds.chunks[0]
        offsets = np.full(-(-ds.shape[0] // step), -1, np.int64)
        # One call for the whole index where HDF5 has it; the per-chunk query otherwise.
        try:
            ds.id.chunk_iter(lambda info: offsets.__setitem__(info.chunk_offset[0] // step, info.byte_offset))
        except (AttributeError, NotImplementedError):
            for k in range(len(offsets)):
                offsets[k] = ds.id.get_chunk_info_by_coord((k * step, 0)).byte_offset
        if (offsets < 0).any():
            raise StoreError(f"{path}: {feature!r} has unallocated chunks; re-run extraction")
        return offsets, step


@dataclass(frozen=True)
class Source:
    """Frames ``start:stop`` of a feature dataset, stored uncompressed in ``path``.

    They are frames ``source_start:source_start + stop - start`` of the dataset of the same name in
    ``path``, whose chunks begin at the byte ``offsets`` and hold ``step`` frames each
    (:func:`chunk_offsets`).
    """

    path: Path
    start: int
    stop: int
    source_start: int
    offsets: np.ndarray
    step: int


def sources(path, feature: str) -> list[Source]:
    """Where the frames of ``feature`` lie on disk: one :class:`Source` per file, in frame order.

    A file written by extraction is its own single source; a merged file's virtual dataset has one
    per shard, read from ``Dataset.virtual_sources()``, with relative shard names resolved beside
    the merged file as HDF5 resolves them.

    Raises
    ------
    StoreError
        When a mapping is not a block of whole rows (not a file ``pipeline/merge.py`` wrote) or a
        source is missing or not stored in uncompressed chunks.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        ds = f.get(feature)
        virtual = ds is not None and ds.is_virtual
        frames, bins = ds.shape if ds is not None else (0, 0)
        maps = ds.virtual_sources() if virtual else []
    if not virtual:  # chunk_offsets names a missing feature
        return [Source(path, 0, frames, 0, *chunk_offsets(path, feature))]
    out = []
    for m in maps:
        (row, col), _, count, (rows, cols) = m.vspace.get_regular_hyperslab()
        src = path if m.file_name == "." else path.parent / m.file_name
        if count != (1, 1) or col != 0 or cols != bins or m.dset_name.lstrip("/") != feature:
            raise StoreError(f"{path}: {feature!r} maps {src} in a way merge.py does not write; merge again")
        if not src.is_file():
            raise StoreError(f"{path}: its shard {src} is missing; the shards must stay beside the merged file")
        first = 0
        if m.src_space.get_select_type() == h5py.h5s.SEL_HYPERSLABS:
            (first, _), *_ = m.src_space.get_regular_hyperslab()
        out.append(Source(src, row, row + rows, first, *chunk_offsets(src, feature)))
    return sorted(out, key=lambda s: s.start)


class Writer:
    """Writes whole clips (and their versions) into a file made by :func:`create`; raw data, then ``status``."""

    def __init__(self, path):
        self.file = h5py.File(path, "r+")
        self.features = tuple(self.file.attrs["features"].split(","))
        self.dtype = np.dtype(self.file.attrs["dtype"])
        self.frame_start = self.file["frame_start"][:]
        self.room = self.file["room"][:]
        self.status = self.file["status"][:]
        self.n_frames = self.file["n_frames"][:]
        self.rhythm = self.file["rhythm"][:] if "rhythm" in self.file else None
        self.versions = read_versions(path) if AUGMENTED in self.file else None
        if self.versions is not None:
            g = self.file[AUGMENTED]
            self.v_status, self.v_n_frames = g["status"][:], g["n_frames"][:]

    def _block(self, group, starts, rooms, rows, feats, kept) -> None:
        """One write per feature over the consecutive rooms of ``rows`` (a skipped one's written as zeros):
        per-clip h5py calls cost more than the copy."""
        first, last = min(rows), max(rows)
        start, stop = int(starts[first]), int(starts[last] + rooms[last])
        for name in self.features:
            ds = group[name]
            block = np.zeros((stop - start, ds.shape[1]), self.dtype)
            for j, i in enumerate(rows):
                at = int(starts[i]) - start
                block[at:at + kept[j]] = feats[name][j][:kept[j]]
            ds[start:stop] = block

    def _rooms(self, group, starts, rooms, done_frames, rows, feats, n_frames) -> None:
        """Write ``rows``' features into their rooms of ``group`` and record their kept frames."""
        kept = np.minimum(np.asarray(n_frames, np.int64), rooms[rows]) if rows else np.zeros(0, np.int64)
        if rows:
            self._block(group, starts, rooms, rows, feats, kept)
        done_frames[rows] = kept
        group["n_frames"][:] = done_frames

    @staticmethod
    def _mark(group, status, rows, bad) -> None:
        status[rows] = 1
        status[bad] = -1
        group["status"][:] = status

    def write(self, rows: list[int], feats: dict[str, np.ndarray], n_frames: np.ndarray, bad: list[int],
              rhythm: np.ndarray | None = None, versions: dict | None = None) -> None:
        """Store a batch: ``feats[name][j]`` (frames, bins) for clip ``rows[j]``; mark ``bad`` as skipped.

        Each clip's room is written whole (frames past its length as zeros, frames past its room
        dropped). ``rhythm[j]`` is clip ``rows[j]``'s row of ``/rhythm``. ``versions``, for a file with
        augmented versions: ``{'rows': [...], 'features': ..., 'n_frames': ..., 'bad': [...]}`` in the
        same form, rows of ``/augmented``. Features are flushed before ``status`` so a clip or version
        is never marked done without its data.
        """
        self._rooms(self.file, self.frame_start, self.room, self.n_frames, rows, feats, n_frames)
        if self.rhythm is not None and rows and rhythm is not None:
            self.rhythm[rows] = rhythm
            first, last = min(rows), max(rows) + 1
            self.file["rhythm"][first:last] = self.rhythm[first:last]
        versions = versions if self.versions is not None else None  # a file without /augmented has no room for them
        if versions is not None:
            self._rooms(self.file[AUGMENTED], self.versions["frame_start"].to_numpy(), self.versions["room"].to_numpy(),
                        self.v_n_frames, list(versions["rows"]), versions["features"], versions["n_frames"])
        self.file.flush()
        self._mark(self.file, self.status, rows, bad)
        if versions is not None:
            self._mark(self.file[AUGMENTED], self.v_status, list(versions["rows"]), list(versions["bad"]))
        self.file.flush()

    def close(self) -> None:
        self.file.close()
