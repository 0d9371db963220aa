"""Track latents of the demo corpus: the genre prior, the scales, and one sampling function per genre."""
from __future__ import annotations

import numpy as np


_GENRES = {  # genre -> track prior
    "classical": 0.212, "electronic": 0.189, "ambient": 0.104, "rock": 0.094, "indian": 0.057, "pop": 0.057,
    "opera": 0.057, "choral": 0.042, "metal": 0.038, "country": 0.033, "folk": 0.033, "jazz": 0.028,
    "weird": 0.028, "world": 0.028,
}

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10), "hijaz": (0, 1, 4, 5, 7, 8, 10), "bhairav": (0, 1, 4, 5, 7, 8, 11),
    "yaman": (0, 2, 4, 6, 7, 9, 11), "kafi": (0, 2, 3, 5, 7, 9, 10), "chromatic": tuple(range(12)),
}
_MINORISH = {"minor", "dorian", "harmonic_minor", "phrygian", "kafi", "hijaz", "bhairav"}


def _pick(rng: np.random.Generator, options: dict):
    """One key of ``options`` drawn with the (unnormalised) weights that are its values."""
    keys = list(options)
    w = np.array([options[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _bpm_in(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A tempo in BPM, log-uniform in ``[lo, hi]``."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# One function per genre: each draws the genre's own part of a track latent from ``rng`` and returns those
# keys of the track (``style``, ``mode`` and ``bpm`` always); ``_sample_track`` fills in the rest.

def _classical_track(rng: np.random.Generator) -> dict:
    """Orchestral, piano, baroque, chamber or solo classical music."""
    u = rng.random
    parts: list[tuple[str, str]] = []
    solo = False
    style = _pick(rng, {"orchestral": 0.3, "piano": 0.24, "baroque": 0.2, "chamber": 0.11, "solo": 0.15})
    mode = _pick(rng, {"major": 0.55, "minor": 0.35, "harmonic_minor": 0.1})
    bpm = _bpm_in(rng, 48, 170)
    meter = 3 if u() < 0.2 else 4
    loud = {"quiet": 0.45, "medium": 0.45, "loud": 0.1}
    if style == "orchestral":
        parts.append(("strings", "stacc" if bpm > 125 and u() < 0.6 else "pad"))
        lead = _pick(rng, {"violin": 0.3, "cello": 0.12, "flute": 0.28, "harp": 0.1, "none": 0.2})
        if lead != "none":
            parts.append((lead, "melody"))
        else:
            lead = None
            parts[0] = ("strings", "melody")
        if u() < 0.2 and lead != "harp":
            parts.append(("harp", "arp"))
        if u() < 0.1:
            parts.append(("piano", "chords"))
    elif style == "piano":
        parts.append(("piano", _pick(rng, {"melody": 0.4, "alberti": 0.3, "arp": 0.3})))
        lead, solo = "piano", True
    elif style == "baroque":
        parts.append(("harpsichord", _pick(rng, {"melody": 0.5, "continuo": 0.5})))
        lead = "harpsichord"
        if u() < 0.45:
            parts.append(("strings", "pad" if u() < 0.5 else "stacc"))
        if u() < 0.4:
            parts.append(("cello", "bass"))
        if parts[0][1] == "continuo":
            lead = _pick(rng, {"violin": 0.4, "flute": 0.4, "harpsichord": 0.2})
            if lead != "harpsichord":
                parts.append((lead, "melody"))
        solo = len(parts) == 1
    elif style == "chamber":
        lead = _pick(rng, {"violin": 0.5, "cello": 0.25, "flute": 0.25})
        parts += [(lead, "melody"), ("piano", _pick(rng, {"chords": 0.5, "arp": 0.5}))]
        if lead != "cello" and u() < 0.5:
            parts.append(("cello", "bass"))
    else:
        lead = _pick(rng, {"violin": 0.3, "cello": 0.25, "flute": 0.2, "harp": 0.15, "acoustic_guitar": 0.1})
        parts.append((lead, "melody" if lead not in ("harp", "acoustic_guitar") else "solo"))
        solo = True
    return dict(style=style, mode=mode, bpm=bpm, meter=meter, loudness=loud, parts=parts, lead=lead, solo=solo)


def _electronic_track(rng: np.random.Generator) -> dict:
    """Techno, dance or other electronic music: synths over a drum machine."""
    u = rng.random
    parts: list[tuple[str, str]] = []
    voice = None
    style = _pick(rng, {"techno": 0.6, "dance": 0.2, "electronic": 0.2})
    mode = _pick(rng, {"minor": 0.6, "phrygian": 0.15, "major": 0.25})
    loud = {"quiet": 0.05, "medium": 0.55, "loud": 0.4}
    if style == "techno":
        bpm = _bpm_in(rng, 122, 145)
        drums = "techno"
        parts += [("synth", "acid" if u() < 0.5 else "bass")]
        parts += [("synth", _pick(rng, {"arp": 0.45, "stab": 0.35, "pad": 0.2}))]
        voice_p = 0.0
    elif style == "dance":
        bpm = _bpm_in(rng, 115, 132)
        drums = "dance"
        parts += [("synth", "bass"), ("synth", "stab" if u() < 0.5 else "arp")]
        if u() < 0.35:
            parts.append(("piano", "comp"))
        if u() < 0.5:
            parts.append(("synth", "pad"))
        voice = "female" if u() < 0.45 else ("male" if u() < 0.25 else None)
        voice_p = 0.7
    else:
        bpm = _bpm_in(rng, 80, 150)
        drums = "breaks" if u() < 0.75 else None
        parts += [("synth", "pad"), ("synth", _pick(rng, {"arp": 0.5, "lead": 0.3, "bass": 0.2}))]
        if u() < 0.2:
            parts.append(("electric_guitar", "arp"))
        voice = "female" if u() < 0.15 else None
        voice_p = 0.6
    return dict(style=style, mode=mode, bpm=bpm, loudness=loud, parts=parts, lead="synth", drums=drums, voice=voice,
                voice_p=voice_p)


def _rock_track(rng: np.random.Generator) -> dict:
    """Rock: distorted or clean guitar, bass, drums, a singer."""
    u = rng.random
    mode = _pick(rng, {"major": 0.35, "minor": 0.35, "mixolydian": 0.15, "dorian": 0.15})
    bpm = _bpm_in(rng, 80, 175)
    loud = {"quiet": 0.05, "medium": 0.5, "loud": 0.45}
    dist = u() < 0.7
    parts = [("distorted_guitar" if dist else "electric_guitar", "power" if dist else "strum")]
    parts.append(("bass", "root"))
    if u() < 0.25:
        parts.append(("piano", "chords") if u() < 0.5 else ("organ", "chords"))
    if u() < 0.2:
        parts.append(("acoustic_guitar", "strum"))
    voice = "male" if u() < 0.75 else "female"
    return dict(style="rock", mode=mode, bpm=bpm, loudness=loud, parts=parts, drums="rock", voice=voice,
                lead="distorted_guitar" if dist else "electric_guitar", voice_p=0.75)


def _metal_track(rng: np.random.Generator) -> dict:
    """Metal: palm-muted chugs, bass, double-kick drums, a growled or sung voice."""
    u = rng.random
    mode = _pick(rng, {"minor": 0.5, "phrygian": 0.3, "harmonic_minor": 0.2})
    bpm = _bpm_in(rng, 110, 200)
    loud = {"medium": 0.35, "loud": 0.65}
    voice = "growl" if u() < 0.5 else "male"
    parts = [("distorted_guitar", "chug"), ("bass", "root")]
    return dict(style="metal", mode=mode, bpm=bpm, loudness=loud, parts=parts, drums="metal", voice=voice,
                lead="distorted_guitar", voice_p=0.65)


def _pop_track(rng: np.random.Generator) -> dict:
    """Pop: piano, guitar or synth chords, bass, drums, a singer."""
    u = rng.random
    mode = _pick(rng, {"major": 0.7, "minor": 0.3})
    bpm = _bpm_in(rng, 72, 135)
    loud = {"quiet": 0.1, "medium": 0.65, "loud": 0.25}
    parts = [_pick(rng, {("piano", "chords"): 0.4, ("acoustic_guitar", "strum"): 0.35,
                         ("electric_guitar", "strum"): 0.1, ("synth", "pad"): 0.15})]
    parts.append(("bass", "root") if u() < 0.7 else ("synth", "bass"))
    if u() < 0.3:
        parts.append(("strings", "pad"))
    drums = "pop" if u() < 0.85 else None
    voice = "female" if u() < 0.55 else ("male" if u() < 0.85 else "duet")
    return dict(style="pop", mode=mode, bpm=bpm, loudness=loud, parts=parts, drums=drums, voice=voice,
                lead=parts[0][0])


def _ambient_track(rng: np.random.Generator) -> dict:
    """Ambient (synth pads and drones) or new age (a soft lead over a pad)."""
    u = rng.random
    style = "ambient" if u() < 0.6 else "newage"
    mode = _pick(rng, {"major": 0.5, "dorian": 0.25, "minor": 0.25})
    bpm = _bpm_in(rng, 45, 92)
    loud = {"quiet": 0.65, "medium": 0.33, "loud": 0.02}
    parts = [("synth", "pad")]
    if style == "ambient":
        parts.append(("synth", "drone" if u() < 0.6 else "arp"))
        if u() < 0.2:
            parts.append(("weird", "chirp"))
        lead = "synth"
    else:
        lead = _pick(rng, {"piano": 0.4, "harp": 0.2, "flute": 0.3, "acoustic_guitar": 0.1})
        parts.append((lead, {"piano": "arp", "harp": "arp", "flute": "melody", "acoustic_guitar": "pick"}[lead]))
        if u() < 0.25:
            parts.append(("strings", "pad"))
    track = dict(style=style, mode=mode, bpm=bpm, loudness=loud, parts=parts, lead=lead)
    if u() < 0.1:
        track.update(voice="female", voice_p=0.6)
    return track


def _indian_track(rng: np.random.Generator) -> dict:
    """Indian classical: tanpura drone, sitar (or flute, violin, a singer), tabla."""
    u = rng.random
    mode = _pick(rng, {"bhairav": 0.3, "yaman": 0.3, "kafi": 0.4})
    bpm = _bpm_in(rng, 55, 170)
    loud = {"quiet": 0.25, "medium": 0.6, "loud": 0.15}
    track = dict(style="indian", mode=mode, bpm=bpm, loudness=loud, parts=[("tanpura", "drone")])
    lead = _pick(rng, {"sitar": 0.7, "flute": 0.15, "violin": 0.05, "none": 0.1})
    if lead == "none":
        lead = None
        track.update(voice="male" if u() < 0.5 else "female", voice_p=0.95)
    else:
        track["parts"].append((lead, "melody"))
        if u() < 0.12:
            track.update(voice="male" if u() < 0.5 else "female", voice_p=0.6)
    drums = "tabla" if u() < 0.65 else None
    if lead == "sitar" and drums is None and "voice" not in track and u() < 0.5:
        track["solo"] = True
    return dict(track, lead=lead, drums=drums)


def _opera_track(rng: np.random.Generator) -> dict:
    """Opera: a soprano or tenor over strings or piano."""
    u = rng.random
    mode = _pick(rng, {"major": 0.5, "minor": 0.35, "harmonic_minor": 0.15})
    bpm = _bpm_in(rng, 50, 130)
    loud = {"quiet": 0.1, "medium": 0.5, "loud": 0.4}
    parts = [_pick(rng, {("strings", "pad"): 0.55, ("piano", "chords"): 0.3, ("piano", "arp"): 0.15})]
    if u() < 0.2:
        parts.append(("harp", "arp"))
    voice = "opera_female" if u() < 0.6 else "opera_male"
    return dict(style="opera", mode=mode, bpm=bpm, loudness=loud, parts=parts, voice=voice, voice_p=0.92)


def _choral_track(rng: np.random.Generator) -> dict:
    """A choir (sometimes with organ or strings), or a male chant."""
    u = rng.random
    parts: list[tuple[str, str]] = []
    style = "chant" if u() < 0.25 else "choral"
    mode = _pick(rng, {"major": 0.5, "minor": 0.3, "dorian": 0.2})
    bpm = _bpm_in(rng, 45, 100)
    loud = {"quiet": 0.4, "medium": 0.5, "loud": 0.1}
    if style == "choral" and u() < 0.4:
        parts.append(("organ", "chords") if u() < 0.5 else ("strings", "pad"))
    voice = "chant" if style == "chant" else "choir"
    return dict(style=style, mode=mode, bpm=bpm, loudness=loud, parts=parts, voice=voice, voice_p=0.95)


def _country_track(rng: np.random.Generator) -> dict:
    """Country: boom-chick guitar, bass, fiddle, banjo, train beat, a singer."""
    u = rng.random
    mode = _pick(rng, {"major": 0.85, "mixolydian": 0.15})
    bpm = _bpm_in(rng, 85, 170)
    meter = 3 if u() < 0.15 else 4
    parts = [("acoustic_guitar", "boomchick"), ("bass", "root")]
    if u() < 0.35:
        parts.append(("violin", "melody"))
    if u() < 0.3:
        parts.append(("banjo", "roll"))
    if u() < 0.2:
        parts.append(("piano", "comp"))
    drums = "country" if u() < 0.75 else None
    voice = "male" if u() < 0.7 else "female"
    return dict(style="country", mode=mode, bpm=bpm, meter=meter, parts=parts, drums=drums, voice=voice,
                lead="acoustic_guitar", voice_p=0.8)


def _folk_track(rng: np.random.Generator) -> dict:
    """Irish tunes (flute or fiddle, guitar, bodhran) or folk songs (guitar and a singer)."""
    u = rng.random
    style = "irish" if u() < 0.35 else "folk"
    mode = _pick(rng, {"major": 0.5, "dorian": 0.3, "minor": 0.2})
    if style == "irish":
        bpm = _bpm_in(rng, 100, 180)
        lead = "flute" if u() < 0.5 else "violin"
        parts = [(lead, "melody"), ("acoustic_guitar", "strum")]
        drums = "bodhran" if u() < 0.5 else None
        track = dict(bpm=bpm, lead=lead, parts=parts, drums=drums, voice_p=0.0)
    else:
        bpm = _bpm_in(rng, 60, 130)
        meter = 3 if u() < 0.25 else 4
        parts = [("acoustic_guitar", "pick" if u() < 0.6 else "strum")]
        if u() < 0.3:
            parts.append(("flute" if u() < 0.5 else "violin", "melody"))
        voice = "male" if u() < 0.55 else ("female" if u() < 0.8 else "duet")
        track = dict(bpm=bpm, meter=meter, parts=parts, voice=voice, lead="acoustic_guitar", voice_p=0.85)
    return dict(track, style=style, mode=mode, loudness={"quiet": 0.3, "medium": 0.6, "loud": 0.1})


def _jazz_track(rng: np.random.Generator) -> dict:
    """Jazz: piano comping, walking bass, swing ride, a sax, piano, flute or guitar lead."""
    u = rng.random
    mode = _pick(rng, {"major": 0.6, "dorian": 0.4})
    bpm = _bpm_in(rng, 70, 200)
    lead = _pick(rng, {"sax": 0.45, "piano": 0.35, "flute": 0.1, "electric_guitar": 0.1})
    parts = [("piano", "comp"), ("bass", "walk")]
    if lead != "piano":
        parts.append((lead, "melody"))
    voice = "female" if u() < 0.15 else None
    return dict(style="jazz", mode=mode, bpm=bpm, lead=lead, parts=parts, drums="jazz", voice=voice, voice_p=0.7,
                loudness={"quiet": 0.3, "medium": 0.6, "loud": 0.1})


def _world_track(rng: np.random.Generator) -> dict:
    """Maqam music: oud and ney over a darbuka."""
    u = rng.random
    mode = "hijaz" if u() < 0.6 else "phrygian"
    bpm = _bpm_in(rng, 70, 160)
    lead = "oud" if u() < 0.55 else "ney"
    parts = [(lead, "melody")]
    if lead == "ney":
        parts.append(("oud", "melody"))
    drums = "darbuka" if u() < 0.75 else None
    track = dict(style="maqam", mode=mode, bpm=bpm, lead=lead, parts=parts, drums=drums)
    if u() < 0.2:
        track.update(voice="male", voice_p=0.7)
    return dict(track, loudness={"quiet": 0.2, "medium": 0.65, "loud": 0.15})


def _weird_track(rng: np.random.Generator) -> dict:
    """Experimental: two or three weird textures, a drone, glitch drums, a strange voice."""
    u = rng.random
    mode = _pick(rng, {"chromatic": 0.5, "phrygian": 0.25, "minor": 0.25})
    bpm = _bpm_in(rng, 50, 180)
    roles = ["ringmod", "reverse", "glitch", "cluster", "chirp", "bells"]
    parts = [("weird", str(r)) for r in rng.choice(roles, size=int(rng.integers(2, 4)), replace=False)]
    if u() < 0.3:
        parts.append(("synth", "drone"))
    drums = "glitch" if u() < 0.35 else None
    track = dict(style="weird", mode=mode, bpm=bpm, parts=parts, drums=drums)
    if u() < 0.2:
        track.update(voice="weird", voice_p=0.8)
    return dict(track, loudness={"quiet": 0.3, "medium": 0.45, "loud": 0.25})


#: Genre -> the function that draws the genre's part of a track latent (the keys of ``_GENRES``).
_GENRE_TRACKS = {
    "classical": _classical_track, "electronic": _electronic_track, "ambient": _ambient_track, "rock": _rock_track,
    "indian": _indian_track, "pop": _pop_track, "opera": _opera_track, "choral": _choral_track,
    "metal": _metal_track, "country": _country_track, "folk": _folk_track, "jazz": _jazz_track,
    "weird": _weird_track, "world": _world_track,
}


def _sample_track(rng: np.random.Generator) -> dict:
    """Draw the latent of one track: genre, style, key, mode, tempo, meter, parts, drums, voice.

    Returns
    -------
    dict
        Keys ``genre, style, key, mode, bpm, meter, loudness, parts, lead, drums, voice, solo, voice_p``;
        ``voice_p`` is the probability that the singer is heard in a given clip of the track.
    """
    g = _pick(rng, _GENRES)
    key = int(rng.integers(12))
    # what a genre's function does not return keeps these values
    track = dict(genre=g, style=None, key=key, mode=None, bpm=None, meter=4,
                 loudness={"quiet": 0.25, "medium": 0.55, "loud": 0.2}, parts=[], lead=None, drums=None, voice=None,
                 voice_p=0.85, solo=False)
    genre = _GENRE_TRACKS[g](rng)
    track.update(genre, bpm=round(genre["bpm"], 2))
    return track
