"""The library index of train/library.py: its file, journal and lock, the update rules, exact search, reading.

Layout of the index (HDF5, default ``cache/library.h5``; ``N`` tracks, ``T`` tags, ``D`` dimensions)::

    /path (N,) str         absolute path of each track, sorted
    /size (N,) int64       bytes            /mtime_ns (N,) int64   modification time, when indexed
    /duration (N,) float32 seconds of audio /n_crops (N,) int32    crops the network saw
    /scores (N, T) float32 clip-level tag scores (T = 0 for a metric run without a tag layer)
    /embedding (N, D) float32   the run's embedding, averaged over the track's crops
    /failed/path, /failed/size, /failed/mtime_ns, /failed/error    files that could not be indexed
    attributes: format, version, run (the run folder), run_sha256 (of its best.pt: the identity of
                the network), task, model, embedding (what the embedding is), tags (JSON), tagger,
                created, updated

The file is only ever replaced whole (written beside it, then renamed), so it is readable at every
moment. Between two such writes, indexing appends its progress to a journal of small files,
``.<index name>.parts/part-NNNNNN.npz`` beside the index, each written atomically too; reading an
index applies the journal (a path's latest entry wins), so the work of a killed run is kept and
a re-run continues from it. A finished run folds the journal into the index and removes it.
``.<index name>.lock`` (the pid of the run) keeps a second index run off the same index.

Updating (:func:`plan`): the audio files under the folder (by suffix: what libsndfile reads) are
compared with the index by path, size and modification time: new and changed files are done,
unchanged ones kept, tracks of files gone from the folder dropped; tracks of other folders are
left as they are; a file that failed is tried again only once it changes.

Search: :class:`Searcher` gives the exact K nearest tracks by cosine similarity with the numba
kernels of :mod:`eval._topk`, the same two stages as ``eval.recall``: a float32 product proposes
candidates within a proven rounding margin, and the candidates are ranked by the float64
reference cosine (ties to the lower index, i.e. the path sorted first).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from data.files import Locked, atomic_path, held_lock

FORMAT = "mtat-toolkit music library index"
VERSION = 1
TRACK_FIELDS = ("path", "size", "mtime_ns", "duration", "n_crops", "scores", "embedding")
_DTYPES = {"size": np.int64, "mtime_ns": np.int64, "duration": np.float32, "n_crops": np.int32,
           "scores": np.float32, "embedding": np.float32}


class LibraryError(ValueError):
    """An index, run or request that cannot be used; the message names it and says what to do."""


def run_sha256(run: Path, what: str = "--run") -> str:
    """SHA-256 of the run's ``best.pt``: two indexes match only if made by the very same weights.

    ``what`` names the folder in the message: ``--run``, or ``the index's run`` for the one an index
    recorded.

    Raises
    ------
    LibraryError
        When the folder holds no ``best.pt``.
    """
    ckpt = Path(run) / "best.pt"
    if not ckpt.is_file() and what != "--run":
        raise LibraryError(f"{what} {run} is gone (no best.pt there); pass --run with it again, or index into "
                           "a new --out with another --run")
    if not ckpt.is_file():
        raise LibraryError(f"--run {run}: not a finished run folder (no best.pt there); train one with "
                           "`python train/run.py` or make one with `python train/pretrained.py MTT_musicnn`")
    h = hashlib.sha256()
    with open(ckpt, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Library:
    """The tracks of an index in memory, one row per track, plus the files that failed.

    Attributes
    ----------
    path : np.ndarray [shape=(n,), dtype=object]
    size, mtime_ns : np.ndarray [shape=(n,), dtype=int64]
    duration : np.ndarray [shape=(n,), dtype=float32]
    n_crops : np.ndarray [shape=(n,), dtype=int32]
    scores : np.ndarray [shape=(n, tags), dtype=float32]
    embedding : np.ndarray [shape=(n, dim), dtype=float32]
    failed : dict
        ``{path: (size, mtime_ns, error message)}``.
    meta : dict
        The index's attributes (run, run_sha256, tags, ...).
    """

    path: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray
    duration: np.ndarray
    n_crops: np.ndarray
    scores: np.ndarray
    embedding: np.ndarray
    failed: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, meta: dict, n_tags: int = 0, dim: int = 0) -> Library:
        return cls(np.empty(0, object), *(np.empty(0, _DTYPES[k]) for k in TRACK_FIELDS[1:5]),
                   np.empty((0, n_tags), np.float32), np.empty((0, dim), np.float32), {}, dict(meta))

    def __len__(self) -> int:
        return len(self.path)

    @property
    def tags(self) -> list[str]:
        return list(self.meta.get("tags", []))

    def merged(self, parts: list[Library], drop=()) -> Library:
        """This library updated by ``parts`` in order (a path's last entry wins), without ``drop``, sorted.

        A path indexed in a part leaves the failures; a failure in a later part removes its track.
        """
        failed, gone = dict(self.failed), set(drop)
        for lib in parts:
            for p in lib.path:
                failed.pop(p, None)
            failed.update(lib.failed)
        libs = [lib for lib in (self, *parts) if len(lib)]
        for k in ("scores", "embedding"):
            widths = {getattr(lib, k).shape[1] for lib in libs}
            if len(widths) > 1:
                raise LibraryError(f"the index and its journal disagree on the {k} width ({sorted(widths)})")
        if not libs:
            out = Library.empty(self.meta, self.scores.shape[1], self.embedding.shape[1])
        else:
            allp = np.concatenate([lib.path for lib in libs])
            last = {p: i for i, p in enumerate(allp) if p not in gone and p not in failed}
            order = np.array([last[p] for p in sorted(last)], np.int64)
            out = Library(*(np.concatenate([getattr(lib, k) for lib in libs])[order] for k in TRACK_FIELDS),
                          {}, dict(self.meta))
        out.failed = {p: v for p, v in sorted(failed.items()) if p not in gone}
        return out


DEFAULT_INDEX = Path("cache/library.h5")


# ---------------------------------------------------------------------------------------------
# The index file


def write_index(path: Path, lib: Library) -> None:
    """Replace the index at ``path`` with ``lib``, atomically (and synced: it is the library's only copy)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**lib.meta, "format": FORMAT, "version": VERSION, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta.setdefault("created", meta["updated"])
    with atomic_path(path, sync=True, sweep=True) as tmp, h5py.File(tmp, "w") as f:
        text = h5py.string_dtype()
        f.create_dataset("path", data=np.asarray(lib.path, dtype=object), dtype=text)
        for k in TRACK_FIELDS[1:]:
            f.create_dataset(k, data=np.asarray(getattr(lib, k), _DTYPES[k]))
        g = f.create_group("failed")
        items = sorted(lib.failed.items())
        g.create_dataset("path", data=np.array([p for p, _ in items], dtype=object), dtype=text)
        g.create_dataset("size", data=np.array([v[0] for _, v in items], np.int64))
        g.create_dataset("mtime_ns", data=np.array([v[1] for _, v in items], np.int64))
        g.create_dataset("error", data=np.array([v[2] for _, v in items], dtype=object), dtype=text)
        for k, v in meta.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (list, dict)) else v


def read_index(path: Path) -> Library:
    """The index at ``path`` as written (its journal not applied; see :func:`load_library`).

    Raises
    ------
    LibraryError
        When the file is missing or is not a library index.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        out = f" --out {path}" if path != DEFAULT_INDEX else ""
        raise LibraryError(f"{path}: no library index there; make one with "
                           f"`python train/library.py index FOLDER --run RUN{out}`")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise LibraryError(f"{path}: not a library index of train/library.py (another HDF5 file?)")
            meta = {k: (json.loads(v) if k == "tags" else v.item() if hasattr(v, "item") else v)
                    for k, v in f.attrs.items()}
            cols = [f["path"].asstr()[()].astype(object)] + [f[k][()] for k in TRACK_FIELDS[1:]]
            g = f["failed"]
            failed = {p: (int(s), int(m), e) for p, s, m, e in
                      zip(g["path"].asstr()[()], g["size"][()], g["mtime_ns"][()], g["error"].asstr()[()])}
    except OSError as exc:
        raise LibraryError(f"{path}: cannot read the index ({exc})") from exc
    return Library(*cols, failed, meta)


def journal_dir(index: Path) -> Path:
    """The journal folder of an index: ``.<name>.parts`` beside it."""
    index = Path(index)
    return index.with_name(f".{index.name}.parts")


def write_part(index: Path, lib: Library) -> Path:
    """Append ``lib`` (tracks and failures done since the last write) to the journal, atomically."""
    folder = journal_dir(index)
    folder.mkdir(parents=True, exist_ok=True)
    done = sorted(folder.glob("part-*.npz"))
    n = int(done[-1].stem.split("-")[1]) + 1 if done else 0
    out = folder / f"part-{n:06d}.npz"
    items = sorted(lib.failed.items())
    arrays = {k: np.asarray(getattr(lib, k), _DTYPES[k]) for k in TRACK_FIELDS[1:]}
    arrays["path"] = np.asarray(lib.path, dtype=str)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, run_sha256=np.array(lib.meta["run_sha256"]), meta=np.array(json.dumps(lib.meta)),
                 failed_path=np.array([p for p, _ in items], dtype=str),
                 failed_size=np.array([v[0] for _, v in items], np.int64),
                 failed_mtime_ns=np.array([v[1] for _, v in items], np.int64),
                 failed_error=np.array([v[2] for _, v in items], dtype=str))
    return out


def read_parts(index: Path) -> list[Library]:
    """The journal's parts, oldest first (a part that cannot be read, e.g. a foreign file, is an error)."""
    out = []
    for part in sorted(journal_dir(index).glob("part-*.npz")):
        try:
            with np.load(part, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                cols = [z["path"].astype(object)] + [z[k] for k in TRACK_FIELDS[1:]]
                failed = {str(p): (int(s), int(m), str(e)) for p, s, m, e in
                          zip(z["failed_path"], z["failed_size"], z["failed_mtime_ns"], z["failed_error"])}
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"{part}: an unreadable part of the index's journal ({exc}); delete it and "
                               "index again (its tracks are redone)") from exc
        out.append(Library(*cols, failed, meta))
    return out


def clear_journal(index: Path) -> None:
    folder = journal_dir(index)
    for part in folder.glob("part-*.npz"):
        part.unlink()
    for tmp in folder.glob(".*.tmp"):  # a killed writer's temporary
        tmp.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def index_lock(index: Path):
    """Hold ``.<index name>.lock`` while an index run updates ``index``: two at once would lose work.

    A lock left by a process that no longer runs (killed) is taken over.

    Raises
    ------
    LibraryError
        When a running process holds the lock.
    """
    index = Path(index)
    index.parent.mkdir(parents=True, exist_ok=True)
    try:
        with held_lock(index, "another index run"):
            yield
    except Locked as exc:  # only its start raises it
        raise LibraryError(str(exc)) from None


def load_library(index: Path, need: bool = True) -> Library | None:
    """The index with its journal applied: every track indexed so far, also by a killed run.

    Parameters
    ----------
    index : Path
    need : bool
        Raise when there is neither an index nor a journal; else return ``None``.

    Raises
    ------
    LibraryError
        A missing index (when ``need``), an unreadable one, or a journal written with another run.
    """
    parts = read_parts(index)
    if Path(index).is_file():
        base = read_index(index)
    elif parts:
        base = Library.empty(parts[0].meta)
    elif need:
        read_index(index)  # raises, saying how to make one
    else:
        return None
    foreign = [p for p in parts if p.meta.get("run_sha256") != base.meta.get("run_sha256")]
    if foreign:
        raise LibraryError(f"{index}: its journal ({journal_dir(index)}) was written with the run "
                           f"{foreign[0].meta.get('run')}, the index with {base.meta.get('run')}; delete the "
                           "journal folder (its tracks are redone) or the index")
    return base.merged(parts) if parts else base


# ---------------------------------------------------------------------------------------------
# Updating: what a folder holds, and what an index run must do

#: Suffixes of the files tried (what libsndfile decodes); other files under FOLDER are ignored.
AUDIO_SUFFIXES = {".mp3", ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au",
                  ".snd", ".caf", ".w64", ".rf64"}
#: Audio the decoder does not read: counted in the summary so that a user knows they were left out.
UNREAD_SUFFIXES = {".m4a", ".aac", ".mp4", ".wma", ".ape", ".wv", ".alac", ".mka", ".webm", ".mpc"}



def scan(folder: Path) -> tuple[list[tuple[str, int, int]], dict]:
    """The audio files under ``folder``: ``[(absolute path, size, mtime_ns)]`` sorted, and counts.

    Hidden files and folders (a leading dot) are skipped, symbolic links to folders not followed.
    The counts are ``other`` (files of other kinds, ignored), ``unread`` (``{suffix: n}`` of
    audio formats the decoder cannot read) and ``badname`` (the audio files whose names are not
    UTF-8, which neither the decoder nor the index can take, shown with U+FFFD for what is not).
    """
    found, other, unread, badname = [], 0, collections.Counter(), []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            path = os.path.join(root, name)
            if suffix in AUDIO_SUFFIXES:
                try:
                    path.encode("utf-8")
                except UnicodeEncodeError:  # undecodable bytes, held by Python as surrogates
                    badname.append(os.fsencode(path).decode("utf-8", "replace"))
                    continue
                try:
                    st = os.stat(path)
                except OSError:  # vanished, or a broken link: the decoder reports it
                    found.append((path, -1, -1))
                    continue
                found.append((path, st.st_size, st.st_mtime_ns))
            elif suffix in UNREAD_SUFFIXES:
                unread[suffix] += 1
            else:
                other += 1
    return sorted(found), {"other": other, "unread": dict(unread), "badname": badname}


def plan(folder: Path, out: Path, run: Path | None, retry_failed: bool):
    """What an index run has to do: the library so far, its run, and the files to do, keep and drop.

    Returns
    -------
    state : Library or None
        The index with its journal applied (``None`` for a new index).
    run : Path
    sha : str
        The run's identity.
    todo : dict
        ``todo`` ``[(path, size, mtime_ns)]`` to decode; counts ``files``, ``kept``, ``changed``,
        ``outside`` (tracks of other folders, left as they are), ``other``, ``unread``; ``skipped``
        (messages of unchanged failures) and ``removed`` (paths gone from the folder).

    Raises
    ------
    LibraryError
        A missing folder, an index of another run, a new index without ``--run``.
    """
    if not folder.is_dir():
        raise LibraryError(f"{folder}: " + ("not a folder" if folder.exists() else "no such folder"))
    state = load_library(out, need=False)
    given = run is not None
    if run is None:
        if state is None:
            raise LibraryError(f"{out} does not exist yet: a new index needs --run RUN (a run folder, e.g. "
                               "cache/pretrained/MTT_musicnn from `python train/pretrained.py MTT_musicnn`)")
        run = Path(state.meta["run"])
    sha = run_sha256(run, "--run" if given else "the index's run")
    if state is not None and state.meta.get("run_sha256") != sha:
        same = Path(state.meta.get("run", "")).resolve() == Path(run).resolve()
        what = f"the run {run} has changed since it was made (its best.pt differs)" if same else \
            f"it was made with the run {state.meta.get('run')} and --run {run} is another network"
        raise LibraryError(f"{out}: {what}; index into another --out, or delete {out} to start over with {run}")
    files, counts = scan(folder)
    files = [(os.path.abspath(p), s, m) for p, s, m in files]
    known = {} if state is None else dict(zip(state.path, zip(state.size.tolist(), state.mtime_ns.tolist())))
    failed = {} if state is None else state.failed
    base = os.path.abspath(folder) + os.sep  # as the paths: a folder reached through a link keeps its name
    here = {p for p, _, _ in files}
    todo, kept, changed, skipped = [], 0, 0, []
    for path, size, mtime in files:
        if known.get(path) == (size, mtime):
            kept += 1
        elif path not in known and failed.get(path, (None, None))[:2] == (size, mtime) and not retry_failed:
            skipped.append(failed[path][2])
        else:
            changed += path in known
            todo.append((path, size, mtime))
    removed = sorted(p for p in [*known, *failed] if p.startswith(base) and p not in here)
    outside = sum(not p.startswith(base) for p in known)
    return state, run, sha, dict(files=len(files), todo=todo, kept=kept, changed=changed, skipped=skipped,
                                 removed=removed, outside=outside, **counts)


# ---------------------------------------------------------------------------------------------
# Search


class Searcher:
    """Exact nearest tracks by cosine similarity, for one query at a time.

    Built once per library (a float32 copy of the centred unit embeddings, as ``eval.recall``
    makes for its search, and the float64 row norms), then each query costs one pass of a
    float32 matrix-vector product over the library, a numba selection of the candidates within
    the proven rounding margin, and the float64 reference cosine of the few candidates.

    Parameters
    ----------
    embedding : np.ndarray [shape=(n, d)]
    chunk : int
        Library rows per product (bounds the temporary scores).
    """

    def __init__(self, embedding: np.ndarray, chunk: int = 65536):
        from eval import _topk, recall

        self._topk, self._recall = _topk, recall
        x = np.ascontiguousarray(embedding, dtype=np.float32)
        n, d = x.shape
        self.x, self.chunk = x, chunk
        # Any centre keeps the search exact (the margin is computed for the centred rows); the mean
        # unit row of a sample makes the margin small, as the mean of all of them does.
        sample = x[:: max(1, n // 65536)].astype(np.float64)
        sn = np.linalg.norm(sample, axis=1, keepdims=True)
        centre = (sample / np.where(sn == 0, np.inf, sn)).mean(axis=0) if n else np.zeros(d)
        self.norms = np.empty(n)
        self.db = np.empty((n, d), np.float32)
        buf = np.empty((min(chunk, n), d))  # float64 in chunks: never a float64 copy of the whole library
        big = 0.0
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            np.copyto(buf[:m], x[s:s + m])
            self.norms[s:s + m] = _topk.row_norms(buf[:m])
            big = max(big, _topk.cosine_operands(buf[:m], self.norms[s:s + m], centre, self.db[s:s + m]))
        self.grow = 1.0 + 4 * (d + 2) * recall._U64  # covers the rounding of computed norms
        self.big = big * self.grow

    def nearest(self, query: np.ndarray, k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` tracks of highest cosine similarity to ``query``, nearest first.

        Parameters
        ----------
        query : np.ndarray [shape=(d,)]
        k : int
        exclude : int
            A row left out (the query's own, when it is a track of the library); -1 for none.

        Returns
        -------
        rows : np.ndarray [shape=(<=k,), dtype=int64]
        cosine : np.ndarray [shape=(<=k,), dtype=float64]
            The reference cosine (float64, summed in dimension order); ties go to the lower row.
        """
        tk = self._topk
        n, d = self.x.shape
        k = min(k, n - (0 <= exclude < n))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0)
        q64 = np.asarray(query, np.float64).reshape(1, d)
        # The float64 norm summed in dimension order, as eval._topk.row_norms; serial on purpose: a
        # numba parallel kernel per query waits some 10 ms for its threads behind BLAS's spinning ones.
        acc = 0.0
        for v in q64[0].tolist():
            acc += v * v
        qn = np.array([np.sqrt(acc)])
        if qn[0] == 0:  # a zero vector has cosine 0 with every track: the first rows, as eval.recall ranks
            rows = np.array([i for i in range(min(n, k + 1)) if i != exclude][:k], np.int64)
            return rows, np.zeros(len(rows))
        q32 = (q64 / qn[0]).astype(np.float32)
        margin = self._recall._margins(tk.COSINE, d, np.where(qn != 0, self.grow, 0.0), self.big, 1.0)
        cap = max(128, 4 * k)
        with threadpool_limits(limits=1, user_api="blas"):  # BLAS's idle threads would spin against numba's
            cand, key, top = self._scan(q32, margin, k, exclude, cap)
        keep = key >= top - margin[0]
        cand = cand[keep]  # increasing rows: ties below go to the lower row
        small = np.vstack([q64, self.x[cand].astype(np.float64)])
        norms = np.concatenate([qn, self.norms[cand]])
        cos = np.array([tk.reference_score(small, norms, 0, j, tk.COSINE) for j in range(1, len(small))])
        pick = np.lexsort((cand, -cos))[:k]  # the reference cosine, ties to the lower row
        return cand[pick], cos[pick]

    def _scan(self, q32, margin, k: int, exclude: int, cap: int):
        """Candidate rows and their keys (approximate cosines) within ``margin`` of the K-th best key, and that key."""
        tk = self._topk
        n = len(self.x)
        rows = np.array([exclude], np.int64)
        while True:  # too many near-ties for the buffer (duplicates): again with a larger one
            top = np.full((1, k), -np.inf)
            key, idx = np.empty((1, cap)), np.empty((1, cap), np.int64)
            count, over = np.zeros(1, np.int64), np.zeros(1, np.bool_)
            sims = np.empty((1, min(self.chunk, n)), np.float32)
            for c0 in range(0, n, self.chunk):
                w = min(self.chunk, n - c0)
                np.matmul(self.db[c0:c0 + w], q32[0], out=sims[0, :w])
                tk.scan_chunk(sims[:, :w], rows, c0, np.zeros(1), np.zeros(1, np.float32), False, margin,
                              np.zeros(1), top, key, idx, count, over)
                if over[0]:
                    break
            if not over[0]:
                return idx[0, :count[0]], key[0, :count[0]], top[0, k - 1]
            cap *= 8


def find_track(lib: Library, query: str) -> int | list[int]:
    """The row of the track named by ``query``, or the rows it matches when it names none or several.

    An exact path wins (the query resolved as a path), then a unique path ending with the query
    (at a folder boundary), then a unique path containing it (case-insensitive); names are compared
    in Unicode's composed form (NFC).
    """
    paths = lib.path
    full = os.path.abspath(query)
    exact = np.flatnonzero(paths == full)
    if len(exact):
        return int(exact[0])
    # by name: in one Unicode form (a typed "café" may be composed where the file system's is not)
    nfc = [unicodedata.normalize("NFC", p) for p in paths]
    query = unicodedata.normalize("NFC", query)
    tail = [i for i, p in enumerate(nfc) if p.endswith(os.sep + query.lstrip(os.sep))]
    if len(tail) == 1:
        return tail[0]
    q = query.lower()
    part = [i for i, p in enumerate(nfc) if q in p.lower()]
    return part[0] if len(part) == 1 else (tail or part)


# ---------------------------------------------------------------------------------------------
# Reading the index: tags and the map


def top_tags(scores: np.ndarray, tags: list[str], n: int) -> list[tuple[str, float]]:
    """The ``n`` highest-scoring ``(tag, score)`` of one track, highest first (ties: tag order)."""
    order = np.argsort(-scores, kind="stable")[:n]
    return [(tags[i], float(scores[i])) for i in order]


def tag_column(lib: Library, name: str) -> int:
    """The column of tag ``name`` (case-insensitive); an unknown tag lists the close names."""
    import difflib

    tags = lib.tags
    if not tags:
        raise LibraryError(f"the index's run ({lib.meta.get('run')}, a {lib.meta.get('task')} run without a tag "
                           "layer) gives no tag scores")
    low = [t.lower() for t in tags]
    if not name.strip():
        raise LibraryError(f"no tag given; the run's tags: {', '.join(tags)}")
    if name.lower() in low:
        return low.index(name.lower())
    close = difflib.get_close_matches(name.lower(), low, n=6, cutoff=0.7)
    close += [t for t in low if name.lower() in t and t not in close]
    hint = f"close: {', '.join(tags[low.index(t)] for t in close)}" if close else f"the run's tags: {', '.join(tags)}"
    raise LibraryError(f"unknown tag {name!r}; {hint}")


def plot_map(lib: Library, out: Path, query=None, neighbours=(), title: str = "", legend: int = 10) -> dict:
    """A 2-D map of the library: PCA of the unit embeddings, each track a dot coloured by its top tag.

    Parameters
    ----------
    lib : Library
    out : Path
        The PNG to write (atomically).
    query : np.ndarray [shape=(dim,)], optional
        An embedding to mark (a star), projected like the tracks.
    neighbours : sequence of int
        Rows to ring (the query's nearest tracks).
    title : str
    legend : int
        The most frequent top tags get a colour and a legend entry; the others are grey.

    Returns
    -------
    dict
        ``explained``: the variance share of the two axes; ``legend``: the tags coloured.
    """
    from sklearn.decomposition import PCA

    from train.plots import plt, save_figure  # pyplot with matplotlib's file-only back-end set

    def unit(x):
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n != 0)

    x = unit(lib.embedding.astype(np.float64))
    pca = PCA(2, random_state=0).fit(x) if len(x) > 2 else None
    xy = pca.transform(x) if pca is not None else np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
    fig, ax = plt.subplots(figsize=(9, 7))
    size = float(np.clip(3000 / max(len(x), 1), 1, 30))
    shown = []
    if lib.tags and len(lib):
        top = np.argmax(lib.scores, axis=1)
        counts = np.bincount(top, minlength=len(lib.tags))
        shown = [int(t) for t in np.argsort(-counts, kind="stable")[:legend] if counts[t]]
        rest = ~np.isin(top, shown)
        ax.scatter(*xy[rest].T, s=size, c="lightgrey", lw=0, label=f"other top tags ({int(rest.sum())})")
        # tab10 without its grey (the others' colour), then tab20's light ones for a long legend.
        colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7] + ["navy"]
        colours += [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
        for j, t in enumerate(shown):
            m = top == t
            ax.scatter(*xy[m].T, s=size, color=colours[j % len(colours)], lw=0, label=f"{lib.tags[t]} ({int(m.sum())})")
    else:
        ax.scatter(*xy.T, s=size, c="tab:blue", lw=0, label=f"tracks ({len(x)}; the run gives no tag scores)")
    nb = np.asarray(list(neighbours), np.int64)
    if len(nb):
        ax.scatter(*xy[nb].T, s=90, facecolors="none", edgecolors="black", lw=1.2, label="nearest tracks")
    if query is not None:
        q = unit(np.asarray(query, np.float64)[None])
        qxy = pca.transform(q) if pca is not None else np.pad(q[:, :2], ((0, 0), (0, max(0, 2 - q.shape[1]))))
        for i in nb:
            ax.plot([qxy[0, 0], xy[i, 0]], [qxy[0, 1], xy[i, 1]], color="black", lw=0.6, alpha=0.6)
        ax.scatter(*qxy.T, s=260, marker="*", color="red", edgecolors="black", lw=0.8, zorder=5, label="query")
    explained = pca.explained_variance_ratio_.tolist() if pca is not None else [float("nan")] * 2
    axes = (f"PC 1 ({100 * explained[0]:.0f}% of the variance)", f"PC 2 ({100 * explained[1]:.0f}%)") \
        if pca is not None else ("embedding dimension 1", "embedding dimension 2")  # 2 tracks or fewer: no PCA
    ax.set(xlabel=axes[0], ylabel=axes[1],
           title=title or f"Library map: {len(x)} track{'s' if len(x) != 1 else ''}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=max(1.0, 20 / size) ** 0.5,
              title="top tag" if shown else None)
    ax.grid(alpha=0.25)
    save_figure(fig, out)
    return {"explained": explained, "legend": [lib.tags[t] for t in shown]}
