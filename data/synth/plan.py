"""Clip plans of the demo corpus: per-clip latents, file names and tags, without audio."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data.mtat import FOLDERS, TAGS
from data.synth.tags import COLUMNS, _emit_tags, _force_tag
from data.synth.tracks import _pick, _sample_track


@dataclass(frozen=True)
class ClipPlan:
    """Everything one clip is rendered and tagged from.

    Attributes
    ----------
    index : int
        Position in the plan (also the row order of the CSV).
    clip_id : int
        The CSV's ``clip_id`` (increasing, with gaps, like MTAT's).
    mp3_path : str
        ``<f>/<artist>-<album>-<NN>-<title>-<start>-<end>.mp3``.
    track : int
        Track (song) index; clips of one track share genre, key, tempo and instruments, and one folder.
    genre, style : str
        Latent genre and its sub-style.
    key : int
        Tonic pitch class (0 = C).
    mode : str
        Scale name (a key of ``_SCALES``).
    bpm : float
        Tempo in beats per minute.
    meter : int
        Beats per bar (3 or 4).
    tempo : {'slow', 'medium', 'fast'}
        Tempo class (slow < 84 <= medium < 128 <= fast BPM).
    loudness : {'quiet', 'medium', 'loud'}
        Loudness class (target RMS level, velocities, compression).
    parts : tuple of (str, str)
        ``(instrument, role)`` pairs that are rendered, e.g. ``('piano', 'arp')``.
    lead : str or None
        Instrument carrying the melody when there is no singer.
    drums : str or None
        Drum style (``'rock'``, ``'techno'``, ``'tabla'``, ...), None without drums.
    voice : str or None
        ``'male'``, ``'female'``, ``'choir'``, ``'chant'``, ``'opera_male'``, ``'opera_female'``, ``'growl'``,
        ``'duet'``, or None without a singer.
    solo : bool
        One instrument playing alone.
    tags : tuple of str
        Tags emitted for the clip (the 50 and the others), in ``COLUMNS`` order.
    """

    index: int
    clip_id: int
    mp3_path: str
    track: int
    genre: str
    style: str
    key: int
    mode: str
    bpm: float
    meter: int
    tempo: str
    loudness: str
    parts: tuple
    lead: str | None
    drums: str | None
    voice: str | None
    solo: bool
    tags: tuple

    @property
    def instruments(self) -> tuple[str, ...]:
        """Distinct instruments of the clip, in part order."""
        return tuple(dict.fromkeys(p[0] for p in self.parts))

    @property
    def folder(self) -> str:
        """First-level audio folder (``0``-``f``)."""
        return self.mp3_path[0]


def _tempo_class(bpm: float) -> str:
    return "slow" if bpm < 84 else ("fast" if bpm >= 128 else "medium")


def _clip_latent(track: dict, rng: np.random.Generator) -> dict:
    """Per-clip variation of a track: the singer rests, drums drop out, a guitar solo, loudness moves."""
    c = dict(track)
    c["loudness"] = _pick(rng, track["loudness"])
    parts = list(track["parts"])
    voice = track["voice"] if (track["voice"] and rng.random() < track["voice_p"]) else None
    drums = track["drums"]
    if drums and drums not in ("techno", "dance") and rng.random() < 0.08:
        drums = None  # an intro or a break
    lead = track["lead"]
    if track["genre"] in ("rock", "metal") and voice is None and rng.random() < 0.5:
        parts.append((parts[0][0], "lead"))  # guitar solo instead of the singer
    if voice is None and track["genre"] in ("pop", "country") and rng.random() < 0.6:
        lead = _pick(rng, {"piano": 0.3, "electric_guitar": 0.3, "violin": 0.2, "flute": 0.2})
        parts.append((lead, "melody" if lead != "electric_guitar" else "lead"))
    if voice is None and not parts and track["genre"] == "choral":
        voice = track["voice"]  # a choral track without its choir would be silent
    if voice is None and track["genre"] == "opera":
        if not any(r == "melody" for _, r in parts):
            lead = "violin" if rng.random() < 0.5 else "flute"
            parts.append((lead, "melody"))
    c.update(parts=tuple(parts), voice=voice, drums=drums, lead=lead, tempo=_tempo_class(track["bpm"]))
    if voice is not None and c["solo"]:
        c["solo"] = False
    return c


_WORDS = ("blue", "night", "river", "stone", "light", "dream", "silver", "shadow", "golden", "winter", "echo",
          "garden", "morning", "storm", "ocean", "velvet", "iron", "crystal", "desert", "forest", "fire",
          "moon", "sun", "road", "city", "wind", "rain", "heart", "ghost", "glass", "paper", "northern", "lonely",
          "electric", "secret", "hollow", "wild", "quiet", "broken", "distant", "sacred", "little", "red")
_GENRE_WORDS = {
    "classical": ("sonata", "concerto", "suite", "partita", "nocturne", "prelude", "etude", "adagio", "allegro",
                  "minuet", "quartet", "op", "bwv", "kv"),
    "opera": ("aria", "recitativo", "act", "scena", "duetto", "cavatina"),
    "choral": ("mass", "kyrie", "gloria", "motet", "anthem", "psalm", "hymn"),
    "indian": ("raga", "alap", "jhala", "gat", "bhairav", "yaman", "kafi", "tala"),
    "electronic": ("mix", "dub", "remix", "edit", "loop", "pulse", "circuit", "system"),
    "ambient": ("drift", "horizon", "breath", "space", "meditation", "tide"),
}


def _name(rng: np.random.Generator, genre: str, k: int) -> str:
    words = list(_WORDS) + list(_GENRE_WORDS.get(genre, ())) * 2
    return "_".join(str(w) for w in rng.choice(words, size=k))


def plan(n_clips: int = 1600, seconds: float = 10.0, seed: int = 0) -> list[ClipPlan]:
    """Plan a demo corpus: the latent attributes, file names and tags of every clip, without audio.

    Cheap (about 0.1 ms per clip) and deterministic: ``generate`` renders exactly these clips.

    Parameters
    ----------
    n_clips : int >= 16
        Number of clips. Clips are spread as evenly as tracks allow over the 16 folders ``0``-``f``, so every
        split of both schemes has clips.
    seconds : float > 0
        Clip duration (only the file names' ``<start>-<end>`` depend on it).
    seed : int
        Corpus seed.

    Returns
    -------
    list of ClipPlan
        In CSV row order (increasing ``clip_id``).

    Raises
    ------
    ValueError
        If ``n_clips < 16``, ``seconds <= 0`` or ``seed`` is negative.
    """
    n_clips, seconds, seed = _check_args(n_clips, seconds, seed)
    root = np.random.SeedSequence(seed)
    grng = np.random.default_rng(root.spawn(1)[0])
    # Track sizes (1-4 clips per song, like MTAT's consecutive segments); at least 16 tracks.
    sizes: list[int] = []
    while sum(sizes) < n_clips:
        sizes.append(min(int(grng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15])), n_clips - sum(sizes)))
    while len(sizes) < len(FOLDERS):
        j = int(np.argmax(sizes))
        sizes[j] -= 1
        sizes.append(1)
    # Greedy least-filled folder per track (random tie order): near-uniform folders, every folder used.
    fill = dict.fromkeys(FOLDERS, 0)
    folder_of = []
    for s in sizes:
        order = grng.permutation(len(FOLDERS))
        f = min((FOLDERS[i] for i in order), key=lambda x: fill[x])
        fill[f] += s
        folder_of.append(f)
    seg = max(1, int(round(seconds)))
    clips: list[ClipPlan] = []
    used_names: set[str] = set()
    clip_id = int(grng.integers(1, 5))
    first_in_folder: dict[str, int] = {}
    for t, (size, folder) in enumerate(zip(sizes, folder_of)):
        trng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, t)))
        track = _sample_track(trng)
        while True:
            artist = _name(trng, track["genre"], int(trng.integers(1, 4)))
            album = _name(trng, track["genre"], int(trng.integers(1, 5)))
            title = _name(trng, track["genre"], int(trng.integers(1, 5)))
            stem = f"{artist}-{album}-{int(trng.integers(1, 16)):02d}-{title}"
            if stem not in used_names:
                used_names.add(stem)
                break
        start = int(trng.integers(0, 4)) * seg
        for j in range(size):
            i = len(clips)
            crng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, i)))
            c = _clip_latent(track, crng)
            tags = _emit_tags(c, crng)
            if folder not in first_in_folder:
                first_in_folder[folder] = i
                if not set(tags) & set(TAGS):
                    tags = tuple(x for x in COLUMNS if x in set(tags) | set(_force_tag(c, crng)))
            a, b = start + j * seg, start + (j + 1) * seg
            clips.append(ClipPlan(
                index=i, clip_id=clip_id, mp3_path=f"{folder}/{stem}-{a}-{b}.mp3", track=t, genre=c["genre"],
                style=c["style"], key=c["key"], mode=c["mode"], bpm=c["bpm"], meter=c["meter"],
                tempo=c["tempo"], loudness=c["loudness"], parts=tuple(tuple(p) for p in c["parts"]),
                lead=c["lead"], drums=c["drums"], voice=c["voice"], solo=bool(c["solo"]), tags=tags))
            clip_id += int(grng.integers(1, 5))
    return clips


def _check_args(n_clips, seconds, seed):
    if isinstance(n_clips, bool) or not isinstance(n_clips, (int, np.integer)):
        raise ValueError(f"n_clips must be an integer >= 16, got {n_clips!r}")
    if n_clips < len(FOLDERS):
        raise ValueError(f"n_clips must be >= 16 (one clip per folder 0-f, so every split has clips), got {n_clips}")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(n_clips), seconds, int(seed)
