"""Offline stage: decode every clip once, compute features in batches, write chunked HDF5.

    python pipeline/extract.py --features mel,mfcc[,chroma] [--data ROOT] [--split gct634|standard]
                               [--out cache/features.h5] [--dtype float32|float16] [--device auto|cpu|cuda]
                               [--stft auto|fft|nnaudio] [--workers N] [--threads N] [--batch N] [--shard I/N]
                               [--augment V] [--augment-seed S]

Worker processes decode audio (MP3 or pre-decoded .npy) a batch at a time; on the CPU each worker
also computes its batch's features (FFT STFT, one torch thread) and the main process only writes,
while on CUDA the main process runs the batched front-end (nnAudio STFT) on the GPU. A killed run
re-run with the same arguments continues from the clips it had finished; the output appears only
when complete (written as ``OUT.part``, then renamed). Bad clips are reported, listed in ``OUT``
with suffix ``.log`` and skipped.

``--augment V`` also stores V augmented versions of every training clip (validation and test clips
are never augmented): version v of clip c is the effect chain ``features.augment.draw(
numpy.random.default_rng([S, c, v]))`` rendered on the clip's audio in the decoding workers and sent
through the same front-end; the file records each chain. When the features include mel, every clip
also gets its rhythm statistics (``features.rhythm``) in ``/rhythm``.

``--shard I/N`` (or torchrun's ``RANK`` and ``WORLD_SIZE``) extracts only the I-th of N contiguous
blocks of the clip list into a complete, resumable file of its own; ``pipeline/merge.py`` joins the
shards into one file in the clip order of an unsharded run.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from data.audio import SR, AudioError, load_audio
from data.cli import HelpFormatter
from data.files import write_atomically
from data.mtat import ANNOTATIONS, SPLITS, DatasetError, find_audio, read_annotations
from features.device import device_error, pick_device
from features.params import STFTS, FeatureParams, parse_features
from pipeline import store

DEMO_ROOT = Path("cache/demo")
DEFAULT_OUT = "cache/features.h5"
#: The default output of a shard; ``--out`` may use the same placeholders.
DEFAULT_SHARD_OUT = "cache/features-{index}-of-{count}.h5"


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return store.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python pipeline/extract.py",
        description="Decode MTAT-style audio and write log-mel / MFCC / chroma features to chunked HDF5.",
        formatter_class=HelpFormatter)
    p.add_argument("--features", default="mel,mfcc,chroma", help="comma-separated: mel, mfcc, chroma")
    p.add_argument("--data", type=Path, default=None,
                   help=f"dataset root holding {ANNOTATIONS}; default: the demo corpus in {DEMO_ROOT} "
                        "(generated on first use)")
    p.add_argument("--audio", choices=("auto", "mp3", "npy"), default="auto",
                   help="audio layout: ROOT/mp3 or ROOT/<f> MP3s, or ROOT/waveform .npy; auto finds it")
    p.add_argument("--split", choices=tuple(SPLITS), default="gct634", help="split scheme; clips outside it are left out")
    p.add_argument("--out", default=None,
                   help=f"output HDF5 file (not a folder); default {DEFAULT_OUT}, or {DEFAULT_SHARD_OUT} for a shard. "
                        "{index} and {count} are replaced by the shard's; under torchrun, an --out without "
                        "them gets -{index}-of-{count} before its suffix (every rank has the same arguments)")
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                   help="extract only the I-th (from 0) of N contiguous blocks of the clip list, to be joined "
                        "by pipeline/merge.py; default: torchrun's RANK/WORLD_SIZE when WORLD_SIZE > 1, "
                        "else the whole list"),
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the front-end runs")
    p.add_argument("--stft", choices=("auto", *STFTS), default="auto",
                   help="STFT back-end: fft (torch.stft) or nnaudio (convolutional); auto: nnaudio on CUDA, "
                        "fft on the CPU. The file records it, so a resumed run never mixes two")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (0: decode in the main process); default: the cores, shared "
                        "among torchrun's LOCAL_WORLD_SIZE processes of a node"),
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the front-end; default: the cores left by the workers, at least 1 "
                        "(on 2 cores, 2 workers and 1 thread beat 1 worker and 2 threads: bench/RESULTS.md)")
    p.add_argument("--batch", type=int, default=32, help="clips per front-end batch")
    p.add_argument("--augment", type=int, default=0, metavar="V",
                   help="also store V augmented versions (features/augment.py effect chains) of every training "
                        "clip; validation and test clips are never augmented")
    p.add_argument("--augment-seed", type=int, default=0, metavar="S",
                   help="seed of the effect chains: version v of clip c draws from default_rng([S, c, v])")
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="skip clips shorter than this (the trainer's default crop is 3 s)")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="truncate clips longer than this (each clip is stored at its own length up to this)")
    p.add_argument("--dtype", choices=store.DTYPES, default="float32",
                   help="storage type of the features; float16 halves the file (the trainer reads either)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output or partial run made with other parameters")
    fp = FeatureParams()
    g = p.add_argument_group("feature parameters")
    g.add_argument("--n-fft", type=int, default=fp.n_fft, help="STFT window and FFT size, in samples at 16 kHz")
    g.add_argument("--hop-length", type=int, default=fp.hop_length, help="samples between frames")
    g.add_argument("--n-mels", type=int, default=fp.n_mels, help="mel bands")
    g.add_argument("--f-min", type=float, default=fp.f_min, help="lowest mel frequency, Hz")
    g.add_argument("--f-max", type=float, default=fp.f_max, help="highest mel frequency, Hz")
    g.add_argument("--n-mfcc", type=int, default=fp.n_mfcc, help="MFCC coefficients (from the log-mel)")
    g.add_argument("--n-chroma", type=int, default=fp.n_chroma, help="chroma bins")
    g.add_argument("--top-db", type=float, default=fp.top_db, help="dB floor below each clip's peak (power_to_db)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.features = parse_features(args.features)
        args.params = FeatureParams(n_fft=args.n_fft, hop_length=args.hop_length, n_mels=args.n_mels,
                                    f_min=args.f_min, f_max=args.f_max, n_mfcc=args.n_mfcc,
                                    n_chroma=args.n_chroma, top_db=args.top_db)
    except ValueError as exc:
        parser.error(str(exc))
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if args.augment < 0:
        parser.error(f"--augment must be 0 or more, got {args.augment}")
    if args.augment_seed < 0:
        parser.error(f"--augment-seed must be 0 or more (a numpy seed), got {args.augment_seed}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if not 0 < args.min_seconds <= args.max_seconds:
        parser.error(f"need 0 < --min-seconds <= --max-seconds, got {args.min_seconds} and {args.max_seconds}")
    if device_error(args.device):
        parser.error(device_error(args.device))
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    pick_shard(args, parser, os.environ)
    for path in (args.out, args.out.with_name(args.out.name + ".part")):  # outputs checked before any work
        if path.is_dir():
            parser.error(f"--out {args.out}: {path} is a folder; give a file name, e.g. --out {args.out / 'features.h5'}")
    if args.out.parent.exists() and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: {args.out.parent} is a file, not a folder")
    return args


def pick_shard(args, parser, env) -> None:
    """Settle ``args.shard``, ``args.out`` and ``args.workers`` from the arguments and torchrun's ``env``.

    ``--shard`` wins; otherwise ``RANK`` and ``WORLD_SIZE`` give the shard when ``WORLD_SIZE > 1``.
    Ranks share one command line, so an environment shard's ``--out`` without placeholders gets the
    shard in its name, and the default ``--workers`` shares the cores among the node's ranks.
    """
    world = env.get("WORLD_SIZE", "").strip()
    from_env = args.shard is None and world not in ("", "1")
    if from_env:
        try:
            args.shard = store.parse_shard(f"{env.get('RANK', '').strip()}/{world}")
        except ValueError as exc:
            parser.error(f"--shard from the environment's RANK and WORLD_SIZE (torchrun): {exc}")
    local = env.get("LOCAL_WORLD_SIZE", "")
    local = int(local) if from_env and local.isdigit() and int(local) > 0 else 1
    if args.workers is None:
        args.workers = max(1, (os.cpu_count() or 1) // local)
    out = args.out or (DEFAULT_SHARD_OUT if args.shard else DEFAULT_OUT)
    if args.shard:
        index, count = args.shard
        if from_env and "{" not in out:
            out = str(Path(out).with_name(f"{Path(out).stem}-{{index}}-of-{{count}}{Path(out).suffix}"))
        try:
            out = out.format(index=index, count=count)
        except (KeyError, IndexError, ValueError) as exc:
            parser.error(f"--out {out}: only {{index}} and {{count}} may be replaced ({exc!r})")
    args.out = Path(out)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content (the annotation file: a few MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def estimate_samples(path: Path) -> int:
    """Upper bound of a clip's length at ``SR`` from its header alone (0 when unreadable)."""
    try:
        if path.suffix == ".npy":
            return int(max(np.load(path, mmap_mode="r").shape))
        info = sf.info(path)
        return int(np.ceil(info.frames * SR / info.samplerate))
    except Exception:  # the decoder reports the real problem later
        return 0


def clip_samples(paths: list[Path], args) -> np.ndarray:
    """Each clip's length from its file header, capped by ``--max-seconds``, in samples at ``SR``.

    A header that cannot be read gets the cap, so a clip the decoder can still read loses nothing.
    """
    cap = int(args.max_seconds * SR)
    return np.minimum(np.array([estimate_samples(p) or cap for p in paths], np.int64), cap)


def clip_rooms(samples: np.ndarray, params: FeatureParams, growth: float = 1.0) -> np.ndarray:
    """Frames to reserve for clips of ``samples``; ``growth`` > 1 for versions that many times longer
    (plus a frame for rounding)."""
    extra = 0 if growth == 1.0 else 1
    return np.array([params.n_frames(int(np.ceil(n * growth))) + extra for n in samples], np.int32)


def plan_versions(clips, rooms_grown: np.ndarray, count: int, seed: int) -> store.Versions | None:
    """The ``count`` versions of every training clip: rows, version numbers, rooms and effect chains."""
    if not count:
        return None
    from features import augment

    rows = np.repeat(np.flatnonzero((clips["split"] == "train").to_numpy()), count).astype(np.int64)
    version = np.tile(np.arange(1, count + 1, dtype=np.int16), len(rows) // count)
    ids = clips["clip_id"].to_numpy(np.int64)
    chains = [json.dumps(augment.draw(np.random.default_rng([seed, int(ids[r]), int(v)])))
              for r, v in zip(rows, version)]
    return store.Versions(rows, version, rooms_grown[rows], chains)


def describe_changes(diff: list[str], want: store.Header, have: store.Header) -> str:
    """``'augment 2 in the file, 0 asked'``, ... for the settings that differ."""
    a, b = have.attrs(), want.attrs()
    return ", ".join(f"{k} {a[k]!r} in the file, {b[k]!r} asked" for k in diff)


def _decode(path, min_samples: int, max_samples: int):
    """``(waveform cut to max_samples, None, length before the cut)``, or ``(None, error, 0)``."""
    try:
        y = load_audio(path, sr=SR)
    except AudioError as exc:
        return None, str(exc), 0
    if len(y) < min_samples:
        return None, f"{path}: too short ({len(y) / SR:.2f} s; --min-seconds is {min_samples / SR:.2f})", 0
    return y[:max_samples], None, len(y)


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


def imap_bounded(pool, fn, tasks, ahead: int):
    """``pool.imap(fn, tasks)`` with at most ``ahead`` results in flight.

    ``Pool.imap`` queues every task at once and buffers results the consumer has not taken: when
    decoding outpaces the front-end, decoded audio piles up (some 40 GB for MTAT).
    """
    it = iter(tasks)
    flight = collections.deque(pool.apply_async(fn, (t,)) for t in itertools.islice(it, ahead))
    while flight:
        result = flight.popleft().get()
        for t in itertools.islice(it, 1):
            flight.append(pool.apply_async(fn, (t,)))
        yield result


def main(argv=None) -> int:
    t_start = time.time()
    args = parse_args(argv)
    args.t_start = t_start
    # The heavy libraries load only now that the arguments are good: --help and errors answer at once.
    args.device = pick_device(args.device)
    if args.stft == "auto":  # the design: nnAudio batched on the GPU; on the CPU the FFT is cheaper
        args.stft = "nnaudio" if args.device.type == "cuda" else "fft"
    args.params = dataclasses.replace(args.params, stft=args.stft)
    if args.data is None:
        from data.demo import ensure_demo  # imported here: only the demo needs the generator
        root = ensure_demo(DEMO_ROOT)
    else:
        root = args.data
    csv = Path(root) / ANNOTATIONS
    try:
        layout = find_audio(root, args.audio)
        clips = read_annotations(csv, args.split)
    except DatasetError as exc:
        return _fail(str(exc))
    if clips.empty:
        return _fail(f"{csv}: no clip with one of the 50 tags in the {args.split!r} split")
    index, count = args.shard or (0, 1)
    if count > len(clips):
        return _fail(f"--shard {index}/{count}: the {args.split!r} split of {csv} has only {len(clips)} clips, "
                     "fewer than the shards")
    start, stop = store.shard_bounds(index, count, len(clips))
    part_of = store.Part(str(csv.resolve()), file_sha256(csv), len(clips), start, stop)
    clips = clips.iloc[start:stop].reset_index(drop=True)

    want = store.Header(features=args.features, params=args.params, dtype=args.dtype, split_scheme=args.split,
                        source=str(Path(root).resolve()), audio_kind=layout.kind,
                        shard=f"{index}/{count}" if args.shard else "", augment=args.augment,
                        augment_seed=args.augment_seed)
    out, part = args.out, args.out.with_name(args.out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not args.overwrite:
        try:
            diff = want.changed(store.header(out))
        except store.StoreError as exc:
            return _fail(f"{exc}; pass --overwrite to replace it")
        if diff:
            return _fail(f"{out} already holds features made with other settings ({', '.join(diff)}): "
                         f"{describe_changes(diff, want, store.header(out))}; choose another --out or pass "
                         "--overwrite")
        print(f"{out} is already complete for these settings; nothing to do.")
        return 0

    paths = [layout.path(p) for p in clips["mp3_path"]]
    if part.exists() and not args.overwrite:
        try:
            diff = want.changed(store.header(part))
            table = store.read_table(part)
        except (store.StoreError, OSError, KeyError) as exc:
            print(f"warning: {part} is unreadable ({exc}); starting over", file=sys.stderr)
            part.unlink()
        else:
            if diff:
                return _fail(f"{part} is a partial run with other settings ({', '.join(diff)}): "
                             f"{describe_changes(diff, want, store.header(part))}; re-run with those settings "
                             "to finish it, or pass --overwrite to discard it")
            if not np.array_equal(table["clip_id"].to_numpy(), clips["clip_id"].to_numpy()):
                return _fail(f"{part} was made from another annotation file; pass --overwrite to discard it")
    if not part.exists() or args.overwrite:
        samples = clip_samples(paths, args)
        rooms, versions = clip_rooms(samples, args.params), None
        if args.augment:
            from features.augment import max_length_factor
            versions = plan_versions(clips, clip_rooms(samples, args.params, max_length_factor()), args.augment,
                                     args.augment_seed)
        try:
            store.check_space(part, store.nbytes(rooms, want, versions.room if versions else ()))
        except store.StoreError as exc:
            return _fail(str(exc))
        from features.rhythm import RHYTHM_FIELDS
        store.create(part, clips, want, rooms, part_of, versions,
                     RHYTHM_FIELDS if "mel" in args.features else None)

    writer = store.Writer(part)
    n_done_before = int((writer.status == 1).sum())
    try:
        stats = run_batches(writer, paths, args)
    except KeyboardInterrupt:
        done = int((writer.status == 1).sum())
        again = " ".join(["python pipeline/extract.py", *(argv if argv is not None else sys.argv[1:])])
        print(f"\ninterrupted: {part} keeps the {done} of {len(paths)} clips done; run the same command "
              f"again to continue: {again}", file=sys.stderr)
        raise
    finally:
        writer.close()

    status = writer.status
    if not (status == 1).any():
        return _fail(f"no clip could be extracted; see {out.with_suffix('.log')}", log=(out, stats["errors"]))
    with open(part, "rb+") as fh:  # the finished file reaches the disk before it gets the real name
        os.fsync(fh.fileno())
    os.replace(part, out)
    write_log(out.with_suffix(".log"), stats["errors"])
    summary(out, clips, status, stats, n_done_before, time.time() - t_start, part_of if args.shard else None,
            writer.v_status if writer.versions is not None else None, args.augment)
    return 0


#: What a decoding worker runs besides decoding, inherited from the parent at fork: the front-end
#: (CPU extraction; ``None`` on CUDA, where the parent runs it) and the ``FeatureParams`` of the
#: rhythm statistics (``None`` when the file stores none).
_FRONTEND = None
_RHYTHM = None


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # the workers are the parallelism: one thread each


def featurize(frontend, waves: list[np.ndarray]) -> tuple[dict, np.ndarray]:
    """Features of a batch of waveforms, zero-padded to the longest: ``({name: (B, T, bins)}, n_frames)``."""
    import torch

    lengths = np.array([len(y) for y in waves])
    wave = np.zeros((len(waves), lengths.max()), np.float32)
    for j, y in enumerate(waves):
        wave[j, :lengths[j]] = y
    device = frontend.dct.device
    res = frontend(torch.from_numpy(wave).to(device), torch.from_numpy(lengths).to(device))
    n_frames = res.pop("n_frames").cpu().numpy()
    return {k: v.cpu().numpy() for k, v in res.items()}, n_frames


def featurize_all(frontend, waves: list[np.ndarray], size: int) -> tuple[dict, np.ndarray]:
    """:func:`featurize` in batches of at most ``size`` waves: ``({name: [per wave (T, bins)]}, n_frames)``.

    The versions of a batch are (--augment) times its clips; batches of the batch's size keep the
    padded front-end input as small as the originals'.
    """
    feats, n_frames = {}, []
    for at in range(0, len(waves), max(1, size)):
        got, n = featurize(frontend, waves[at:at + max(1, size)])
        for name, x in got.items():
            feats.setdefault(name, []).extend(x)
        n_frames.append(n)
    return feats, np.concatenate(n_frames) if n_frames else np.zeros(0, np.int64)


def rhythm_of(feats: dict, n_frames: np.ndarray, params) -> tuple[np.ndarray | None, float]:
    """``/rhythm`` rows of a batch from its dB log-mel (``None`` without one) and the seconds they took."""
    if params is None or "mel" not in feats:
        return None, 0.0
    from features.rhythm import rhythm_batch

    t = time.perf_counter()
    return rhythm_batch(feats["mel"], n_frames, params), time.perf_counter() - t


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


def _batch_job(task) -> dict:
    """Decode the clips of one batch, render their versions and, in a worker with a front-end (CPU),
    compute their features.

    Returns the rows, the decoding errors, each good clip's length before the ``--max-seconds`` cut
    (``full``, in row order: its keys are the good rows), and either ``features``, ``n_frames`` (and
    ``rhythm``) or, for the parent's front-end (GPU), the ``waves``; ``versions`` holds the same for
    the batch's augmented versions (rows of ``/augmented``), with ``bad`` (failed, or of a skipped
    clip) and ``errors``. ``seconds``: this job's time in all, on versions, on rhythm statistics.
    """
    t0 = time.perf_counter()
    rows, paths, min_samples, max_samples, todo = task
    out = {"rows": rows, "errors": {}, "full": {}}
    waves, v_rows, v_waves, v_bad, v_errors, t_versions = [], [], [], [], {}, 0.0
    for row, path in zip(rows, paths):
        y, err, full = _decode(path, min_samples, max_samples)
        if err:
            out["errors"][row] = err
            v_bad += [k for k, _, _ in todo.get(row, ())]
            continue
        out["full"][row] = full
        waves.append(y)
        if row in todo:
            t = time.perf_counter()
            got_rows, got_waves, errors = render_versions(y, path, todo[row])
            t_versions += time.perf_counter() - t
            v_rows += got_rows
            v_waves += got_waves
            v_bad += list(errors)
            v_errors.update(errors)
    t_rhythm = 0.0
    if waves and _FRONTEND is not None:
        out["features"], out["n_frames"] = featurize(_FRONTEND, waves)
        out["rhythm"], t_rhythm = rhythm_of(out["features"], out["n_frames"], _RHYTHM)
    elif waves:
        out["waves"] = waves
    if todo:
        out["versions"] = versions = {"rows": v_rows, "bad": v_bad, "errors": v_errors}
        t = time.perf_counter()
        if v_waves and _FRONTEND is not None:
            versions["features"], versions["n_frames"] = featurize_all(_FRONTEND, v_waves, len(rows))
        elif v_waves:
            versions["waves"] = v_waves
        t_versions += time.perf_counter() - t
    out["seconds"] = (time.perf_counter() - t0, t_versions, t_rhythm)
    return out


def run_batches(writer: store.Writer, paths: list[Path], args) -> dict:
    """Decode and extract every unfinished batch, in worker processes; return run statistics.

    On the CPU each worker decodes a whole batch, renders its augmented versions and computes their
    features (one torch thread per worker) and this process only writes; on CUDA the workers decode
    and render and this process runs the batched front-end on the GPU. Batches are fixed index
    ranges, and a batch is done again (versions included) until it and its versions are all
    recorded, so a resumed run computes exactly the batches an uninterrupted run would have, and
    gets the same numbers.
    """
    global _FRONTEND, _RHYTHM
    import torch
    from tqdm import tqdm

    from features.frontend import FrontEnd

    ranges = plan_batches(writer.room, args.batch, args.batch * args.params.frames(30.0))
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

    pending = [(b, e) for b, e in ranges if unfinished(b, e)]
    # Clips skipped by an earlier run of this file are decoded again only to list why.
    queued = {i for b, e in pending for i in range(b, e)}
    relist = [int(i) for i in np.flatnonzero(writer.status == -1) if i not in queued]
    min_samples, max_samples = int(args.min_seconds * SR), int(args.max_seconds * SR)
    tasks = [(list(range(b, e)), [paths[i] for i in range(b, e)], min_samples, max_samples,
              {i: todo[i] for i in range(b, e) if i in todo}) for b, e in pending]
    tasks += [([i], [paths[i]], min_samples, max_samples, {}) for i in relist]
    device = args.device
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
    frontend = FrontEnd(args.features, args.params).to(device)
    rhythm_params = args.params if writer.rhythm is not None else None
    use_pool = args.workers > 0 and len(tasks) > 1
    # The workers inherit the front-end at fork; on CUDA it stays here, in one process.
    _FRONTEND = frontend if use_pool and device.type == "cpu" else None
    _RHYTHM = rhythm_params
    if rhythm_params is not None:  # librosa's imports and numba's compilation once, before the workers fork
        from features.rhythm import rhythm_statistics
        rhythm_statistics(np.random.default_rng(0).standard_normal((400, args.params.n_mels)) * 10, rhythm_params)
    pool = mp.Pool(args.workers, initializer=_init_worker) if use_pool else None
    results = imap_bounded(pool, _batch_job, tasks, ahead=2 * args.workers) if pool else map(_batch_job, tasks)
    errors, v_errors, audio_seconds, truncated, t0 = {}, {}, 0.0, 0, time.time()
    work = np.zeros(3)  # seconds of the jobs in all, of their versions, of their rhythm statistics
    startup = t0 - args.t_start  # imports, reading the annotations, creating the file, the front-end
    n_versions = sum(len(v) for t in tasks for v in t[4].values())
    bar = tqdm(total=sum(len(t[0]) for t in tasks) + n_versions, unit="clip", disable=args.quiet,
               dynamic_ncols=True, desc="extract" + (f" (+{args.augment} versions per train clip)" if n_versions else ""))
    try:
        for k, out in enumerate(results):
            versions = out.get("versions")
            bar.update(len(out["rows"]) + (len(versions["rows"]) + len(versions["bad"]) if versions else 0))
            for row, err in [*out["errors"].items(), *(versions or {}).get("errors", {}).items()]:
                bar.write(f"skipped: {err}")
            errors.update(out["errors"])
            v_errors.update((versions or {}).get("errors", {}))
            if k >= len(pending):  # a re-listed old failure: its batch is already done
                continue
            good = list(out["full"])
            bad = [i for i in out["rows"] if i not in out["full"]]
            feats, n_frames, rhythm = {}, np.zeros(0, np.int64), None
            work += out["seconds"]
            t = time.perf_counter()
            if good:
                if "waves" in out:  # the front-end runs here (GPU)
                    out["features"], out["n_frames"] = featurize(frontend, out.pop("waves"))
                    out["rhythm"], took = rhythm_of(out["features"], out["n_frames"], rhythm_params)
                    work[2] += took
                feats, n_frames, rhythm = out["features"], out["n_frames"], out.get("rhythm")
                audio_seconds += sum(min(out["full"][i], max_samples) for i in good) / SR
                cut = np.array([out["full"][i] > max_samples for i in good])
                truncated += int((cut | (n_frames > writer.room[good])).sum())
            if versions and "waves" in versions:
                t_v = time.perf_counter()
                versions["features"], versions["n_frames"] = featurize_all(frontend, versions.pop("waves"), args.batch)
                work[1] += time.perf_counter() - t_v
            if versions and not versions["rows"]:
                versions.update(features={}, n_frames=[])
            work[0] += time.perf_counter() - t
            writer.write(good, feats, n_frames, bad, rhythm, versions)
            bar.set_postfix(skipped=len(errors) + len(v_errors))
    finally:
        bar.close()
        _FRONTEND = _RHYTHM = None
        if pool:
            pool.terminate()
    listed = {paths[i]: e for i, e in sorted(errors.items())}
    listed.update((f"{paths[int(v_row[k])]} version {k}", e) for k, e in sorted(v_errors.items()))
    return dict(errors=listed, seconds=time.time() - t0, startup=startup,
                clips=sum(len(t[0]) for t in tasks) - len(errors), audio_seconds=audio_seconds,
                truncated=truncated, device=device, params=args.params, versions=n_versions,
                versions_failed=len(v_errors), work=work)


def write_log(path: Path, errors: dict) -> None:
    """List the skipped clips, one message (naming the file) per line; an empty log means none."""
    write_atomically(path, "".join(f"{e}\n" for e in errors.values()))


def summary(out: Path, clips, status, stats, n_done_before: int, elapsed: float, shard=None,
            v_status=None, augment: int = 0) -> None:
    ok = status == 1
    per_split = clips.loc[ok, "split"].value_counts()
    rate = stats["clips"] / stats["seconds"] if stats["seconds"] > 0 else float("nan")
    lines = [
        "",
        f"features   {out}  ({out.stat().st_size / 2**20:.1f} MiB)",
        "clips      " + "  ".join(f"{s} {per_split.get(s, 0)}" for s in ("train", "valid", "test"))
        + f"  (total {int(ok.sum())})",
        f"skipped    {int((status == -1).sum())}" + (f"  listed in {out.with_suffix('.log')}" if stats["errors"] else ""),
    ]
    for p, e in list(stats["errors"].items())[:5]:
        lines.append(f"             {e}")
    if len(stats["errors"]) > 5:
        lines.append(f"             ... and {len(stats['errors']) - 5} more")
    work, share = stats["work"], lambda x: f"{100 * x / max(stats['work'][0], 1e-9):.0f}%"
    if v_status is not None:
        lines.append(f"versions   {augment} per train clip: {int((v_status == 1).sum())} stored, "
                     f"{int((v_status == -1).sum())} skipped; this run rendered {stats['versions']} "
                     f"({stats['versions_failed']} failed) in {work[1]:.1f} s, {share(work[1])} of the "
                     "extraction's work (summed over workers)")
    if stats["work"][2]:
        lines.append(f"rhythm     statistics of every clip in /rhythm: {work[2]:.1f} s, {share(work[2])} of the work")
    if stats["truncated"]:
        lines.append(f"truncated  {stats['truncated']} clips longer than --max-seconds")
    if shard:
        lines.append(f"shard      clips {shard.start}-{shard.stop - 1} of {shard.total}; join the shards with "
                     "`python pipeline/merge.py OUT SHARD...`")
    if n_done_before:
        lines.append(f"resumed    {n_done_before} clips were already done")
    plus = f" + {stats['versions']} versions" if stats["versions"] else ""
    lines.append(f"time       {elapsed:.1f} s in all; {stats['clips']} clips{plus} in {stats['seconds']:.1f} s = "
                 f"{rate:.1f} clips/s ({stats['audio_seconds'] / max(stats['seconds'], 1e-9):.0f}x real time) "
                 f"on {stats['device']} ({stats['params'].stft} STFT)")
    lines.append(f"start-up   {stats['startup']:.1f} s before the first clip (imports, annotations, file, front-end)")
    print("\n".join(lines))


def _fail(message: str, log=None) -> int:
    if log:
        out, errors = log
        write_log(out.with_suffix(".log"), errors)
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the hint is printed; no traceback
        sys.exit(130)
