"""Your own music library: tag every track with a run's network, then find the tracks that sound alike.

    python train/library.py index FOLDER --run RUN [--out cache/library.h5] [--device auto|cpu|cuda]
    python train/library.py similar QUERY [--k 10] [--json]       # QUERY: a track (or part of its path), or any file
    python train/library.py tag ambient [--k 10] [--json]         # the tracks scoring highest on a tag
    python train/library.py export out.csv [--top 5]              # every track's top tags
    python train/library.py map out.png [--query TRACK]           # a 2-D map of the library

``index`` decodes every audio file under FOLDER that the decoder reads (MP3, WAV, FLAC, OGG, ...,
any rate, mono or stereo) in worker processes, runs it through the run's network as
``train/tag.py`` does (the run's front-end and standardisation, its non-overlapping crops, a
shorter file padded to one crop) and stores per track its path, size, modification time,
duration, the clip-level tag scores (the mean over the crops) and one embedding (the mean over
the crops of a metric run's output, of a tagging run's penultimate layer, or of a pretrained
run's; as ``train/embed.py``). Crops of several tracks share a forward pass of ``--batch`` crops,
and a long track is cut into such batches too, so memory does not grow with the length of a
track beyond its decoded audio and features: a 10-minute stereo MP3 peaks at 0.6 GB with musicnn
(``train/tag.py``, all crops in one pass: 3.9 GB).

A re-run adds new files, drops deleted ones, redoes changed ones (size or modification time) and
keeps the rest; files that failed stay listed and are retried only when they change (or with
``--retry-failed``). Progress goes to a journal beside the index every ``--checkpoint`` seconds,
so a killed run continues where it was; Ctrl-C folds what was done into the index. The index
records its run (the SHA-256 of ``best.pt``) and refuses another. The file format and the
journal are described in ``train/library_store.py``.

Search is exact: cosine similarity over all tracks (also for a metric run trained with
``--distance euclidean``, whose own Recall@K is Euclidean), with the numba kernels of ``eval/_topk.py``
(a float32 matrix-vector product proposes the candidates within a proven rounding margin, the
float64 reference cosine ranks them). A query reads a float32 copy of the embeddings once: on 2
CPU cores 4 ms for 25,000 tracks and 70 ms for 1,000,000 (200 dimensions), after about 2.5 s per
million tracks to read the index and build that copy, so the ``similar`` command takes 1.1 s
and 3.1 s from a cold start (``bench/bench_library.py``). An approximate index (faiss IVF or
HNSW, hnswlib) pays when one loaded index answers many queries (a service; all tracks'
neighbours at once, N exact queries of O(N D) each), when a query must take about a millisecond
at a million tracks, or from some 10 million tracks on, where an exact query reads gigabytes
(0.7 s) and its two float32 copies need 16 GB; it then finds most, not all, of the true
neighbours, and costs minutes of building per million tracks.
"""
from __future__ import annotations

import argparse
import collections
import csv
import io
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from data.audio import AudioError, load_audio
from data.cli import HelpFormatter
from data.files import output_error, write_atomically
from train.library_store import (DEFAULT_INDEX, Library, LibraryError, Searcher, clear_journal, find_track,
                                 index_lock, journal_dir, load_library, plan, plot_map, run_sha256, tag_column,
                                 top_tags, write_index, write_part)
from train.runfolder import RunError

#: Default crops per forward pass on the CPU and on a GPU: on 2 cores musicnn's time per crop is
#: flat from 8 to 64 crops while its memory grows with them; a GPU wants large batches.
BATCH = (16, 128)


class Embedder:
    """A run's network as the library uses it: audio in, per-crop embeddings and tag scores out.

    Parameters
    ----------
    run : Path
        Any finished run folder: tagging, metric, or pretrained (``train/pretrained.py``).
    device : str or torch.device
    batch : int, optional
        Crops per forward pass, whatever the tracks' lengths; default ``BATCH`` for the device.

    Attributes
    ----------
    tags : list of str
        Names of the tag scores; empty for a metric run without a tag layer.
    frames : int
        Crop length in frames.
    kind : str
        What the embedding is.
    """

    def __init__(self, run: Path, device="cpu", batch: int | None = None):
        import torch

        from features.frontend import FrontEnd
        from features.params import FeatureParams
        from train.runfolder import best_model, load_best

        run = Path(run)
        if not (run / "config.json").is_file():
            raise RunError(f"--run {run}: no config.json there; train a run with train/run.py or make one "
                           "with `python train/pretrained.py MTT_musicnn`")
        task = json.loads((run / "config.json").read_text()).get("task", "tagging")
        cfg, ckpt = load_best(run, device, task)
        self.device, self.task = torch.device(device), task
        self.batch = batch or BATCH[self.device.type == "cuda"]
        self.params = FeatureParams.from_dict(cfg["feature_params"])
        self.frontend = FrontEnd(cfg["inputs"], self.params).to(self.device)
        n_mels = self.params.n_mels if "mel" in cfg["inputs"] else 0
        self.model = best_model(run, cfg, ckpt, self.frontend.n_bins(), n_mels, self.device, on=" for the library")
        self.mean = torch.as_tensor(np.asarray(ckpt["mean"], np.float32), device=self.device)[:, None]
        self.std = torch.as_tensor(np.asarray(ckpt["std"], np.float32), device=self.device)[:, None]
        self.frames = int(cfg["frames"])
        # forward(x) is head(embed(x)) for tagging networks; a metric network may carry a tag layer.
        self.head = self.model.head if task == "tagging" else getattr(self.model, "tag_head", None)
        self.tags = list(cfg["tags"]) if self.head is not None else []
        self.kind = ("the metric network's output" if task == "metric" else
                     "the penultimate layer" + (" (musicnn's)" if cfg.get("pretrained") else ""))

    def features(self, y: np.ndarray):
        """Standardised features of one waveform, ``(bins, frames)``, padded to at least one crop."""
        import torch

        with torch.inference_mode():
            out = self.frontend(torch.from_numpy(y)[None].to(self.device))
            x = torch.cat([out[f][0] for f in self.frontend.features], dim=1).T
            x = (x - self.mean) / self.std
            if x.shape[1] < self.frames:  # as train/tag.py: pad with the training mean (0 once standardised)
                x = torch.nn.functional.pad(x, (0, self.frames - x.shape[1]))
            return x

    def forward(self, crops):
        """Embeddings ``(B, dim)`` and sigmoid tag scores ``(B, tags)`` (or ``None``) of a batch of crops."""
        import torch

        with torch.inference_mode():
            if self.task == "tagging":
                emb = self.model.embed(crops)
            else:
                emb = self.model(crops)
            scores = torch.sigmoid(self.head(emb)) if self.head is not None else None
            return emb.float(), scores

    def embed_file(self, path) -> tuple[np.ndarray, np.ndarray, float]:
        """Embedding, tag scores and duration (s) of one audio file; raises ``AudioError``."""
        y = load_audio(path, sr=self.params.sr)
        batcher = Batcher(self)
        batcher.add(0, self.features(y))
        (_, emb, scores, _), = batcher.run(flush=True)
        return emb, scores, len(y) / self.params.sr


class Batcher:
    """Crops of many tracks, run through the network ``embedder.batch`` at a time.

    A track's crops are its non-overlapping crops from frame 0 (``train.feed.chunk_starts``); its
    outputs are summed as batches come back and averaged once its last crop is done. Only the
    features of tracks with crops still waiting are held, and a forward pass never sees more
    than ``batch`` crops.
    """

    def __init__(self, embedder: Embedder):
        self.emb = embedder
        self.waiting = collections.deque()  # (track key, crop start)
        self.tracks = {}  # key -> [features, n crops, done, embedding sum, score sum]
        self.forward_sizes = []  # crops per forward pass (the tests check the bound)

    def add(self, key, x) -> None:
        from train.feed import chunk_starts

        starts = chunk_starts(int(x.shape[1]), self.emb.frames)
        self.tracks[key] = [x, len(starts), 0, 0.0, 0.0]
        self.waiting.extend((key, int(s)) for s in starts)

    def run(self, flush: bool = False) -> list[tuple]:
        """Run every full batch (and the last partial one with ``flush``).

        Returns
        -------
        list of (key, embedding, scores, n_crops)
            The tracks finished, embedding float32 ``(dim,)``, scores float32 ``(tags,)``.
        """
        import torch

        done, f = [], self.emb.frames
        while len(self.waiting) >= self.emb.batch or (flush and self.waiting):
            take = [self.waiting.popleft() for _ in range(min(self.emb.batch, len(self.waiting)))]
            crops = torch.stack([self.tracks[k][0][:, s:s + f] for k, s in take])
            self.forward_sizes.append(len(take))
            emb, scores = self.emb.forward(crops)
            emb = emb.cpu().numpy().astype(np.float64)
            scores = scores.cpu().numpy().astype(np.float64) if scores is not None else np.zeros((len(take), 0))
            for j, (k, _) in enumerate(take):
                t = self.tracks[k]
                t[2] += 1
                t[3] = t[3] + emb[j]
                t[4] = t[4] + scores[j]
                if t[2] == t[1]:
                    del self.tracks[k]
                    done.append((k, (t[3] / t[1]).astype(np.float32), (t[4] / t[1]).astype(np.float32), t[1]))
        return done


def _init_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    # The MP3 decoder prints its own notes on a bad file; the one line per file is ours.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def _decode(task):
    """``(path, waveform or None, error or None)``, in a worker process: decoding is the CPU cost."""
    path, sr = task
    try:
        return path, load_audio(path, sr=sr), None
    except AudioError as exc:
        return path, None, str(exc)
    except Exception as exc:  # noqa: BLE001  a bad file must never stop the job
        return path, None, f"{path}: cannot be decoded ({type(exc).__name__}: {exc})"


def _bounded(pool, tasks, ahead: int):
    """``pool.imap(_decode, tasks)`` with at most ``ahead`` decoded tracks in flight (memory)."""
    it = iter(tasks)
    flight = collections.deque(pool.apply_async(_decode, (t,)) for t in itertools.islice(it, ahead))
    while flight:
        result = flight.popleft().get()
        for t in itertools.islice(it, 1):
            flight.append(pool.apply_async(_decode, (t,)))
        yield result


def index_folder(folder, run=None, out=DEFAULT_INDEX, device="auto", workers: int | None = None,
                 batch: int | None = None, checkpoint: float = 30.0, retry_failed: bool = False,
                 quiet: bool = False) -> dict:
    """Index (or update the index of) every audio file under ``folder``; return the run's statistics.

    Parameters
    ----------
    folder : path
    run : path, optional
        The run folder; default the index's own (required for a new index).
    out : path
        The index file.
    device : {'auto', 'cpu', 'cuda'}
    workers : int, optional
        Decoding processes; default all cores but one (at least one); 0 decodes in this process.
    batch : int, optional
        Crops per forward pass; default ``BATCH`` for the device.
    checkpoint : float
        Seconds between two writes of the journal (0: after every batch).
    retry_failed : bool
        Decode again the files that failed before and have not changed.
    quiet : bool
        No progress bar (failures are still reported on stderr).

    Returns
    -------
    dict
        Counts (``new``, ``changed``, ``kept``, ``removed``, ``failed`` with the messages, ...),
        ``tracks`` in the index, ``indexed`` this run, ``seconds``, ``tracks_per_s``, ``interrupted``.

    Raises
    ------
    LibraryError
        For a missing folder, an index of another run, an unusable run.
    KeyboardInterrupt
        Only when a second Ctrl-C stops the final write (the journal keeps the work).
    """
    t_start = time.time()
    folder, out = Path(folder), Path(out)
    state, run, sha, todo = plan(folder, out, None if run is None else Path(run), retry_failed)
    tasks = todo.pop("todo")
    stats = dict(todo, index=str(out), folder=str(folder), run=str(run), new=len(tasks) - todo["changed"],
                 failed=[], indexed=0, interrupted=False, seconds=0.0, audio_seconds=0.0, tracks_per_s=0.0, left=0,
                 device=None, workers=0)
    if not tasks and not todo["removed"] and state is not None and not journal_dir(out).is_dir():
        stats.update(tracks=len(state), startup=time.time() - t_start, size_mib=out.stat().st_size / 2 ** 20)
        return stats
    new_libs = []
    if tasks or state is None:
        import multiprocessing as mp

        from features.frontend import pick_device
        from train.tag import describe

        n_workers = (max(1, (os.cpu_count() or 1) - 1) if workers is None else workers) if len(tasks) > 1 else 0
        # Forked before the network loads: the workers only decode, and share nothing of it.
        pool = mp.get_context("fork").Pool(n_workers, initializer=_init_worker) if n_workers else None
        try:
            dev = pick_device(device)
            emb = Embedder(run, dev, batch)
            meta = {"run": str(Path(run).resolve()), "run_sha256": sha, "task": emb.task,
                    "model": emb.model.__class__.__name__, "embedding": emb.kind, "tags": emb.tags,
                    "tagger": describe(Path(run))[1]}
            state = state or Library.empty(meta, len(emb.tags))
            state.meta.update(meta)
            stats.update(device=str(dev), workers=n_workers, startup=time.time() - t_start)
            new_libs = _index_tracks(emb, tasks, state.meta, out, pool, checkpoint, quiet, stats)
        except RunError as exc:
            raise LibraryError(str(exc)) from exc
        finally:
            if pool:
                pool.terminate()
    final = state.merged(new_libs, drop=todo["removed"])
    write_index(out, final)
    clear_journal(out)
    stats.update(tracks=len(final), size_mib=out.stat().st_size / 2 ** 20)
    stats.setdefault("startup", time.time() - t_start)
    return stats


def _index_tracks(emb: Embedder, tasks, meta: dict, out: Path, pool, checkpoint: float, quiet: bool,
                  stats: dict) -> list[Library]:
    """Decode (in ``pool``'s processes, or here), embed and journal ``tasks``; the journal parts written.

    Ctrl-C stops it with what was finished kept (``stats['interrupted']``); the tracks whose crops
    were still in the batcher are redone by the next run.
    """
    from tqdm import tqdm

    stat = {p: (s, m) for p, s, m in tasks}
    jobs = [(p, emb.params.sr) for p, _, _ in tasks]
    results = _bounded(pool, jobs, 2 * stats["workers"]) if pool else map(_decode, jobs)
    batcher, durations, new_libs = Batcher(emb), {}, []
    fresh, failed, last = [], {}, time.monotonic()
    t0 = time.time()

    def write(force=False):
        nonlocal fresh, failed, last
        if (fresh or failed) and (force or time.monotonic() - last >= checkpoint):
            lib = _as_library(fresh, failed, stat, durations, meta, len(emb.tags))
            write_part(out, lib)
            new_libs.append(lib)
            fresh, failed, last = [], {}, time.monotonic()

    def fail(path, msg):
        failed[path] = msg
        stats["failed"].append(msg)
        bar.write(f"skipped: {msg}", file=sys.stderr)
        bar.update(1)

    bar = tqdm(total=len(tasks), unit="track", desc="index", disable=quiet, dynamic_ncols=True, file=sys.stderr)
    try:
        for path, y, err in results:
            if err is not None:
                fail(path, err)
            else:
                durations[path] = len(y) / emb.params.sr
                try:
                    batcher.add(path, emb.features(y))
                except (RuntimeError, ValueError) as exc:  # a track the front-end cannot take
                    fail(path, f"{path}: cannot be featurised ({exc})")
            del y
            finished = batcher.run()
            fresh += finished
            bar.update(len(finished))
            bar.set_postfix(failed=len(stats["failed"]), refresh=False)
            write()
        finished = batcher.run(flush=True)
        fresh += finished
        bar.update(len(finished))
    except KeyboardInterrupt:
        stats["interrupted"] = True
    finally:
        bar.close()
    write(force=True)
    seconds = time.time() - t0
    done = [p for lib in new_libs for p in lib.path]
    stats.update(indexed=len(done), seconds=seconds, tracks_per_s=len(done) / max(seconds, 1e-9),
                 audio_seconds=float(sum(durations[p] for p in done)),
                 left=len(tasks) - len(done) - len(stats["failed"]),
                 forward_passes=len(batcher.forward_sizes), largest_pass=max(batcher.forward_sizes, default=0))
    return new_libs


def _as_library(done, failed, stat, durations, meta, n_tags) -> Library:
    """The tracks ``done`` (``(path, embedding, scores, n_crops)``) and ``failed`` as a journal part."""
    lib = Library.empty(meta, n_tags)
    if done:
        paths = [d[0] for d in done]
        lib = Library(np.array(paths, dtype=object), np.array([stat[p][0] for p in paths], np.int64),
                      np.array([stat[p][1] for p in paths], np.int64),
                      np.array([durations[p] for p in paths], np.float32), np.array([d[3] for d in done], np.int32),
                      np.stack([d[2] for d in done]).astype(np.float32), np.stack([d[1] for d in done]),
                      {}, dict(meta))
    lib.failed = {p: (*stat[p], e) for p, e in failed.items()}
    return lib


# ---------------------------------------------------------------------------------------------
# Commands


def summary_lines(s: dict) -> list[str]:
    """The one-screen summary of an index run."""
    lines = ["", f"index      {s['index']}  ({s['tracks']} tracks, {s.get('size_mib', 0):.1f} MiB)  run {s['run']}"]
    extra = [f"{s['other']} other files ignored"] if s["other"] else []
    extra += [f"{n} {suf} files the decoder cannot read" for suf, n in sorted(s["unread"].items())]
    if s.get("badname"):
        extra.append(f"{len(s['badname'])} whose names are not UTF-8, left out (rename them), e.g. {s['badname'][0]}")
    lines.append(f"scanned    {s['folder']}: {s['files']} audio files" + (f" ({'; '.join(extra)})" if extra else ""))
    lines.append(f"indexed    {s['indexed']} of {s['new'] + s['changed']} to do "
                 f"({s['new']} new, {s['changed']} changed)"
                 f"   kept {s['kept']} unchanged   removed {len(s['removed'])} deleted"
                 + (f"   {s['outside']} of other folders left as they are" if s["outside"] else ""))
    fails = [*s["failed"], *s["skipped"]]
    if fails:
        lines.append(f"failed     {len(s['failed'])} this run, {len(s['skipped'])} earlier and unchanged "
                     "(not retried; --retry-failed retries them):")
        lines += [f"             {m}" for m in fails[:10]]
        if len(fails) > 10:
            lines.append(f"             ... and {len(fails) - 10} more (--json lists them all)")
    if s["indexed"] or s["failed"]:
        lines.append(f"time       {s['indexed']} tracks in {s['seconds']:.1f} s = {s['tracks_per_s']:.2f} tracks/s "
                     f"({s['audio_seconds'] / max(s['seconds'], 1e-9):.0f}x real time) on {s['device']}, "
                     f"{s['workers']} decoding worker{'s' if s['workers'] != 1 else ''}; start-up {s['startup']:.1f} s")
    elif s["files"]:
        lines.append("time       nothing to index: every file is in the index already"
                     + (", or failed before and is unchanged" if s["skipped"] else ""))
    else:
        lines.append("time       nothing to index: no audio file (MP3, WAV, FLAC, OGG) under the folder")
    if s["interrupted"]:
        lines.append(f"stopped    by Ctrl-C: the {s['indexed']} tracks done are kept in the index; run the same "
                     f"command again to index the {s['left']} left")
    return lines


def _tag_text(pairs) -> str:
    return ", ".join(f"{t} {s:.2f}" for t, s in pairs)


def resolve_query(lib: Library, query: str, device: str = "auto"):
    """The embedding, scores and library row (-1 for a file outside it) of ``QUERY``.

    A file on disk that is a track of the index is that track; any other file is decoded and
    embedded with the index's run; otherwise ``query`` must name one track by part of its path.

    Raises
    ------
    LibraryError
        A file the decoder cannot read, an ambiguous or unknown name, a run that changed.
    """
    if os.path.isfile(query) or os.path.isdir(query):
        row = find_track(lib, os.path.abspath(query))
        if isinstance(row, int) and lib.path[row] == os.path.abspath(query):
            return lib.embedding[row], lib.scores[row], row
        run = Path(lib.meta["run"])
        if run_sha256(run, "the index's run") != lib.meta["run_sha256"]:
            raise LibraryError(f"the index's run {run} has changed since the index was made (its best.pt differs); "
                               "a new file cannot be embedded like the tracks: index again into a new --out")
        from features.frontend import pick_device

        try:
            emb, scores, _ = Embedder(run, pick_device(device)).embed_file(query)
        except AudioError as exc:
            raise LibraryError(f"QUERY {exc}") from exc
        except RunError as exc:
            raise LibraryError(str(exc)) from exc
        return emb, scores, -1
    row = find_track(lib, query)
    if isinstance(row, int):
        return lib.embedding[row], lib.scores[row], row
    if not row:
        raise LibraryError(f"QUERY {query!r}: no such file, and no track of the index has it in its path")
    shown = "\n  ".join(lib.path[i] for i in row[:20])
    more = f"\n  ... and {len(row) - 20} more" if len(row) > 20 else ""
    raise LibraryError(f"QUERY {query!r} is ambiguous: {len(row)} tracks match; give more of the path:"
                       f"\n  {shown}{more}")


def cmd_similar(a) -> int:
    lib = load_library(a.index)
    if not len(lib):
        raise LibraryError(f"{a.index}: the index holds no track yet")
    q_emb, q_scores, row = resolve_query(lib, a.query, a.device)
    t0 = time.perf_counter()
    rows, cos = Searcher(lib.embedding).nearest(q_emb, a.k, exclude=row)
    seconds = time.perf_counter() - t0
    tags = lib.tags
    qname = lib.path[row] if row >= 0 else os.path.abspath(a.query)
    if a.json:
        out = {"query": {"path": qname, "in_index": row >= 0, "tags": dict(top_tags(q_scores, tags, a.tags))},
               "index": str(a.index), "run": lib.meta["run"], "distance": "cosine", "seconds": round(seconds, 4),
               "neighbours": [{"rank": r + 1, "path": lib.path[i], "distance": max(float(1 - c), 0.0),
                               "cosine": float(c), "duration": float(lib.duration[i]),
                               "tags": dict(top_tags(lib.scores[i], tags, a.tags))}
                              for r, (i, c) in enumerate(zip(rows, cos))]}
        print(json.dumps(out, indent=1))
        return 0
    where = "a track of the index" if row >= 0 else "a new file, embedded with the index's run"
    print(f"query  {qname}  ({where})" + (f"\n       {_tag_text(top_tags(q_scores, tags, a.tags))}" if tags else ""))
    print(f"{len(rows)} nearest of {len(lib)} tracks by cosine distance:")
    for r, (i, c) in enumerate(zip(rows, cos)):
        line = f"{r + 1:>4}  {max(1 - c, 0.0):.4f}  {lib.path[i]}"  # a copy's 1 - cos rounds to -0.0000
        print(line + (f"\n            {_tag_text(top_tags(lib.scores[i], tags, a.tags))}" if tags else ""))
    return 0


def cmd_tag(a) -> int:
    lib = load_library(a.index)
    t = tag_column(lib, a.tag)
    order = np.argsort(-lib.scores[:, t], kind="stable")[: a.k]
    if a.json:
        print(json.dumps({"tag": lib.tags[t], "index": str(a.index), "tracks": [
            {"rank": r + 1, "path": lib.path[i], "score": float(lib.scores[i, t]),
             "tags": dict(top_tags(lib.scores[i], lib.tags, 3))} for r, i in enumerate(order)]}, indent=1))
        return 0
    print(f"{len(order)} tracks of {len(lib)} scoring highest on {lib.tags[t]!r}:")
    for r, i in enumerate(order):
        print(f"{r + 1:>4}  {lib.scores[i, t]:.3f}  {lib.path[i]}")
    return 0


def cmd_export(a) -> int:
    lib = load_library(a.index)
    tags = lib.tags
    buf = io.StringIO()
    w = csv.writer(buf)
    n = min(a.top, len(tags))
    head = ["path", "duration_s"] + [c for i in range(1, n + 1) for c in (f"tag_{i}", f"score_{i}")]
    w.writerow(head + (list(tags) if a.all else []))
    for i in range(len(lib)):
        pairs = top_tags(lib.scores[i], tags, n)
        w.writerow([lib.path[i], f"{lib.duration[i]:.2f}"] + [v for t, s in pairs for v in (t, f"{s:.4f}")]
                   + ([f"{s:.4f}" for s in lib.scores[i]] if a.all else []))
    write_atomically(a.out, buf.getvalue())
    what = (f"top {n} tags each" + (f" and all {len(tags)} scores" if a.all else "") if tags else
            "paths and durations only (the index's run gives no tag scores)")
    print(f"{a.out}: {len(lib)} tracks, {what}")
    return 0


def cmd_map(a) -> int:
    lib = load_library(a.index)
    if not len(lib):
        raise LibraryError(f"{a.index}: the index holds no track yet")
    query, nb, title = None, (), f"{len(lib)} tracks of {a.index}, {lib.meta.get('embedding')} of {lib.meta.get('run')}"
    if a.query:
        query, _, row = resolve_query(lib, a.query, a.device)
        nb, _ = Searcher(lib.embedding).nearest(query, a.k, exclude=row)
        title += f"\nquery: {lib.path[row] if row >= 0 else a.query} and its {len(nb)} nearest"
    info = plot_map(lib, a.out, query, nb, title=title, legend=a.legend)
    where = "on the first two principal components " \
        f"({100 * sum(info['explained']):.0f}% of the variance)" if len(lib) > 2 else "on two embedding dimensions"
    print(f"{a.out}: {len(lib)} track{'s' if len(lib) != 1 else ''} {where}"
          + (f", coloured by top tag ({', '.join(info['legend'])})" if info["legend"] else "")
          + (f"; the query and its {len(nb)} nearest marked" if a.query else ""))
    return 0


def cmd_index(a) -> int:
    if not a.folder.is_dir():  # before the lock: a typo leaves nothing behind
        raise LibraryError(f"{a.folder}: " + ("not a folder" if a.folder.exists() else "no such folder"))
    with index_lock(a.out):
        stats = index_folder(a.folder, a.run, a.out, a.device, a.workers, a.batch, a.checkpoint, a.retry_failed,
                             a.quiet or a.json)
    if a.json:
        print(json.dumps(stats, indent=1, default=str))
    else:
        print("\n".join(summary_lines(stats)))
    return 130 if stats["interrupted"] else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python train/library.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter,
                                epilog="Every command has --help. The index format: train/library_store.py.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, description):
        sp = sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
        sp.set_defaults(func=func)
        return sp

    def index_arg(sp):
        sp.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="the library index (made by `index`)")

    def device_arg(sp, what):
        sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help=f"where the network runs{what}; auto takes the GPU when there is one")

    sp = command("index", cmd_index, "tag and embed every audio file under a folder (incremental, resumable)",
                 "Decode every audio file under FOLDER (MP3, WAV, FLAC, OGG, ...; any rate, mono or stereo) in worker "
                 "processes, run it through the run's network in batches of crops and store its tag scores and "
                 "embedding. A re-run adds new files, drops deleted ones, redoes changed ones and keeps the rest; a "
                 "killed run continues where it was; Ctrl-C keeps what was done. Bad files are reported and skipped.")
    sp.add_argument("folder", type=Path, metavar="FOLDER", help="folder to index, searched recursively")
    sp.add_argument("--run", type=Path, default=None,
                    help="run folder: a tagging or metric run of train/run.py, or a pretrained one "
                         "(train/pretrained.py MTT_musicnn); default the index's own run, required for a new index")
    sp.add_argument("--out", type=Path, default=DEFAULT_INDEX, help="the index file (created or updated)")
    device_arg(sp, "")
    sp.add_argument("--workers", type=int, default=None,
                    help="decoding processes; default all cores but one (at least 1); 0 decodes in this process")
    sp.add_argument("--batch", type=int, default=None,
                    help=f"crops per forward pass, whatever the tracks' lengths; default {BATCH[0]} on the CPU "
                         f"(musicnn: some 13 MB of activations per crop), {BATCH[1]} on a GPU")
    sp.add_argument("--checkpoint", type=float, default=30.0,
                    help="seconds between two writes of the progress journal (what a killed run keeps)")
    sp.add_argument("--retry-failed", action="store_true",
                    help="decode again the files that failed before, even when they have not changed")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = command("similar", cmd_similar, "the tracks that sound most like a track or an audio file",
                 "Print the K tracks nearest to QUERY by cosine distance of their embeddings (exact search), with "
                 "their top tags. QUERY is a track of the index (its path, or a part of it that only one track's "
                 "path has) or any other audio file, which is embedded on the fly with the index's run. The query "
                 "itself is left out.")
    sp.add_argument("query", metavar="QUERY",
                    help="a track of the index (path or a unique part of it), or an audio file")
    sp.add_argument("--k", type=int, default=10, help="tracks to print")
    sp.add_argument("--tags", type=int, default=3, help="top tags printed per track")
    sp.add_argument("--json", action="store_true", help="print JSON: the query and its neighbours with distances")
    index_arg(sp)
    device_arg(sp, " for a QUERY outside the index")

    sp = command("tag", cmd_tag, "the tracks scoring highest on a tag",
                 "Print the K tracks of the index with the highest clip-level score on TAG (one of the run's tags, "
                 "any case; an unknown name lists the close ones).")
    sp.add_argument("tag", metavar="TAG", help="a tag of the index's run, e.g. ambient")
    sp.add_argument("--k", type=int, default=10, help="tracks to print")
    sp.add_argument("--json", action="store_true", help="print JSON")
    index_arg(sp)

    sp = command("export", cmd_export, "every track's top tags to a CSV file",
                 "Write one CSV row per track: path, duration, and its top tags with their scores "
                 "(with --all, also one column per tag).")
    sp.add_argument("out", type=Path, metavar="OUT.csv", help="the CSV file to write")
    sp.add_argument("--top", type=int, default=5, help="top tags per track")
    sp.add_argument("--all", action="store_true", help="also every tag's score, one column per tag")
    index_arg(sp)

    sp = command("map", cmd_map, "a 2-D picture of the library (PCA), coloured by top tag",
                 "Draw every track on the first two principal components of its unit embedding, coloured by its "
                 "top tag (the most frequent top tags in the legend, the others grey); with --query, the query (a "
                 "star) and its K nearest tracks (ringed).")
    sp.add_argument("out", type=Path, metavar="OUT.png", help="the PNG to write")
    sp.add_argument("--query", default=None, metavar="TRACK", help="a track or audio file to mark, as for `similar`")
    sp.add_argument("--k", type=int, default=10, help="nearest tracks marked with --query")
    sp.add_argument("--legend", type=int, default=10, help="top tags given a colour")
    index_arg(sp)
    device_arg(sp, " for a --query outside the index")
    return p


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("k", "batch", "top", "legend", "tags"):
        lo = 0 if name == "tags" else 1
        if getattr(a, name, None) is not None and getattr(a, name) < lo:
            p.error(f"--{name} must be at least {lo}, got {getattr(a, name)}")
    if getattr(a, "workers", None) is not None and a.workers < 0:
        p.error(f"--workers must be 0 or more, got {a.workers}")
    if a.command in ("export", "map") and (error := output_error(a.out)):
        p.error(error)
    if a.command == "index" and (error := output_error(a.out, "--out", parents=True)):  # before hours of work
        p.error(error)
    if getattr(a, "device", None) == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available here; use --device auto or cpu")
    try:
        return a.func(a)
    except LibraryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if a.command == "index":
            print(f"interrupted: {a.out} and its progress journal ({journal_dir(a.out)}) keep the work done; run "
                  "the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
