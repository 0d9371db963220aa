"""Demo corpus generator: a small, synthetic, MagnaTagATune-shaped corpus whose tags can be heard.

This module writes the corpus and is its command line; the synthesizer it describes (tags, clip plans, audio)
is the package ``data/synth``, whose public names are re-exported here.

The corpus has the layout and the annotation format of the real release (see ``/work/shared/MTAT.md``)::

    ROOT/annotations_final.csv     tab-separated, every field quoted, CRLF: clip_id, 188 tag columns, mp3_path
    ROOT/mp3/<f>/<artist>-<album>-<NN>-<title>-<start>-<end>.mp3     16 kHz mono MP3, <f> in 0-9, a-f
    ROOT/waveform/<f>/....npy      (``waveform=True``) the decoded MP3 as 16 kHz float32
    ROOT/latent.csv                the hidden attributes every clip was rendered from (not in MTAT)
    ROOT/demo.json                 the parameters; written last, it marks the corpus complete

so that every part of the project (reader, splits, features, training, evaluation) runs on it unchanged.

Generative model
----------------
Three levels, all drawn from ``numpy.random.SeedSequence(seed)`` children keyed by track or clip index, so the
corpus depends only on ``(n_clips, seconds, shortest, seed)`` and not on the number of worker processes:

1. **Track** (1-4 clips each, all in the same folder, like the segments of one MTAT song): a *genre* is the
   latent cause of everything else. Genre, style, key, mode, tempo, meter, the instrument parts, the drum kit
   and the singer are drawn from genre-conditioned distributions (``data.synth.tracks``: one function per genre).
2. **Clip**: per-segment variation of the track (the singer rests, the drums drop out, a guitar solo, the
   loudness class moves), then the *tags* (``data.synth.tags``): every tag is a noisy-OR of latent attributes,
   ``P(tag) = 1 - (1 - fp) * prod_i (1 - min(.97, a * p_i))`` over the attributes ``i`` the clip has, where
   ``a`` is a per-clip annotator-attention factor (Gamma, mean 1) that makes missing tags co-occur as in MTAT.
   Synonyms (``vocal``/``vocals``/``voice``/``singing``; ``male``/``man``/``male vocal``/``male voice``, ...)
   are separate draws with different rates, so a positive is often missing, and a small false-positive rate
   ``fp`` adds spurious tags. About one clip in six ends up with none of the 50 tags (MTAT: one in five);
   ``read_annotations`` drops those, as it does for the real file.
3. **Audio** (``render``): the parts are synthesized at 16 kHz from a key, a chord progression and a bar grid
   that starts at a random phase, mixed at random levels with a random tilt EQ, room reverb and a noise floor,
   scaled to the clip's loudness class and passed through a soft limiter (peaks < 0.9). The clip is encoded
   like MTAT's: MP3, 32 kbit/s CBR, by libsndfile's LAME.

Genres (track prior): classical .21 (orchestral, piano, baroque, chamber, solo), electronic .19 (techno, dance,
electronic), ambient .10 (ambient, new age), rock .09, indian .06, pop .06, opera .06, choral .04 (choir, chant),
metal .04, country .03, folk .03 (incl. irish), jazz .03, weird .03, world .03 (maqam: oud, ney, darbuka).
Jazz, world and folk mostly emit tags outside the 50, so they feed the clips that get dropped.

Tags and what makes them audible
--------------------------------
=====================================  =====================================================================
tags                                    acoustics
=====================================  =====================================================================
guitar                                  Karplus-Strong-like strings (``_string``: a lossy delay loop computed
                                        in the frequency domain): acoustic strums / finger-picking / boom-chick,
                                        clean electric, distorted power chords and palm-muted chugs (mid-
                                        boosted asymmetric tanh overdrive + cabinet), bent lead lines
piano                                   stiff strings (inharmonicity B ~ 1e-4..5e-4), two detuned strings per
                                        note (beating), hammer excitation brighter with velocity, dampers
harpsichord                             very bright plucks near the string end, 8' + 4' (octave) strings
harp                                    soft plucks (dark excitation), long rings, rolled arpeggios, glissandi
sitar, indian                           bright plucks through an amplitude-dependent jawari "buzz", meend
                                        (pitch glides), chikari strokes, tanpura drone, tabla (bayan glide),
                                        raga scales, no chords
strings, violin, cello                  band-limited bowed sawtooth + body resonances, bow noise, delayed
                                        vibrato 5-7 Hz; violin D4-E6, cello C2-G4; section = 4 voice-led
                                        lines, each a detuned ensemble, slow attacks
flute                                   nearly sinusoidal tone, breath noise, tongued chiff, 4.5-5.5 Hz vibrato
synth, electronic, techno, dance        detuned band-limited saws with a swept low-pass (stacks of wavetables),
                                        pads, arpeggios, stabs, acid bass with slides
drums, beat, beats                      kick (pitch-swept sine), snare (tone + noise), hats, ride, crash, toms,
                                        clap; patterns per style at the tempo (rock, metal double kick, pop,
                                        four-on-the-floor, breakbeat, country train beat, jazz swing; tabla,
                                        darbuka and bodhran for indian, world and irish music)
fast, slow                              tempo (slow < 84 BPM <= medium < 128 BPM <= fast) drives every note
                                        and drum onset rate
loud, quiet, soft                       target RMS (quiet -36..-28, medium -26..-19, loud -16..-11 dBFS),
                                        velocity (brightness), compression; quiet clips swell and fade
vocal, vocals, voice, singing           formant synthesis: glottal source (harmonics ~ k^-1.2..k^-1.7, jitter,
                                        aspiration), vowel formants F1-F4 per syllable, consonant noise bursts
male, man, male vocal, male voice       sung f0 ~ 100-230 Hz (median ~ 150), male formants
female, woman, female vocal/voice       sung f0 ~ 200-470 Hz (median ~ 300), female formants (x 1.17)
opera                                   strong 5.5-6.5 Hz vibrato (+-60-100 cents), singer's formant ~ 3 kHz
choir, choral                           SATB: four voice-led parts, each a detuned ensemble, male + female
                                        formants, long vowels; chant = male unison
no vocals, no vocal, no voice           no singer (emitted rarely, as in MTAT)
classical, classic, rock, metal, pop,   genre-level arrangement: instruments, drum style, tempo, mode, voice
country, ambient, new age, weird        and loudness priors; weird = ring modulation, reversed notes, bells,
                                        glitches, clusters and chirps off the grid
solo                                    a single instrument playing alone, or a lead guitar solo
=====================================  =====================================================================

Tag frequencies follow MTAT's skew (within about 25% of MTAT's rate for every one of the 50): in expectation
guitar, classical and slow lead (14-16% of clips), strings, techno and drums follow (about 10%), and choral is
the rarest (about 2%).
The 138 other tag columns (``OTHER_TAGS``) carry plausible MTAT names; many are grounded in the latent
(``jazz``, ``folk``, ``baroque``, ``orchestra``, ``chant``, ``tabla``, ``no beat``, ...), the rest are rare
noise.

Nothing here is fitted to a model: the rates are MTAT-like guesses, and the timbres, tempo ranges, levels,
reverb and noise vary per clip so that no single summary statistic separates the tags.

Usage
-----
``python data/demo.py --out cache/demo --clips 1600 --seconds 10 --seed 0`` or ``generate(root)`` /
``ensure_demo()`` from Python. ``plan(n_clips, seconds, seed)`` returns the clip plans (latent + tags) without
rendering audio; ``render(clip, seconds, seed)`` renders one.

Cost: the default corpus (1600 x 10 s) takes about 150 CPU-seconds, i.e. about 75 s on two free cores; 60% of
it is LAME encoding (about 55 ms per 10-s clip, fixed by libsndfile), synthesis about 26 ms per clip. It
occupies about 65 MB on disk (plus 1 GB with the waveform layout).

Sanity check on the default corpus (standard split, 255 test clips): logistic regression on MFCC mean/std
reaches a macro ROC-AUC of 0.83 (PR-AUC 0.31), a small 2-D CNN on log-mels trained for 25 epochs on a CPU 0.89
(0.43): the tags that need time structure (tempo, voice, vibrato) separate the two.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

from data.files import write_atomically
from data.mtat import ANNOTATIONS, FOLDERS, SPLITS, TAGS, read_annotations
from data.audio import SR
# The synthesizer (re-exported here: ``data.demo`` is the module the rest of the project and the tests use).
from data.synth.plan import ClipPlan, _check_args, _tempo_class, plan  # noqa: F401
from data.synth.tags import COLUMNS, OTHER_TAGS  # noqa: F401


def __getattr__(name):
    # ``render`` pulls in scipy.signal (half a second): loaded on first use, so --help answers at once.
    if name == "render":
        from data.synth.render import render
        return render
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Bumped whenever the output for given parameters changes; part of the corpus identity in ``demo.json``.
VERSION = 2  # 2: annotations_final.csv with CRLF line ends, as the release
MARKER = "demo.json"
PENDING = ".demo-pending.json"
LATENT = "latent.csv"


#: MTAT's format: MPEG-2 layer III, 16 kHz mono, 32 kbit/s constant bit rate. libsndfile maps its compression
#: level linearly onto 160..8 kbit/s at 16 kHz.
MP3_KBPS = 32


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name (``.<name>.<pid>.tmp``) still runs."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return pid != os.getpid()


def encode_mp3(y: np.ndarray) -> bytes:
    """Encode a 16 kHz mono waveform as MTAT-like MP3 bytes (32 kbit/s CBR, LAME through libsndfile).

    As with the real clips, decoding gives the audio delayed by the encoder and padded: about 1,300 more
    samples than ``len(y)``.
    """
    buf = io.BytesIO()
    sf.write(buf, y, SR, format="MP3", bitrate_mode="CONSTANT", compression_level=(160 - MP3_KBPS) / 152)
    return buf.getvalue()


def _work(task) -> tuple[int, float]:
    """Render, encode and write one clip (skipping files a previous, interrupted run completed)."""
    clip, seconds, seed, root, waveform = task
    t = time.perf_counter()
    mp3 = Path(root) / "mp3" / clip.mp3_path
    npy = Path(root) / "waveform" / (clip.mp3_path[:-4] + ".npy")
    need_npy = waveform and not npy.exists()
    if not mp3.exists():
        from data.synth.render import render
        data = encode_mp3(render(clip, seconds, seed))
        write_atomically(mp3, data)
    elif need_npy:
        data = mp3.read_bytes()
    if need_npy:
        y, _ = sf.read(io.BytesIO(data), dtype="float32")
        buf = io.BytesIO()
        np.save(buf, y)
        write_atomically(npy, buf.getvalue())
    return clip.index, time.perf_counter() - t


def _params(n_clips, seconds, seed, waveform, shortest=None) -> dict:
    return {"generator": "data.demo", "version": VERSION, "n_clips": n_clips, "seconds": seconds, "seed": seed,
            "waveform": bool(waveform), "sample_rate": SR, "shortest": shortest}


_IDENTITY = ("generator", "version", "n_clips", "seconds", "seed", "waveform", "sample_rate", "shortest")


def _describe(p: dict) -> str:
    return ", ".join(f"{k}={p.get(k)!r}" for k in ("n_clips", "seconds", "shortest", "seed", "waveform", "version"))


def durations(n_clips: int, seconds: float, shortest: float | None, seed: int) -> list[float]:
    """Each clip's duration: ``seconds``, or with ``shortest`` drawn uniformly from ``[shortest, seconds]``
    (to 0.1 s, from the clip's own ``SeedSequence(seed, spawn_key=(4, index))``)."""
    if shortest is None:
        return [seconds] * n_clips
    return [round(float(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, i))).uniform(
        shortest, seconds)), 1) for i in range(n_clips)]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileExistsError(f"{path}: unreadable demo marker ({exc}); delete the folder {path.parent} "
                              f"or pick another one") from exc


def _write_csvs(root: Path, clips: list[ClipPlan]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(["clip_id", *COLUMNS, "mp3_path"])
    for c in clips:
        tags = set(c.tags)
        w.writerow([c.clip_id, *(1 if t in tags else 0 for t in COLUMNS), c.mp3_path])
    csv_path = root / ANNOTATIONS
    write_atomically(csv_path, buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = ["clip_id", "mp3_path", "track", "genre", "style", "key", "mode", "bpm", "meter", "tempo", "loudness",
              "parts", "lead", "drums", "voice", "solo"]
    w.writerow(fields)
    for c in clips:
        d = asdict(c)
        d["parts"] = "|".join(f"{i}:{r}" for i, r in c.parts)
        w.writerow(["" if d[k] is None else d[k] for k in fields])
    write_atomically(root / LATENT, buf.getvalue().encode())
    return csv_path


def generate(root: str | os.PathLike, n_clips: int = 1600, seconds: float = 10.0, seed: int = 0,
             waveform: bool = False, workers: int | None = None, progress: bool = True,
             shortest: float | None = None) -> Path:
    """Write a demo corpus in the MTAT layout (see the module docstring) and return its annotation file.

    Deterministic: the same ``(n_clips, seconds, seed)`` give the same CSV and byte-identical MP3s on a given
    machine and library versions, whatever ``workers`` is (each clip draws from its own
    ``SeedSequence(seed, spawn_key=(3, index))``).

    Parameters
    ----------
    root : path
        Output folder. It must be missing, empty, or a demo corpus made with the same parameters: then this
        returns at once (a corpus with the waveform layout also serves ``waveform=False``), adds the missing
        waveform layout, or resumes an interrupted run.
    n_clips : int >= 16
        Number of clips; the default, 1600 x 10 s, takes about 75 s on two free cores.
    seconds : float > 0
        Duration of every clip (the longest, with ``shortest``).
    seed : int >= 0
        Corpus seed.
    waveform : bool
        Also write ``ROOT/waveform/<f>/<name>.npy``: the *decoded MP3* as float32 at 16 kHz (what the
        project reads from the MP3 layout, as in MTAT's pre-decoded release), not the pre-encoding signal.
    workers : int or None
        Worker processes (default ``os.cpu_count()``); 1 renders in this process.
    progress : bool
        Show a tqdm progress bar with the rate in clips per second.
    shortest : float in (0, seconds] or None
        Durations vary: each clip's is drawn uniformly from ``[shortest, seconds]`` (:func:`durations`),
        so that batches mix lengths as a real collection's do. ``None``: every clip lasts ``seconds``.

    Returns
    -------
    pathlib.Path
        ``ROOT/annotations_final.csv``.

    Raises
    ------
    ValueError
        For a bad ``n_clips``, ``seconds``, ``shortest``, ``seed`` or ``workers`` (the message names it).
    FileExistsError
        When ``root`` holds something else: a demo corpus with other parameters, or files that are not a
        demo corpus. Pick another folder or delete that one.
    """
    n_clips, seconds, seed = _check_args(n_clips, seconds, seed)
    if shortest is not None:
        try:
            shortest = float(shortest)
        except (TypeError, ValueError):
            raise ValueError(f"shortest must be a number in (0, seconds], got {shortest!r}") from None
        if not 0 < shortest <= seconds:
            raise ValueError(f"shortest must be in (0, seconds={seconds}], got {shortest}")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    root = Path(root)
    params = _params(n_clips, seconds, seed, waveform, shortest)
    csv_path, marker, pending = root / ANNOTATIONS, root / MARKER, root / PENDING
    upgrade = False
    if marker.exists():
        old = _read_json(marker)
        same = all(old.get(k) == params[k] for k in _IDENTITY if k != "waveform")
        if not (same and csv_path.is_file()):
            raise FileExistsError(
                f"{root} already holds a demo corpus made with {_describe(old)}, not {_describe(params)}; "
                f"pick another folder or delete {root}")
        if old.get("waveform") or not waveform:
            return csv_path
        upgrade = True  # a complete MP3 corpus: only the waveform layout is missing
    elif pending.exists():
        old = _read_json(pending)
        if not all(old.get(k) == params[k] for k in _IDENTITY):
            raise FileExistsError(
                f"{root} holds an unfinished demo corpus made with {_describe(old)}, not {_describe(params)}; "
                f"pick another folder or delete {root}")
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder nor a demo corpus (no {MARKER}); "
                              f"pick another folder or delete it")
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(pending, json.dumps(params, indent=1).encode())
    if upgrade:
        marker.unlink()  # after the pending marker: an interrupted upgrade resumes like any other run
    clips = plan(n_clips, seconds, seed)
    for sub in ("mp3", "waveform") if waveform else ("mp3",):
        for f in FOLDERS:
            (root / sub / f).mkdir(parents=True, exist_ok=True)
            for tmp in (root / sub / f).glob(".*.tmp"):
                if not _writer_alive(tmp):  # left by a killed run (not by a concurrent one)
                    tmp.unlink(missing_ok=True)
    tasks = [(c, d, seed, str(root), bool(waveform))
             for c, d in zip(clips, durations(len(clips), seconds, shortest, seed))]
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="clip", desc=f"demo corpus -> {root}", disable=not progress, smoothing=0.1)
    try:
        if workers == 1:
            for task in tasks:
                _work(task)
                bar.update()
        else:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(min(workers, len(tasks))) as pool:
                for _ in pool.imap_unordered(_work, tasks, chunksize=4):
                    bar.update()
    finally:
        bar.close()
    _write_csvs(root, clips)
    done = dict(params, clips=len(clips), seconds_taken=round(time.perf_counter() - t0, 1),
                waveform_source="decoded MP3" if waveform else None, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_atomically(marker, json.dumps(done, indent=1).encode())  # last: marks the corpus complete
    pending.unlink(missing_ok=True)
    return csv_path


def ensure_demo(root: str | os.PathLike = "cache/demo", **kw) -> Path:
    """Generate the demo corpus at ``root`` unless it is already there; return ``root``.

    This is what the pipeline uses when no ``--data`` is given. With no keyword arguments a finished
    demo corpus at ``root`` is taken whatever it was made with (``python data/demo.py --clips 120``,
    then ``python pipeline/extract.py``, extracts those 120 clips); keyword arguments go to
    ``generate``, and a corpus there must then have been made with them.

    Raises
    ------
    FileExistsError
        As :func:`generate`: ``root`` holds something else.
    """
    root = Path(root)
    if not kw and (root / MARKER).is_file() and (root / ANNOTATIONS).is_file():
        return root
    generate(root, **kw)
    return root


def summary(root: str | os.PathLike) -> str:
    """A short text report of a corpus: clips, tag counts (top and bottom), clips per split.

    Parameters
    ----------
    root : path
        A corpus root (any MTAT-format folder works).

    Returns
    -------
    str
        A few lines, as printed by the command line.
    """
    import pandas as pd

    root = Path(root)
    raw = pd.read_csv(root / ANNOTATIONS, sep="\t")
    kept = read_annotations(root / ANNOTATIONS, scheme=None)
    counts = kept[list(TAGS)].sum().sort_values(ascending=False)
    lines = [f"{len(raw)} clips, {len(kept)} with at least one of the 50 tags "
             f"({len(raw) - len(kept)} dropped by read_annotations), {len(raw.columns) - 2} tag columns",
             "most frequent: " + ", ".join(f"{t} {n}" for t, n in counts.head(5).items()),
             "least frequent: " + ", ".join(f"{t} {n}" for t, n in counts.tail(5).items())]
    for scheme in SPLITS:
        df = read_annotations(root / ANNOTATIONS, scheme=scheme)
        per = df["split"].value_counts()
        lines.append(f"{scheme} split: " + ", ".join(f"{s} {int(per.get(s, 0))}" for s in SPLITS[scheme]))
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: generate (or find) a corpus, print its summary; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="python data/demo.py",
        description="Write a synthetic MTAT-shaped demo corpus (annotations_final.csv + 16 kHz mono MP3s in "
                    "folders 0-9, a-f) whose tags are grounded in the audio.")
    ap.add_argument("--out", default="cache/demo", help="output folder (default: %(default)s)")
    ap.add_argument("--clips", type=int, default=1600, help="number of clips, >= 16 (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip duration in seconds (default: %(default)s)")
    ap.add_argument("--shortest", type=float, default=None,
                    help="durations vary: each clip's drawn uniformly from [SHORTEST, SECONDS] (default: all SECONDS)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default: %(default)s)")
    ap.add_argument("--waveform", action="store_true",
                    help="also write waveform/<f>/*.npy (the decoded MP3 as float32 at 16 kHz)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        generate(a.out, n_clips=a.clips, seconds=a.seconds, seed=a.seed, waveform=a.waveform, workers=a.workers,
                 progress=not a.quiet, shortest=a.shortest)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(a.out))
    print(f"done in {time.perf_counter() - t0:.1f} s: {Path(a.out) / ANNOTATIONS}")
    return 0


if __name__ == "__main__":
    # Run through the package module so that worker processes pickle ``data.demo`` functions, not ``__main__``.
    from data.demo import main as _main

    sys.exit(_main())
