"""The extraction engine: decode in worker processes, featurise in batches, write behind.

One pipeline serves the CPU and the GPU, built from torch's own machinery:

- :class:`ClipSource`, a ``Dataset`` of clips: item ``row`` is that clip decoded (cut to
  ``--max-seconds``) with its augmented versions rendered; a bad clip is an item that carries its
  error, never an exception;
- a ``DataLoader`` over it, whose ``batch_sampler`` is the planned batches (fixed clip ranges,
  :func:`plan_batches`, so a resumed run computes exactly the batches an uninterrupted one would)
  and whose worker processes also run the ``collate_fn``, :class:`Batcher`. On the CPU the
  Batcher computes the batch's features, one clip at a time (:func:`featurize_clips`), and its
  rhythm statistics in the worker (one torch thread each); for the GPU it pads the batch into one
  tensor. Either way a batch crosses to this
  process as a few shared-memory tensors, not a pickled copy per clip, into pinned memory on CUDA;
- this process moves a padded batch to the GPU (non-blocking), runs the front-end there and starts
  the copy back; :class:`WriteBehind`, a thread, waits for the copy, computes what is left (the
  rhythm statistics of GPU batches), and writes to the HDF5 file, while the next batch computes.

What stays in this process per batch is a handful of tensor calls, so on a many-core machine the
decoders and the GPU set the pace. Batches are bounded by clips and by padded frames (the
frames of ``batch_seconds`` of audio per clip slot), so long songs never make one batch hold
gigabytes; on the CPU a batch holds at most ``ceil(clips / workers)`` clips, so a small job still
gives every worker work.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.audio import SR, AudioError, load_audio
from pipeline import store


def plan_batches(rooms: np.ndarray, batch: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive clip ranges ``[start, end)`` for the front-end.

    A range holds at most ``batch`` clips and, padded to its longest clip, at most ``budget``
    frames (a clip longer than that gets a range of its own), so long songs never make one batch
    hold gigabytes. Ranges depend on the stored rooms only, so a resumed run repeats them.
    """
    out, start, longest = [], 0, 0
    for i, r in enumerate(np.asarray(rooms, np.int64)):
        longest_with = max(longest, int(r))
        if i > start and (i - start + 1 > batch or (i - start + 1) * longest_with > budget):
            out.append((start, i))
            start, longest_with = i, int(r)
        longest = longest_with
    if len(rooms):
        out.append((start, len(rooms)))
    return out


def decode(path, min_samples: int, max_samples: int):
    """``(waveform cut to max_samples, None, length before the cut)``, or ``(None, error, 0)``."""
    try:
        y = load_audio(path, sr=SR)
    except AudioError as exc:
        return None, str(exc), 0
    if len(y) < min_samples:
        return None, f"{path}: too short ({len(y) / SR:.2f} s; --min-seconds is {min_samples / SR:.2f})", 0
    return y[:max_samples], None, len(y)


def render_versions(y: np.ndarray, path, todo) -> tuple[list, list, dict]:
    """Render the versions ``todo`` (``[(row of /augmented, version, chain JSON)]``) of one clip.

    Returns the rendered rows, their waveforms, and ``{row: message}`` for those that failed (a
    version is skipped like a bad clip, never stopping the run).
    """
    from features.augment import apply

    rows, waves, errors = [], [], {}
    for k, v, chain in todo:
        try:
            w = apply(y, SR, json.loads(chain))
            if len(w) < 2 or not np.isfinite(w).all():
                raise ValueError(f"rendered {len(w)} samples, {int((~np.isfinite(w)).sum())} not finite")
        except Exception as exc:  # any effect's failure: report it, keep the original
            errors[k] = f"{path}: augmented version {v} failed to render ({type(exc).__name__}: {exc}); skipped"
        else:
            rows.append(k)
            waves.append(w)
    return rows, waves, errors


class ClipSource(Dataset):
    """The clips of a features file as a ``Dataset``: item ``row`` is that clip decoded.

    Parameters
    ----------
    paths : list of Path
        Audio file of each row.
    min_samples, max_samples : int
        Shorter clips are skipped (an error item); longer ones are cut.
    todo : dict
        ``{row: [(row of /augmented, version, chain JSON), ...]}``: versions to render.

    An item is a dict: ``row``, ``wave`` (float32, or ``None`` with ``error`` set), ``full`` (length
    before the cut), and ``versions`` ``(rows, waves, errors)`` of its augmented versions.
    """

    def __init__(self, paths, min_samples: int, max_samples: int, todo: dict):
        self.paths, self.min, self.max, self.todo = paths, min_samples, max_samples, todo

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> dict:
        t0 = time.perf_counter()
        y, err, full = decode(self.paths[row], self.min, self.max)
        item = {"row": row, "wave": y, "error": err, "full": full, "versions": ([], [], {}), "t_versions": 0.0}
        todo = self.todo.get(row, ())
        if err:  # a skipped clip's versions are skipped with it
            item["versions"] = ([], [], {k: None for k, _, _ in todo})
        elif todo:
            t = time.perf_counter()
            item["versions"] = render_versions(y, self.paths[row], todo)
            item["t_versions"] = time.perf_counter() - t
        item["t_decode"] = time.perf_counter() - t0
        return item


def pad(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms zero-padded into one ``(B, longest)`` tensor, and their lengths."""
    lengths = torch.tensor([len(y) for y in waves], dtype=torch.long)
    out = torch.zeros((len(waves), int(lengths.max()) if len(waves) else 0), dtype=torch.float32)
    for j, y in enumerate(waves):
        out[j, :len(y)] = torch.from_numpy(y)
    return out, lengths


def featurize(frontend, wave: torch.Tensor, lengths: torch.Tensor, size: int) -> dict:
    """The front-end on a padded batch, in pieces of at most ``size`` clips: ``{name: (B, T, bins)}`` and
    ``n_frames``, on the front-end's device (pieces keep the versions' batches as small as the clips')."""
    parts = [frontend(wave[at:at + size], lengths[at:at + size]) for at in range(0, len(wave), max(1, size))]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    frames = max(p["mel" if "mel" in p else next(k for k in p if k != "n_frames")].shape[1] for p in parts)
    out = {"n_frames": torch.cat([p["n_frames"] for p in parts])}
    for name in (k for k in parts[0] if k != "n_frames"):
        out[name] = torch.cat([torch.nn.functional.pad(p[name], (0, 0, 0, frames - p[name].shape[1]))
                               for p in parts])
    return out


def featurize_clips(frontend, waves: list[np.ndarray]) -> dict:
    """The front-end one clip at a time (the CPU's way): ``{name: (B, T, bins)}``, zero past each
    clip's frames, and ``n_frames``; the same numbers as :func:`featurize` on the padded batch.

    One clip's intermediates (its STFT, some 8 MB for 29 s) are reused from the heap from one clip to
    the next, where a padded batch's (about 250 MB for 32 clips of 29 s) are fresh pages every batch,
    whose page faults cost as much CPU as the FFTs (bench/RESULTS.md). No padded copy of the audio either.
    """
    frames = frontend.params.n_frames(max(len(y) for y in waves))
    out = {"n_frames": torch.zeros(len(waves), dtype=torch.long)}
    for j, y in enumerate(waves):
        for name, v in frontend(torch.from_numpy(y)[None]).items():
            if name == "n_frames":
                out[name][j] = v[0]
                continue
            if name not in out:
                out[name] = torch.zeros((len(waves), frames, v.shape[2]), dtype=v.dtype)
            out[name][j, :v.shape[1]] = v[0]
    return out


def rhythm_rows(feats: dict, params) -> np.ndarray | None:
    """``/rhythm`` rows of a featurised batch (``None`` when the file stores none)."""
    if params is None or "mel" not in feats:
        return None
    from features.rhythm import rhythm_batch

    return rhythm_batch(np.asarray(feats["mel"]), np.asarray(feats["n_frames"]), params)


class Batcher:
    """The ``collate_fn``: one batch of :class:`ClipSource` items, ready to cross to the main process.

    With a ``frontend`` (the CPU placement, run in the worker) the batch carries its features,
    ``n_frames`` and rhythm statistics; without one (the GPU placement) its padded ``wave`` and
    ``lengths``, the front-end's work left to the main process. The same for its versions.
    """

    def __init__(self, frontend=None, rhythm_params=None):
        self.frontend, self.rhythm_params = frontend, rhythm_params

    def __call__(self, items: list[dict]) -> dict:
        good = [it for it in items if it["error"] is None]
        v_rows = [r for it in good for r in it["versions"][0]]
        v_waves = [w for it in good for w in it["versions"][1]]
        b = {"rows": [it["row"] for it in items], "good": [it["row"] for it in good],
             "errors": {it["row"]: it["error"] for it in items if it["error"]},
             "full": [it["full"] for it in good], "versions": {"rows": v_rows, "bad": [], "errors": {}},
             "seconds": np.array([sum(it["t_decode"] for it in items), sum(it["t_versions"] for it in items), 0.0])}
        for it in items:
            errors = it["versions"][2]
            b["versions"]["bad"] += list(errors)
            b["versions"]["errors"].update({k: e for k, e in errors.items() if e})
        for key, waves in (("clips", [it["wave"] for it in good]), ("v", v_waves)):
            if not waves:
                continue
            if self.frontend is None:
                wave, lengths = pad(waves)
                b[key] = {"wave": wave, "lengths": lengths}
                continue
            t = time.perf_counter()
            feats = featurize_clips(self.frontend, waves)
            b[key] = {"feats": feats}
            if key == "clips":
                t_r = time.perf_counter()
                b["rhythm"] = rhythm_rows(feats, self.rhythm_params)
                b["seconds"][2] += time.perf_counter() - t_r
            b["seconds"][0] += time.perf_counter() - t
            b["seconds"][1] += (time.perf_counter() - t) if key == "v" else 0.0
        return b


class WriteBehind:
    """A thread that writes batches to the features file while the next ones compute.

    ``put`` hands it a batch whose features may still be on their way back from the GPU (an event
    to wait for); it computes the rhythm statistics the workers did not, writes, and keeps the
    counts the summary reports. The queue is short, so memory stays bounded. An error in the thread
    (a full disk, or a test's simulated kill) is raised again in the caller at the next ``put`` or
    at ``close``; the batches before it are written.
    """

    #: Bytes of features between two flushes to the disk (see ``_write``).
    SYNC_BYTES = 64 << 20

    def __init__(self, writer: store.Writer, rhythm_params, room: np.ndarray, max_samples: int, depth: int = 2):
        self.writer, self.rhythm_params, self.room, self.max_samples = writer, rhythm_params, room, max_samples
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.audio_seconds, self.truncated, self.t_rhythm, self.unsynced = 0.0, 0, 0.0, 0
        self.thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self.thread.start()

    def put(self, b: dict, event=None) -> None:
        self._raise()
        while True:  # a bounded wait, so that a failed thread is noticed
            try:
                self.queue.put((b, event), timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Write what is queued, stop the thread, raise its error if it had one."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def abandon(self) -> None:
        """Stop the thread after the batch it is writing (an interrupted run)."""
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is not None:  # after a failure the queued batches are dropped, not written
                continue
            try:
                self._write(*job)
            except BaseException as exc:  # noqa: BLE001  (handed to the caller, KeyboardInterrupt included)
                self.error = exc

    def _write(self, b: dict, event) -> None:
        if event is not None:
            event.synchronize()
        feats, n_frames, rhythm = {}, np.zeros(0, np.int64), b.get("rhythm")
        if "clips" in b:
            feats = {k: v.numpy() for k, v in b["clips"]["feats"].items()}
            n_frames = feats.pop("n_frames")
            if rhythm is None and self.rhythm_params is not None:
                t = time.perf_counter()
                rhythm = rhythm_rows({**feats, "n_frames": n_frames}, self.rhythm_params)
                self.t_rhythm += time.perf_counter() - t
            full = np.asarray(b["full"])
            self.audio_seconds += float(np.minimum(full, self.max_samples).sum()) / SR
            self.truncated += int(((full > self.max_samples) | (n_frames > self.room[b["good"]])).sum())
        versions = b["versions"]
        if "v" in b:
            v = {k: t.numpy() for k, t in b["v"]["feats"].items()}
            versions = {**versions, "n_frames": v.pop("n_frames"), "features": v}
        elif not versions["rows"]:
            versions = {**versions, "features": {}, "n_frames": []}
        good = set(b["good"])
        bad = [r for r in b["rows"] if r not in good]
        self.writer.write(b["good"], feats, n_frames, bad, rhythm, versions)
        # To the disk as it goes, in this thread (the GIL is released while it waits), so the final
        # fsync that makes the file durable finds little left: it took 2 s of a 17-s run otherwise.
        self.unsynced += sum(v.nbytes for part in (feats, versions.get("features", {})) for v in part.values())
        if self.unsynced > self.SYNC_BYTES:
            fd = os.open(self.writer.file.filename, os.O_RDONLY)
            try:
                getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
            finally:
                os.close(fd)
            self.unsynced = 0


def to_host(b: dict, frontend, device, size: int):
    """Run the front-end of a GPU-placed batch on ``device`` and start copying the features back.

    Returns the event the copies complete at (``None`` when nothing runs on a GPU).
    """
    for key in ("clips", "v"):
        if key not in b or "wave" not in b[key]:
            continue
        wave = b[key]["wave"].to(device, non_blocking=True)
        feats = featurize(frontend, wave, b[key]["lengths"], size)  # lengths stay on the host: no sync
        # non-blocking copies to the host land in pinned memory; the writer waits for the event
        b[key] = {"feats": {k: v.to("cpu", non_blocking=True) for k, v in feats.items()}}
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event


def fixed_mmap_threshold(_worker_id: int = 0) -> None:
    """Hold glibc's mmap threshold at 16 MiB and its trim threshold at 64 MiB in this process (and in
    each loader worker).

    glibc raises the mmap threshold after large blocks are freed (up to 32 MiB), so a batch's arrays
    then come from the heap, which fragments and never shrinks: a decoding worker peaked at 1.6 GiB
    where it used 0.63 GiB (2,638 clips of 29 s). Held at 16 MiB, one clip's buffers (its decoded
    audio, its STFT: about 8 MB for 29 s, the same sizes clip after clip) are reused from the heap,
    while the batch-sized arrays are mapped and given back when freed. Held at 1 MiB, the clip's
    buffers were fresh pages every time: 11 million page faults and 40 % of the CPU time in the
    kernel on a 2,639-clip shard, against 1.3 million at 16 MiB. Fixing the mmap threshold also fixes
    the trim threshold at 128 KiB, which hands the top of the heap back after each clip, to be faulted
    in again for the next: at 64 MiB a worker keeps it, 40 % fewer page faults (bench/RESULTS.md).
    Nothing where libc is not glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def loader(source: ClipSource, batches: list[list[int]], batcher: Batcher, workers: int, pin: bool) -> DataLoader:
    """The ``DataLoader`` of the planned ``batches``: ``workers`` processes decode, and run ``batcher``."""
    kw = dict(prefetch_factor=2, persistent_workers=False, worker_init_fn=fixed_mmap_threshold) if workers else {}
    return DataLoader(source, batch_sampler=batches, collate_fn=batcher, num_workers=workers, pin_memory=pin, **kw)


def batch_limits(device, workers: int, n_clips: int, batch: int | None, frames_30s: int) -> tuple[int, int]:
    """Clips per batch and padded frames per batch.

    On the GPU a batch is sized by audio, up to 256 clips of 30 s (the GPU's work per launch);
    on the CPU at most 32 clips and, so that a small job gives every worker work, at most
    ``ceil(clips / workers)``. ``batch`` (``--batch``) caps the clips either way.
    """
    if device.type == "cuda":
        clips, slots = 256, 128
    else:
        clips = slots = 32
        if workers > 1:
            clips = slots = max(1, min(32, -(-n_clips // workers)))
    if batch:
        clips = slots = min(clips, batch) if device.type != "cuda" else batch
    return clips, slots * frames_30s


def extract_all(writer: store.Writer, paths: list, frontend, device, *, workers: int, batch: int | None,
                min_samples: int, max_samples: int, quiet: bool = False, versions_per_clip: int = 0,
                place: str = "auto") -> dict:
    """Decode and extract every unfinished batch of ``writer``'s file; return the run's statistics.

    Parameters
    ----------
    writer : pipeline.store.Writer
        The open features file; its status says which clips (and versions) are done.
    paths : list of Path
        Audio file of each row.
    frontend : features.frontend.FrontEnd
        On ``device``: in the workers on the CPU, in this process on a GPU.
    workers : int
        Decoding processes (0: decode here).
    batch : int or None
        ``--batch``: most clips per front-end batch; ``None`` for the device's rule (:func:`batch_limits`).
    min_samples, max_samples : int
        Clip length bounds at 16 kHz.
    place : {'auto', 'workers', 'main'}
        Where the front-end runs: in the decoding workers (the CPU's way), or in this process on
        ``device`` with the copy back and the writes behind it (the GPU's way; on the CPU it runs
        the same pipeline, for tests). ``auto``: ``main`` on CUDA, ``workers`` on the CPU.

    Returns
    -------
    dict
        ``errors`` (path -> message), ``seconds``, ``clips``, ``audio_seconds``, ``truncated``,
        ``versions``, ``versions_failed``, ``work`` (seconds of the work in all, of the versions, of
        the rhythm statistics, summed over processes).
    """
    from tqdm import tqdm

    fixed_mmap_threshold()
    clips, budget = batch_limits(device, workers, len(writer.room), batch, frontend.params.frames(30.0))
    ranges = plan_batches(writer.room, clips, budget)
    table = writer.versions
    todo, v_row = {}, np.zeros(0, np.int64)
    if table is not None:
        v_row = table["row"].to_numpy()
        for k, (r, v, chain) in enumerate(zip(v_row, table["version"], table["chain"])):
            todo.setdefault(int(r), []).append((k, int(v), chain))

    def unfinished(b, e):
        if (writer.status[b:e] != 1).any():
            return True
        return table is not None and (writer.v_status[np.searchsorted(v_row, b):np.searchsorted(v_row, e)] == 0).any()

    pending = [list(range(b, e)) for b, e in ranges if unfinished(b, e)]
    # Clips skipped by an earlier run of this file are decoded again only to list why.
    queued = {i for rows in pending for i in rows}
    relist = [[int(i)] for i in np.flatnonzero(writer.status == -1) if i not in queued]
    rhythm_params = frontend.params if writer.rhythm is not None else None
    in_main = place == "main" or (place == "auto" and device.type == "cuda")
    batcher = Batcher(None if in_main else frontend, rhythm_params)
    work_todo = {r: todo[r] for rows in pending for r in rows if r in todo}
    source = ClipSource(paths, min_samples, max_samples, work_todo)
    batches = pending + relist
    n_versions = sum(len(v) for v in work_todo.values())
    behind = WriteBehind(writer, rhythm_params, writer.room, max_samples)
    errors, v_errors, work, t0 = {}, {}, np.zeros(3), time.time()
    bar = tqdm(total=sum(map(len, batches)) + n_versions, unit="clip", disable=quiet, dynamic_ncols=True,
               desc="extract" + (f" (+{versions_per_clip} versions per train clip)" if n_versions else ""))
    try:
        for k, b in enumerate(loader(source, batches, batcher, workers if len(batches) > 1 else 0,
                                     device.type == "cuda")):
            versions = b["versions"]
            bar.update(len(b["rows"]) + len(versions["rows"]) + len(versions["bad"]))
            for err in [*b["errors"].values(), *versions["errors"].values()]:
                bar.write(f"skipped: {err}")
            errors.update(b["errors"])
            v_errors.update(versions["errors"])
            bar.set_postfix(skipped=len(errors) + len(v_errors))
            work += b["seconds"]
            if k >= len(pending):  # a re-listed old failure: its batch is already done
                continue
            t = time.perf_counter()
            event = to_host(b, frontend, device, clips) if in_main else None
            work[0] += time.perf_counter() - t
            behind.put(b, event)
        behind.close()
    except BaseException:
        behind.abandon()
        raise
    finally:
        bar.close()
    work[0] += behind.t_rhythm
    work[2] += behind.t_rhythm
    listed = {paths[i]: e for i, e in sorted(errors.items())}
    listed.update((f"{paths[int(v_row[k])]} version {k}", e) for k, e in sorted(v_errors.items()))
    return dict(errors=listed, seconds=time.time() - t0, clips=sum(map(len, batches)) - len(errors),
                audio_seconds=behind.audio_seconds, truncated=behind.truncated, versions=n_versions,
                versions_failed=len(v_errors), work=work)
