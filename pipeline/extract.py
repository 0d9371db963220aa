"""Offline stage: decode every clip once, compute features in batches, write chunked HDF5.

    python pipeline/extract.py --features mel,mfcc[,chroma] [--data ROOT] [--split gct634|standard]
                               [--out cache/features.h5] [--dtype float32|float16] [--device auto|cpu|cuda]
                               [--stft auto|fft|nnaudio] [--workers N] [--threads N] [--batch N] [--place P] [--shard I/N]
                               [--augment V] [--augment-seed S]

This is the command line and the file's set-up; ``pipeline/engine.py`` runs the work: worker
processes of a torch ``DataLoader`` decode audio (MP3 or pre-decoded .npy) a batch at a time; on the
CPU each worker also computes its batch's features (FFT STFT, one torch thread), while on CUDA the
batch crosses as one padded shared-memory tensor and the front-end (nnAudio STFT) runs on the GPU;
a thread writes each batch behind the next one's compute. A killed run
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
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from data.audio import SR
from data.cli import HelpFormatter
from data.files import Locked, held_lock, output_error, write_atomically
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
    p.add_argument("--features", default="mel,mfcc,chroma",
                   help="comma-separated: mel, mfcc, chroma, musicnn (the taggram of musicnn's network trained on "
                        "the real MTAT: 50 tag probabilities per 3-s window, held over its frames; one network pass "
                        "per window, some 0.1 s of CPU each, nothing on a GPU)")
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
    p.add_argument("--batch", type=int, default=None,
                   help="most clips per front-end batch; default: on a GPU up to 256, sized by audio (128 clips "
                        "of 30 s); on the CPU 32, or fewer so that every worker gets a batch")
    p.add_argument("--place", choices=("auto", "workers", "main"), default="auto",
                   help="where the front-end runs: in the decoding workers, or in this process on the device "
                        "with the copy back and the writes overlapped (the GPU's pipeline); auto: main on CUDA, "
                        "workers on the CPU")
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
                   help="replace an existing output, or a partial run (OUT.part) made with other parameters; a "
                        "partial run with these is continued (delete OUT.part to start it over)")
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
    if "musicnn" in args.features and args.n_mels != 96:
        parser.error(f"--features musicnn: musicnn's network reads 96 mel bands, got --n-mels {args.n_mels}")
    if args.batch is not None and args.batch < 1:
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
    if error := device_error(args.device):
        parser.error(error)
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    pick_shard(args, parser, os.environ)
    for path in (args.out, args.out.with_name(args.out.name + ".part")):  # outputs checked before any work
        if path.is_dir():
            parser.error(f"--out {args.out}: {path} is a folder; give a file name, e.g. --out {args.out / 'features.h5'}")
    if error := output_error(args.out, "--out", parents=True):
        parser.error(error)
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

    A header that cannot be read gets a bound from the file's size instead: no format the decoder
    reads holds a second of audio in under 500 bytes (4 kbit/s; MP3 and Opus go down to 8 and 6),
    so a clip the decoder can still read loses nothing, and a missing or broken file reserves next
    to nothing (it reserved ``--max-seconds``: 19 MB of mel+MFCC+chroma each).
    """
    cap = int(args.max_seconds * SR)

    def by_size(path: Path) -> int:
        try:
            return os.path.getsize(path) * SR // 500
        except OSError:  # missing: the decoder says so
            return 0

    return np.minimum(np.array([estimate_samples(p) or by_size(p) for p in paths], np.int64), cap)


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


def other_annotations(path: Path, part_of: store.Part) -> str:
    """``''`` when the features file at ``path`` holds ``part_of``'s clips of the same annotation file
    (by content) or predates that record; else which annotation file and clips it was made from."""
    have = store.read_part(path)
    if have is None or (have.sha256, have.total, have.start, have.stop) == \
            (part_of.sha256, part_of.total, part_of.start, part_of.stop):
        return ""
    return (f"another annotation file or version of it ({have.annotations}: clips {have.start}-{have.stop} "
            f"of {have.total}, sha256 {have.sha256[:12]}...)")


def describe_changes(diff: list[str], want: store.Header, have: store.Header) -> str:
    """``'augment 2 in the file, 0 asked'``, ... for the settings that differ."""
    a, b = have.attrs(), want.attrs()
    return ", ".join(f"{k} {a[k]!r} in the file, {b[k]!r} asked" for k in diff)


def main(argv=None) -> int:
    t_start = time.time()
    args = parse_args(argv)
    args.t_start = t_start
    if "musicnn" in args.features:  # before any file is made: the weights come from a package
        from features.taggram import PretrainedError, package_dir

        try:
            package_dir()
        except PretrainedError as exc:
            return _fail(f"--features musicnn: {exc}")
    # The heavy libraries load only now that the arguments are good: --help and errors answer at once.
    args.device = pick_device(args.device)
    if args.stft == "auto":  # the design: nnAudio batched on the GPU; on the CPU the FFT is cheaper
        args.stft = "nnaudio" if args.device.type == "cuda" else "fft"
    args.params = dataclasses.replace(args.params, stft=args.stft)
    if args.data is None:
        from data.demo import ensure_demo  # imported here: only the demo needs the generator
        try:
            root = ensure_demo(DEMO_ROOT)
        except FileExistsError as exc:
            return _fail(f"no --data given, and the demo corpus cannot be made: {exc}")
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
                        augment_seed=args.augment_seed, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with held_lock(args.out, "another extraction"):  # two at once took each other's .part for broken
            return write_features(args, argv, clips, layout, want, part_of)
    except Locked as exc:
        return _fail(str(exc))


def write_features(args, argv, clips, layout, want: store.Header, part_of: store.Part) -> int:
    """Extract ``clips`` into ``args.out``: through ``OUT.part``, resumed where a killed run left it, renamed
    once complete; the exit status."""
    t_start = args.t_start
    out, part = args.out, args.out.with_name(args.out.name + ".part")
    if out.exists() and not args.overwrite:
        try:
            have = store.header(out)
        except store.StoreError as exc:
            return _fail(f"{exc}; pass --overwrite to replace it")
        if diff := want.changed(have):
            return _fail(f"{out} already holds features made with other settings ({', '.join(diff)}): "
                         f"{describe_changes(diff, want, have)}; choose another --out or pass --overwrite")
        if other := other_annotations(out, part_of):
            return _fail(f"{out} was made from {other}; choose another --out or pass --overwrite")
        print(f"{out} is already complete for these settings; nothing to do.")
        return 0

    paths = [layout.path(p) for p in clips["mp3_path"]]
    if part.exists():
        try:
            have = store.header(part)
            table = store.read_table(part)
            other = other_annotations(part, part_of)
        except (store.StoreError, OSError, KeyError) as exc:
            print(f"warning: {part} is unreadable ({exc}); starting over", file=sys.stderr)
            part.unlink()
        else:
            if not other and not np.array_equal(table["clip_id"].to_numpy(), clips["clip_id"].to_numpy()):
                other = "another annotation file"
            diff = want.changed(have)
            why = (f"other settings ({', '.join(diff)}): {describe_changes(diff, want, have)}"
                   if diff else f"made from {other}" if other else "")
            if why and not args.overwrite:
                return _fail(f"{part} is a partial run with {why}; re-run with those settings to finish it, or "
                             "pass --overwrite to discard it")
            if why:  # --overwrite discards only a partial run it cannot continue
                print(f"--overwrite: discarding {part}, a partial run with {why}", file=sys.stderr)
                part.unlink()
    if not part.exists():
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


def run_batches(writer: store.Writer, paths: list[Path], args) -> dict:
    """Extract every unfinished batch of ``writer``'s file (``pipeline.engine``); the run's statistics."""
    import torch

    from features.frontend import FrontEnd
    from pipeline.engine import extract_all

    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - args.workers))
    # cuDNN's TF32 convolutions (on by default) would move nnAudio's STFT off librosa's numbers.
    torch.backends.cudnn.allow_tf32 = False
    frontend = FrontEnd(args.features, args.params).to(args.device)
    startup = time.time() - args.t_start  # imports, reading the annotations, creating the file, the front-end
    stats = extract_all(writer, paths, frontend, args.device, workers=args.workers, batch=args.batch,
                        min_samples=int(args.min_seconds * SR), max_samples=int(args.max_seconds * SR),
                        quiet=args.quiet, versions_per_clip=args.augment, place=args.place)
    return dict(stats, startup=startup, device=args.device, params=args.params)


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
        code = main()
    except KeyboardInterrupt:  # the hint is printed; no traceback
        code = 130
    # The file is written, closed and renamed, the log too: skip the interpreter's teardown of torch,
    # half a second of every run (a third of a small job's time beside the imports; bench/RESULTS.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
