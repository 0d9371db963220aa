"""Data feed: crops of stored features read straight from the HDF5 file through ``numpy.memmap``.

The byte offset of every chunk is taken from the file's chunk layout once; after that a crop is a
contiguous slice of the mapped file (chunks are time-major; two slices where a crop crosses a chunk
boundary), with no h5py call in the hot loop. float16 files are converted to float32 as they are
read. The map is opened lazily in each process, so DataLoader worker processes each get their own.
A merged file (``pipeline/merge.py``) holds its features in virtual datasets over its shards: each
shard is mapped with its own chunk offsets and a clip, which lies whole in one shard, is read from
that shard's map, so crops cost what they cost in an unsharded file. Augmented versions
(``extract.py --augment V``, ``/augmented``) are mapped the same way: ``crop(i, t, n, version=v)``
reads version v of clip i (0 the original), and ``Crops.set_versions`` picks one per training clip
per epoch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from features.device import to_device
from features.timbre import timbre_statistics
from pipeline import store


class FeedError(ValueError):
    """A features file or request the trainer cannot use; the message says what to do."""


class FeatureFile:
    """The extracted clips of a features file, readable as crops.

    Parameters
    ----------
    path : path
        A file written by ``pipeline/extract.py``.
    features : str or sequence of str
        Features to read, concatenated along bins in this order (``'mel,mfcc'`` or ``('mel', 'mfcc')``).

    Attributes
    ----------
    clip_id, split, n_frames, labels : np.ndarray
        Per extracted clip (clips skipped at extraction are left out).
    bins : int
        Total bins of the requested features.
    n_versions : int
        Augmented versions per training clip the file holds (0: none).
    version_frames : np.ndarray [shape=(len, n_versions + 1), dtype=int64]
        Valid frames of each clip's original (column 0) and of its versions 1..V; 0 where a
        version is not stored (not a training clip, or it failed to render).
    rhythm : np.ndarray [shape=(len, 14), dtype=float32] or None
        Each clip's rhythm statistics (columns ``rhythm_fields``), or ``None`` for a file without
        ``/rhythm`` (extracted without mel, or before it was stored).
    """

    def __init__(self, path, features=("mel",)):
        self.path = Path(path)
        try:
            self.header = store.header(self.path)
        except store.StoreError as exc:
            raise FeedError(str(exc)) from exc
        have = self.header.features
        features = features.split(",") if isinstance(features, str) else list(features)
        if len(set(features)) != len(features):
            raise FeedError(f"features {','.join(features)}: each at most once")
        missing = [f for f in features if f not in have]
        if missing:
            raise FeedError(f"{self.path} holds {', '.join(have)} but not {', '.join(missing)}; extract them with "
                            f"`python pipeline/extract.py --features {','.join(dict.fromkeys([*have, *missing]))} "
                            f"--out OTHER.h5` (and the --data this file came from), or train on what it holds "
                            f"(train/run.py --inputs)")
        self.features = tuple(features)
        table = store.read_table(self.path)
        keep = (table["status"] == 1).to_numpy()
        if not keep.any():
            raise FeedError(f"{self.path}: holds no extracted clip")
        self.rows = np.flatnonzero(keep)
        self.clip_id = table["clip_id"].to_numpy()[keep]
        self.mp3_path = table["mp3_path"].to_numpy()[keep]
        self.split = table["split"].to_numpy()[keep]
        self.n_frames = table["n_frames"].to_numpy()[keep].astype(np.int64)
        self.frame_start = table["frame_start"].to_numpy()[keep].astype(np.int64)
        self.labels = table.attrs["labels"][keep]
        self.tags = table.attrs["tags"]
        self.params = self.header.params
        self.dtype = np.dtype(self.header.dtype)
        self.widths = [self.params.bins(f) for f in self.features]
        self.bins = sum(self.widths)
        rhythm = store.read_rhythm(self.path)
        self.rhythm, self.rhythm_fields = (rhythm[0][keep], rhythm[1]) if rhythm else (None, ())
        self.files, self._reads = [], []
        for f in self.features:
            self._reads.append(self._locate(f, self.frame_start, self.n_frames))
        self._versions(store.read_versions(self.path), keep)
        self._mm = None

    def _versions(self, table, keep) -> None:
        """Per kept clip and version, where its frames lie (``/augmented``); no versions without a table."""
        self.n_versions = int(self.header.augment) if table is not None else 0
        self.version_frames = np.zeros((len(self.rows), self.n_versions + 1), np.int64)
        self.version_frames[:, 0] = self.n_frames
        self._vreads = []
        if not self.n_versions:
            return
        at = np.full(len(keep), -1, np.int64)  # file row -> position among the kept clips
        at[self.rows] = np.arange(len(self.rows))
        pos, v = at[table["row"].to_numpy()], table["version"].to_numpy().astype(np.int64)
        ok = (pos >= 0) & (table["status"].to_numpy() == 1)
        self.version_frames[pos[ok], v[ok]] = table["n_frames"].to_numpy()[ok]
        self._vrow = np.full((len(self.rows), self.n_versions + 1), -1, np.int64)  # row of /augmented
        self._vrow[pos[ok], v[ok]] = np.flatnonzero(ok)
        self._chains = table["chain"].to_numpy()
        starts = table["frame_start"].to_numpy().astype(np.int64)
        frames = np.where(ok, table["n_frames"].to_numpy(), 0).astype(np.int64)
        for f in self.features:
            self._vreads.append(self._locate(f"{store.AUGMENTED}/{f}", starts, frames))

    def _locate(self, feature: str, frame_start: np.ndarray, n_frames: np.ndarray):
        """Per clip (or version), the source holding its frames of ``feature`` and its first frame there.

        Returns ``(source per clip, first frame per clip, [(file index, chunk offsets, chunk frames)])``;
        an unsharded file is its own single source, where the first frame is ``frame_start``.
        """
        try:
            srcs = store.sources(self.path, feature)
        except store.StoreError as exc:
            raise FeedError(str(exc)) from exc
        bounds = np.array([s.start for s in srcs])
        which = np.searchsorted(bounds, frame_start, side="right") - 1
        stops = np.array([s.stop for s in srcs])[which]
        if (frame_start + n_frames > stops).any():
            raise FeedError(f"{self.path}: a clip's {feature!r} frames span two shards; merge again with "
                            "pipeline/merge.py")
        first = frame_start - bounds[which] + np.array([s.source_start for s in srcs])[which]
        table = []
        for s in srcs:
            if s.path not in self.files:
                self.files.append(s.path)
            table.append((self.files.index(s.path), s.offsets, s.step))
        return which, first, table

    def __len__(self) -> int:
        return len(self.rows)

    def indices(self, split: str) -> np.ndarray:
        """Positions of the clips of one split."""
        return np.flatnonzero(self.split == split)

    def _version_row(self, i: int, version: int) -> int:
        """The row of ``/augmented`` holding version ``version`` >= 1 of clip ``i``; FeedError if it has none."""
        if not 1 <= version <= self.n_versions or self.version_frames[i, version] == 0:
            raise FeedError(f"{self.path}: clip {self.mp3_path[i]} has no augmented version {version}")
        return int(self._vrow[i, version])

    def chain(self, i: int, version: int) -> dict:
        """The effect chain (``features.augment.draw``'s dict) of version ``version`` >= 1 of clip ``i``."""
        import json

        return json.loads(self._chains[self._version_row(i, version)])

    def crop(self, i: int, start: int, length: int, version: int = 0, dtype=np.float32) -> np.ndarray:
        """Frames ``start:start+length`` of clip ``i``, all features stacked: ``(bins, length)`` float32.
        Frames outside the clip raise ``IndexError``.

        ``version`` v >= 1 reads the clip's v-th augmented version (it must exist:
        ``version_frames[i, v] > 0``) instead of the original. ``dtype=ff.dtype`` reads the stored
        values as they are (float16 files stay float16).
        """
        out = np.empty((self.bins, length), dtype)
        for row, width, at, piece in self.pieces(i, start, length, version):
            out[row:row + width, at:at + len(piece)] = piece.T
        return out

    def pieces(self, i: int, start: int, length: int, version: int = 0):
        """The stored pieces of :meth:`crop`'s frames, as they lie in the file: no copy, no conversion.

        Yields ``(row, width, at, piece)``: ``piece`` is a ``(n, width)`` view (frames x bins, the
        storage type) of the memory map holding frames ``start+at : start+at+n`` of the feature whose
        bins are rows ``row : row+width`` of a crop. One piece per feature and chunk the frames touch.
        """
        n = int(self.version_frames[i, version]) if version else int(self.n_frames[i])
        if start < 0 or length < 0 or start + length > n:  # past the end lie the next clip's frames
            raise IndexError(f"{self.path}: frames {start}:{start + length} of clip {i} (clip_id {self.clip_id[i]}"
                             f"{f', version {version}' if version else ''}), which has {n}")
        if self._mm is None:  # opened per process: a map must not cross a fork
            self._mm = [np.memmap(p, dtype=np.uint8, mode="r") for p in self.files]
        reads = self._reads
        if version:
            reads, i = self._vreads, self._version_row(i, version)
        size = self.dtype.itemsize
        row = 0
        for width, (which, firsts, table) in zip(self.widths, reads):
            f, offsets, C = table[which[i]]
            mm, first = self._mm[f], int(firsts[i]) + start  # frame of the dataset in that file
            g, end = first, first + length
            while g < end:  # one piece per chunk the frames touch
                k, within = divmod(g, C)
                n = min(end - g, C - within)
                at = int(offsets[k]) + within * width * size
                yield row, width, g - first, mm[at:at + n * width * size].view(self.dtype).reshape(n, width)
                g += n
            row += width

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mm"] = None
        return state


def chunk_starts(n_frames: int, length: int) -> np.ndarray:
    """Starts of the non-overlapping crops of ``length`` frames that test time averages over.

    A clip of ``n_frames`` gives ``n_frames // length`` crops from frame 0 (a shorter tail is left
    out); a clip shorter than one crop gives the one crop at 0, which the caller pads.
    """
    return np.arange(max(1, n_frames // length), dtype=np.int64) * length


def clip_statistics(ff, idx, feature: str = "mfcc", fn=timbre_statistics) -> np.ndarray:
    """Per-clip statistics of one stored feature, streamed one clip at a time.

    Parameters
    ----------
    ff : train.feed.FeatureFile
        Opened with ``feature`` among its features (reading only that one is cheapest:
        ``FeatureFile(path, ('mfcc',))``).
    idx : array-like of int
        Clip positions in ``ff`` (e.g. the training split's), the rows of the result.
    feature : str
        ``'mfcc'``, ``'mel'`` or ``'chroma'``.
    fn : callable
        ``(frames, bins)`` time-major array of one clip -> 1-D statistics: ``features.timbre.timbre_statistics``,
        or ``lambda m: features.rhythm.rhythm_statistics(m, ff.params)`` with ``'mel'``.

    Returns
    -------
    np.ndarray [shape=(len(idx), d)]
        float32.
    """
    if feature not in ff.features:
        raise ValueError(f"ff holds {', '.join(ff.features)}, not {feature!r}; open it with ({feature!r},)")
    at = ff.features.index(feature)
    row, width = sum(ff.widths[:at]), ff.widths[at]
    idx = np.asarray(idx, dtype=np.int64)
    out = None
    for r, i in enumerate(idx):
        n = int(ff.n_frames[i])
        frames = np.empty((n, width), np.float32)  # only this feature's stored pieces, as they lie
        for first, _, t, piece in ff.pieces(int(i), 0, n):
            if first == row:
                frames[t:t + len(piece)] = piece
        v = np.asarray(fn(frames), np.float32)
        if out is None:
            out = np.empty((len(idx), len(v)), np.float32)
        out[r] = v
    return out if out is not None else np.zeros((0, 0), np.float32)


def standardizer(ff: FeatureFile, idx: np.ndarray, max_clips: int = 500, seed: int = 0):
    """Per-bin mean and standard deviation over the valid frames of (up to ``max_clips``) clips."""
    rng = np.random.default_rng(seed)
    pick = idx if len(idx) <= max_clips else rng.choice(idx, max_clips, replace=False)
    total = np.zeros(ff.bins)
    sq = np.zeros(ff.bins)
    n = 0
    for i in pick:
        x = ff.crop(i, 0, int(ff.n_frames[i])).astype(np.float64)
        total += x.sum(axis=1)
        sq += (x ** 2).sum(axis=1)
        n += x.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)


class Crops(Dataset):
    """Crops of ``length`` frames of the clips ``idx``, standardised, with their labels.

    Parameters
    ----------
    ff : FeatureFile
    idx : np.ndarray
        Clip positions in ``ff``.
    length : int
        Crop length in frames.
    mean, std : np.ndarray [shape=(bins,)]
        Standardisation applied to every bin.
    mode : {'random', 'fixed', 'chunks'}
        ``'random'``: one crop per clip at a random start, drawn anew each time (training).
        ``'fixed'``: the crop at the middle of each clip (validation).
        ``'chunks'``: every non-overlapping crop of every clip (testing); ``self.clip_of`` maps
        each item to its clip's position in ``idx`` so outputs can be averaged per clip.
    versions : array-like of int [shape=(len(idx),)], optional
        ``'random'`` mode only: which version of each clip to crop (0 the original, v in
        ``1..ff.n_versions`` an augmented one); see :meth:`set_versions`. Default: the originals.
    """

    def __init__(self, ff: FeatureFile, idx, length: int, mean, std, mode: str = "random", versions=None):
        short = [i for i in idx if ff.n_frames[i] < length]
        if short:
            i = short[0]
            least = int(ff.n_frames[idx].min())
            most = np.floor((least + 0.5) * ff.params.hop_length / ff.params.sr * 100) / 100  # frames() rounds
            raise FeedError(f"a crop of {length} frames is longer than {len(short)} clip(s), e.g. "
                            f"{ff.mp3_path[i]} ({ff.n_frames[i]} frames); use a shorter --seconds "
                            f"(at most {most:g} s = {least} frames here)")
        self.ff, self.idx, self.length, self.mode = ff, np.asarray(idx), length, mode
        self.mean, self.std = mean[:, None], std[:, None]
        if mode == "chunks":
            starts = [chunk_starts(int(n), length) for n in ff.n_frames[self.idx]]
            self.clip_of = np.repeat(np.arange(len(self.idx)), [len(s) for s in starts])
            self.starts = np.concatenate(starts)
        elif mode not in ("random", "fixed"):
            raise ValueError(f"unknown crop mode {mode!r}")
        self.versions = None
        if versions is not None:
            self.set_versions(versions)

    def set_versions(self, versions) -> np.ndarray:
        """Crop version ``versions[j]`` of clip ``idx[j]`` from now on (``None``: the originals again).

        For training (``'random'`` mode): draw, e.g. once per epoch, the original (0) or one of the
        ``ff.n_versions`` augmented versions per clip. A version the file lacks (a failed render)
        or shorter than a crop (time stretch shortens) falls back to the original.

        Returns
        -------
        np.ndarray [shape=(len(idx),), dtype=int64] or None
            The versions that will be read.

        Raises
        ------
        ValueError
            Outside ``'random'`` mode (validation and test read originals), or for a wrong length
            or a version outside ``0..ff.n_versions``.
        """
        if versions is None:
            self.versions = None
            return None
        if self.mode != "random":
            raise ValueError(f"augmented versions are for training crops ('random' mode), not {self.mode!r}: "
                             "validation and test read the original clips")
        v = np.asarray(versions, np.int64)
        if v.shape != self.idx.shape or (v < 0).any() or (v > self.ff.n_versions).any():
            raise ValueError(f"need one version in 0..{self.ff.n_versions} (the file's versions per clip) for each "
                             f"of the {len(self.idx)} clips, got shape {v.shape}"
                             + (f", values {v.min()}..{v.max()}" if v.size else ""))
        v = np.where(self.ff.version_frames[self.idx, v] >= self.length, v, 0)
        self.versions = v
        return v

    def __len__(self) -> int:
        return len(self.clip_of) if self.mode == "chunks" else len(self.idx)

    def _where(self, ks) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Clip positions, crop starts and versions (``None``: the originals) of items ``ks``."""
        ks = np.asarray(ks)
        if self.mode == "chunks":
            return self.idx[self.clip_of[ks]], self.starts[ks], None
        clips, versions = self.idx[ks], None
        if self.versions is None:
            room = self.ff.n_frames[clips] - self.length
        else:
            versions = self.versions[ks]
            room = self.ff.version_frames[clips, versions] - self.length
        if self.mode == "fixed":
            return clips, room // 2, None
        # torch's RNG: seeded per DataLoader worker, so crops repeat for the same seed and number of
        # workers; another number of workers deals the batches to other RNG streams.
        return clips, (torch.rand(len(ks), dtype=torch.float64).numpy() * (room + 1)).astype(np.int64), versions

    def __getitem__(self, k: int):
        x, y = self.__getitems__([k])
        return x[0], y[0]

    def __getitems__(self, ks):
        """A whole batch at once (DataLoader calls this): ``(B, bins, length)`` crops, ``(B, tags)`` labels.

        Batched so that per-item Python overhead does not make a small model wait for data.
        """
        clips, starts, versions = self._where(ks)
        if versions is None:
            x = np.stack([self.ff.crop(i, int(t), self.length) for i, t in zip(clips, starts)])
        else:
            x = np.stack([self.ff.crop(i, int(t), self.length, int(v)) for i, t, v in zip(clips, starts, versions)])
        x -= self.mean
        x /= self.std
        return torch.from_numpy(x), torch.from_numpy(self.ff.labels[clips].astype(np.float32))

    def per_clip(self, values: np.ndarray) -> np.ndarray:
        """Average item rows per clip: ``(len(self), d)`` -> ``(len(self.idx), d)``, in ``idx`` order.

        In ``'chunks'`` mode this is the mean over each clip's crops; otherwise items are clips already.
        """
        if self.mode != "chunks":
            return values
        sums = np.zeros((len(self.idx), values.shape[1]), np.float64)
        np.add.at(sums, self.clip_of, values)
        return (sums / np.bincount(self.clip_of, minlength=len(self.idx))[:, None]).astype(values.dtype)

    @staticmethod
    def collate(batch):
        """``collate_fn`` for DataLoaders over ``Crops``: batches arrive already stacked."""
        return batch


def read_rows(ff: FeatureFile, clips, out: np.ndarray) -> np.ndarray:
    """Every frame of ``clips``, one clip after another, into ``out`` as the file stores them.

    Parameters
    ----------
    ff : FeatureFile
    clips : array-like of int
        Positions in ``ff``.
    out : np.ndarray [shape=(sum of the clips' frames, ff.bins), dtype=ff.dtype]
        Frames as rows; filled in place, piece by stored piece (no transposition).

    Returns
    -------
    np.ndarray
        ``out``.
    """
    at = 0
    for i in clips:
        n = int(ff.n_frames[i])
        for row, width, t, piece in ff.pieces(int(i), 0, n):
            out[at + t:at + t + len(piece), row:row + width] = piece
        at += n
    return out


class Resident:
    """The stored features of some clips held in one tensor on a device, for :class:`ResidentCrops`.

    Loaded once, in the file's storage type (a float16 file stays float16: MTAT's mel+MFCC+chroma
    is 9.4 GiB), clip after clip, frames as rows as the file stores them: ``data`` is
    ``(frames, bins)`` and clip ``i`` of the file starts at row ``offset[i]``. Crops are then
    gathered on the device, with no host copy.

    The file's pieces are copied as they lie (:func:`read_rows`, no transposition on the host) into
    blocks of at most ``block_bytes`` (a longer clip alone). On a GPU two pinned buffers take the
    blocks in turn: the host fills one while the other's copy runs, and they are given back once
    the load is done.

    Parameters
    ----------
    ff : FeatureFile
    idx : array-like of int
        The clips to hold (positions in ``ff``).
    device : torch.device
    block_bytes : int
        On a GPU, bytes read and copied at a time (bounds the pinned host memory the load takes); on
        the CPU the features are read straight into ``data``.
    """

    def __init__(self, ff: FeatureFile, idx, device, block_bytes: int = 256 * 2**20):
        idx = np.asarray(idx, np.int64)
        self.offset = np.full(len(ff), -1, np.int64)
        lengths = ff.n_frames[idx]
        ends = np.cumsum(lengths)
        self.offset[idx] = ends - lengths
        dtype = torch.float16 if ff.dtype == np.float16 else torch.float32
        self.data = torch.empty((int(ends[-1]) if len(idx) else 0, ff.bins), dtype=dtype, device=device)
        if self.data.device.type != "cuda":  # read straight into place: blocks are for the copies to a GPU
            read_rows(ff, idx, self.data.numpy())
            return
        blocks = self.blocks(lengths, block_bytes // (ff.bins * ff.dtype.itemsize))
        if not blocks:
            return
        most = max(int(lengths[part].sum()) for part in blocks)
        staging = [torch.empty((most, ff.bins), dtype=dtype, pin_memory=True) for _ in range(2)]
        copied = [None, None]
        for k, part in enumerate(blocks):
            a, b = int(ends[part[0]] - lengths[part[0]]), int(ends[part[-1]])
            if copied[k % 2] is not None:
                copied[k % 2].synchronize()  # this buffer's last copy has run: it can be filled again
            host = staging[k % 2][:b - a]
            read_rows(ff, idx[part], host.numpy())
            self.data[a:b].copy_(host, non_blocking=True)
            copied[k % 2] = torch.cuda.Event()
            copied[k % 2].record()
        torch.cuda.current_stream(self.data.device).synchronize()
        del staging, host
        getattr(torch.accelerator, "empty_host_cache", lambda: None)()  # the pinned buffers back to the system

    @staticmethod
    def blocks(lengths: np.ndarray, frames: int) -> list[np.ndarray]:
        """Consecutive runs of clips (positions in ``lengths``) of at most ``frames`` frames each, a
        longer clip alone: the blocks a load reads and copies at a time."""
        out, start, total = [], 0, 0
        for k, n in enumerate(lengths.tolist()):
            if k > start and total + n > frames:
                out.append(np.arange(start, k))
                start, total = k, 0
            total += n
        return out + [np.arange(start, len(lengths))] if len(lengths) else out

    @staticmethod
    def nbytes(ff: FeatureFile, idx) -> int:
        """Bytes :class:`Resident` takes for the clips ``idx`` of ``ff``."""
        return int(ff.n_frames[np.asarray(idx)].sum()) * ff.bins * ff.dtype.itemsize


class ResidentCrops(Crops):
    """:class:`Crops` gathered from a :class:`Resident` tensor on its device: the same crops, no host copy.

    The crop starts come from the same draws as :class:`Crops` in this process (torch's CPU
    generator, the same calls in the same order), and standardisation does the same float64
    arithmetic rounded to float32, so for the same seed the batches equal those of ``Crops`` read
    through the memory map with ``num_workers=0``, to the bit. Batches come out on the device; use
    it with ``num_workers=0`` and no pinned memory. Augmented versions are not held (use ``Crops``).
    """

    def __init__(self, ff: FeatureFile, idx, length: int, mean, std, mode: str, resident: Resident):
        super().__init__(ff, idx, length, mean, std, mode)
        self.resident = resident
        device = resident.data.device
        # numpy's x -= mean on float32 crops computes in the promoted type: so do we
        work = np.result_type(np.float32, np.asarray(mean).dtype, np.asarray(std).dtype)
        self._mean = torch.as_tensor(np.asarray(mean, work)[None, :, None], device=device)
        self._std = torch.as_tensor(np.asarray(std, work)[None, :, None], device=device)
        self._labels = torch.as_tensor(ff.labels.astype(np.float32), device=device)
        self._span = torch.arange(length, device=device)

    def set_versions(self, versions):
        if versions is not None:
            raise ValueError("a Resident feed holds the original clips only; read augmented versions with Crops")
        return super().set_versions(versions)

    def __getitems__(self, ks):
        clips, starts, _ = self._where(ks)
        # one non-blocking copy of the batch's indices: the host queues it and moves on (to_device)
        first, rows = to_device(np.stack([self.resident.offset[clips] + starts, clips]), self._span.device)
        x = self.resident.data[first[:, None] + self._span[None, :]]  # (B, length, bins): each crop's rows
        x = x.permute(0, 2, 1)  # (B, bins, length)
        dt = self._mean.dtype
        # as numpy's x -= mean; x /= std on float32 crops
        x = (x.to(dt) - self._mean).float().to(dt) / self._std
        return x.to(torch.float32, memory_format=torch.contiguous_format), self._labels[rows]

