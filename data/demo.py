"""Demo corpus generator: a small, synthetic, MagnaTagATune-shaped corpus whose tags can be heard.

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
corpus depends only on ``(n_clips, seconds, seed)`` and not on the number of worker processes:

1. **Track** (1-4 clips each, all in the same folder, like the segments of one MTAT song): a *genre* is the
   latent cause of everything else. Genre, style, key, mode, tempo, meter, the instrument parts, the drum kit
   and the singer are drawn from genre-conditioned distributions (``_sample_track``).
2. **Clip**: per-segment variation of the track (the singer rests, the drums drop out, a guitar solo, the
   loudness class moves), then the *tags* (``_emit_tags``): every tag is a noisy-OR of latent attributes,
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
import math
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.fft as sfft
import scipy.signal as sps
import soundfile as sf

from data.mtat import ANNOTATIONS, FOLDERS, SPLITS, TAGS, read_annotations

#: Sample rate of the corpus (MTAT's).
SR = 16000
#: Bumped whenever the output for given parameters changes; part of the corpus identity in ``demo.json``.
VERSION = 1
MARKER = "demo.json"
PENDING = ".demo-pending.json"
LATENT = "latent.csv"

# --------------------------------------------------------------------------------------------------------
# Tag vocabulary
# --------------------------------------------------------------------------------------------------------

#: Tag columns besides the 50: plausible MTAT names (the real file has 188 tag columns in all).
OTHER_TAGS: tuple[str, ...] = (
    "jazz", "folk", "irish", "celtic", "world", "eastern", "arabic", "middle eastern", "oriental", "india",
    "tabla", "drone", "baroque", "orchestra", "orchestral", "chant", "chanting", "monks", "organ", "bass",
    "electric guitar", "acoustic guitar", "acoustic", "distortion", "heavy", "heavy metal", "hard rock",
    "soft rock", "punk", "trance", "house", "electro", "synthesizer", "keyboard", "no beat", "no drums",
    "no piano", "no guitar", "no strings", "no violin", "no singer", "no singing", "upbeat", "calm", "mellow",
    "dark", "low", "high", "deep", "male singer", "female singer", "man singing", "women", "men", "singer",
    "duet", "operatic", "female opera", "male opera", "soprano", "tenor", "violins", "fiddle", "string",
    "banjo", "sax", "saxophone", "oud", "plucking", "picking", "strumming", "percussion", "drum",
    "drum machine", "experimental", "strange", "noise", "industrial", "spacey", "eerie", "meditation",
    "relaxing", "repetitive", "clasical", "classicle", "classical guitar", "harpsicord", "bells", "chimes",
    "woodwind", "happy", "sad", "modern", "old", "medieval", "renaissance", "spanish", "viola", "horns",
    "trumpet", "clarinet", "oboe", "rap", "hip hop", "reggae", "blues", "funk", "funky", "disco", "soul",
    "talking", "speaking", "whispering", "silence", "background", "instrumental", "lute", "mandolin",
    "accordion", "didgeridoo", "bongos", "horn", "choirs", "chorus", "female singing", "male singing",
    "vocalist", "fast beat", "slow beat", "techno beat", "synth pad", "strings section", "piano solo",
    "guitar solo", "new wave", "latin", "jungle", "sitar drone",
)

#: Header order of the tag columns: a fixed interleaving of the 50 and the others (the real file also mixes
#: them), the same for every corpus.
COLUMNS: tuple[str, ...] = tuple(
    np.array(TAGS + OTHER_TAGS, dtype=object)[np.random.default_rng(188).permutation(len(TAGS) + len(OTHER_TAGS))]
)

# Noisy-OR emission rules: tag -> ((attribute, P(tag | attribute) at attention 1), ...), false-positive rate.
# Attribute names: g:<genre>, s:<style>, i:<instrument>, lead:<instrument>, v:<voice kind>, d:<kit class>,
# t:<tempo class>, l:<loudness class>, m:<mode>, plus a few derived flags (see ``_attributes``).
_RULES: dict[str, tuple[tuple[tuple[str, float], ...], float]] = {
    "guitar": ((("guitar_lead", 0.95), ("guitar", 0.75)), 0.004),
    "classical": ((("g:classical", 0.68), ("g:opera", 0.35), ("g:choral", 0.3), ("i:harpsichord", 0.2)), 0.004),
    "slow": ((("t:slow", 0.42), ("s:ambient", 0.2)), 0.006),
    "techno": ((("s:techno", 0.95), ("s:dance", 0.3), ("s:electronic", 0.22)), 0.003),
    "strings": ((("i:strings", 0.7), ("lead:violin", 0.3), ("lead:cello", 0.3)), 0.004),
    "drums": ((("d:acoustic", 0.3), ("d:electronic", 0.15), ("d:hand", 0.15)), 0.003),
    "electronic": ((("g:electronic", 0.36), ("i:synth", 0.1), ("g:weird", 0.15)), 0.003),
    "rock": ((("g:rock", 0.85), ("g:metal", 0.45), ("dist", 0.1)), 0.003),
    "fast": ((("t:fast", 0.34),), 0.005),
    "piano": ((("lead:piano", 0.55), ("i:piano", 0.25)), 0.003),
    "ambient": ((("s:ambient", 0.85), ("s:newage", 0.45)), 0.004),
    "beat": ((("d:electronic", 0.32), ("d:acoustic", 0.1), ("d:hand", 0.08)), 0.004),
    "violin": ((("lead:violin", 0.75), ("i:violin", 0.45), ("i:strings", 0.15)), 0.003),
    "vocal": ((("v:any", 0.22),), 0.003),
    "synth": ((("lead:synth", 0.18), ("i:synth", 0.11)), 0.003),
    "female": ((("v:female", 0.5),), 0.002),
    "indian": ((("g:indian", 0.9), ("i:sitar", 0.2), ("g:world", 0.08)), 0.002),
    "opera": ((("v:opera", 0.92), ("g:opera", 0.1)), 0.002),
    "male": ((("v:male", 0.32),), 0.002),
    "singing": ((("v:any", 0.16),), 0.002),
    "vocals": ((("v:any", 0.16),), 0.002),
    "no vocals": ((("v:none", 0.075),), 0.002),
    "harpsichord": ((("i:harpsichord", 0.92),), 0.002),
    "loud": ((("l:loud", 0.16), ("g:metal", 0.12)), 0.003),
    "quiet": ((("l:quiet", 0.16),), 0.003),
    "flute": ((("lead:flute", 0.48), ("i:flute", 0.24)), 0.002),
    "woman": ((("v:female", 0.35),), 0.001),
    "male vocal": ((("v:male", 0.25),), 0.001),
    "no vocal": ((("v:none", 0.065),), 0.002),
    "pop": ((("g:pop", 0.58), ("s:dance", 0.12)), 0.004),
    "soft": ((("l:quiet", 0.1), ("soft_timbre", 0.03)), 0.003),
    "sitar": ((("i:sitar", 0.95),), 0.001),
    "solo": ((("solo", 0.32), ("guitar_solo", 0.25)), 0.003),
    "man": ((("v:male", 0.22),), 0.001),
    "classic": ((("g:classical", 0.14), ("g:opera", 0.08)), 0.002),
    "choir": ((("v:choir", 0.95), ("v:chant", 0.5)), 0.001),
    "voice": ((("v:any", 0.11),), 0.002),
    "new age": ((("s:newage", 0.5), ("s:ambient", 0.15)), 0.003),
    "dance": ((("s:dance", 0.5), ("s:techno", 0.15)), 0.002),
    "male voice": ((("v:male", 0.19),), 0.001),
    "female vocal": ((("v:female", 0.25),), 0.001),
    "beats": ((("d:electronic", 0.16), ("d:acoustic", 0.03)), 0.002),
    "harp": ((("lead:harp", 0.7), ("i:harp", 0.45)), 0.002),
    "cello": ((("lead:cello", 0.72), ("i:cello", 0.4)), 0.002),
    "no voice": ((("v:none", 0.045),), 0.001),
    "weird": ((("g:weird", 0.72),), 0.007),
    "country": ((("g:country", 0.72), ("i:banjo", 0.2)), 0.002),
    "metal": ((("g:metal", 0.8),), 0.001),
    "female voice": ((("v:female", 0.21),), 0.001),
    "choral": ((("v:choir", 0.55), ("v:chant", 0.3)), 0.001),
}

_OTHER_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "jazz": (("g:jazz", 0.7),), "folk": (("g:folk", 0.6), ("g:country", 0.08)), "irish": (("s:irish", 0.5),),
    "celtic": (("s:irish", 0.35),), "world": (("g:world", 0.4), ("g:indian", 0.15)),
    "eastern": (("g:world", 0.3), ("g:indian", 0.2)), "arabic": (("g:world", 0.3),),
    "middle eastern": (("g:world", 0.25),), "oriental": (("g:world", 0.15), ("g:indian", 0.1)),
    "india": (("g:indian", 0.2),), "tabla": (("i:tabla", 0.4),), "drone": (("i:tanpura", 0.2), ("s:ambient", 0.15)),
    "baroque": (("i:harpsichord", 0.35), ("s:baroque", 0.2)), "orchestra": (("i:strings", 0.2),),
    "orchestral": (("i:strings", 0.15),), "chant": (("v:chant", 0.5),), "chanting": (("v:chant", 0.3),),
    "monks": (("v:chant", 0.25),), "organ": (("i:organ", 0.5),), "bass": (("i:bass", 0.12),),
    "electric guitar": (("i:electric_guitar", 0.3), ("dist", 0.2)), "acoustic guitar": (("i:acoustic_guitar", 0.2),),
    "acoustic": (("i:acoustic_guitar", 0.15),), "distortion": (("dist", 0.2),), "heavy": (("g:metal", 0.35),),
    "heavy metal": (("g:metal", 0.25),), "hard rock": (("g:rock", 0.12), ("g:metal", 0.15)),
    "trance": (("s:techno", 0.12), ("s:dance", 0.15)), "house": (("s:dance", 0.15),),
    "electro": (("g:electronic", 0.1),), "synthesizer": (("i:synth", 0.12),),
    "keyboard": (("i:piano", 0.04), ("i:synth", 0.05), ("i:organ", 0.1)), "no beat": (("nodrums", 0.06),),
    "no drums": (("nodrums", 0.05),), "no piano": (("nopiano", 0.02),), "no guitar": (("noguitar", 0.02),),
    "no singer": (("v:none", 0.03),), "no singing": (("v:none", 0.04),), "upbeat": (("t:fast", 0.08),),
    "calm": (("l:quiet", 0.1), ("t:slow", 0.05)), "mellow": (("l:quiet", 0.06),), "dark": (("m:minor", 0.03),),
    "low": (("v:male", 0.04),), "high": (("v:female", 0.04),), "deep": (("v:male", 0.03),),
    "male singer": (("v:male", 0.1),), "female singer": (("v:female", 0.12),), "man singing": (("v:male", 0.05),),
    "women": (("v:female", 0.04),), "men": (("v:male", 0.04),), "singer": (("v:any", 0.05),),
    "operatic": (("v:opera", 0.2),), "female opera": (("v:opera_female", 0.15),),
    "male opera": (("v:opera_male", 0.15),), "soprano": (("v:opera_female", 0.08),),
    "tenor": (("v:opera_male", 0.08),), "violins": (("i:strings", 0.08), ("i:violin", 0.05)),
    "fiddle": (("fiddle", 0.35),), "string": (("i:strings", 0.05),), "banjo": (("i:banjo", 0.5),),
    "sax": (("i:sax", 0.4),), "saxophone": (("i:sax", 0.3),), "oud": (("i:oud", 0.2),),
    "plucking": (("i:harp", 0.05), ("i:sitar", 0.05), ("i:harpsichord", 0.05)), "picking": (("picking", 0.06),),
    "strumming": (("strum", 0.08),), "percussion": (("d:hand", 0.25), ("d:acoustic", 0.03)),
    "drum": (("d:acoustic", 0.06),), "drum machine": (("d:electronic", 0.08),),
    "experimental": (("g:weird", 0.25),), "strange": (("g:weird", 0.2),), "noise": (("g:weird", 0.12),),
    "industrial": (("g:weird", 0.05), ("s:techno", 0.03)), "spacey": (("s:ambient", 0.15),),
    "eerie": (("s:ambient", 0.05), ("g:weird", 0.08)), "meditation": (("s:newage", 0.12), ("g:indian", 0.03)),
    "relaxing": (("s:newage", 0.1),), "repetitive": (("s:techno", 0.08),), "clasical": (("g:classical", 0.03),),
    "classicle": (("g:classical", 0.01),), "classical guitar": (("classical_guitar", 0.35),),
    "harpsicord": (("i:harpsichord", 0.04),), "bells": (("bells", 0.3),), "woodwind": (("i:flute", 0.05),),
    "happy": (("m:major", 0.01),), "sad": (("m:minor", 0.015),), "instrumental": (("v:none", 0.02),),
    "choirs": (("v:choir", 0.05),), "chorus": (("v:choir", 0.05),), "female singing": (("v:female", 0.04),),
    "male singing": (("v:male", 0.03),), "fast beat": (("fastbeat", 0.05),), "techno beat": (("s:techno", 0.04),),
    "synth pad": (("pad", 0.05),), "strings section": (("i:strings", 0.03),), "piano solo": (("lead:piano", 0.05),),
    "guitar solo": (("guitar_solo", 0.2),), "sitar drone": (("i:tanpura", 0.05),), "duet": (("v:duet", 0.3),),
}
_OTHER_FP = 0.0015  # false-positive rate of every other tag (also the only source of the ungrounded ones)


# --------------------------------------------------------------------------------------------------------
# Clip plans
# --------------------------------------------------------------------------------------------------------

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


def _sample_track(rng: np.random.Generator) -> dict:
    """Draw the latent of one track: genre, style, key, mode, tempo, meter, parts, drums, voice.

    Returns
    -------
    dict
        Keys ``genre, style, key, mode, bpm, meter, loudness, parts, lead, drums, voice, solo, voice_p``;
        ``voice_p`` is the probability that the singer is heard in a given clip of the track.
    """
    g = _pick(rng, _GENRES)
    u = rng.random
    key = int(rng.integers(12))
    meter = 4
    parts: list[tuple[str, str]] = []
    lead = None
    drums = None
    voice = None
    voice_p = 0.85
    solo = False
    loud = {"quiet": 0.25, "medium": 0.55, "loud": 0.2}

    def bpm_in(lo, hi):
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    if g == "classical":
        style = _pick(rng, {"orchestral": 0.3, "piano": 0.24, "baroque": 0.2, "chamber": 0.11, "solo": 0.15})
        mode = _pick(rng, {"major": 0.55, "minor": 0.35, "harmonic_minor": 0.1})
        bpm = bpm_in(48, 170)
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
    elif g == "electronic":
        style = _pick(rng, {"techno": 0.6, "dance": 0.2, "electronic": 0.2})
        mode = _pick(rng, {"minor": 0.6, "phrygian": 0.15, "major": 0.25})
        loud = {"quiet": 0.05, "medium": 0.55, "loud": 0.4}
        if style == "techno":
            bpm = bpm_in(122, 145)
            drums = "techno"
            parts += [("synth", "acid" if u() < 0.5 else "bass")]
            parts += [("synth", _pick(rng, {"arp": 0.45, "stab": 0.35, "pad": 0.2}))]
            voice_p = 0.0
        elif style == "dance":
            bpm = bpm_in(115, 132)
            drums = "dance"
            parts += [("synth", "bass"), ("synth", "stab" if u() < 0.5 else "arp")]
            if u() < 0.35:
                parts.append(("piano", "comp"))
            if u() < 0.5:
                parts.append(("synth", "pad"))
            voice = "female" if u() < 0.45 else ("male" if u() < 0.25 else None)
            voice_p = 0.7
        else:
            bpm = bpm_in(80, 150)
            drums = "breaks" if u() < 0.75 else None
            parts += [("synth", "pad"), ("synth", _pick(rng, {"arp": 0.5, "lead": 0.3, "bass": 0.2}))]
            if u() < 0.2:
                parts.append(("electric_guitar", "arp"))
            voice = "female" if u() < 0.15 else None
            voice_p = 0.6
        lead = "synth"
    elif g == "rock":
        style = "rock"
        mode = _pick(rng, {"major": 0.35, "minor": 0.35, "mixolydian": 0.15, "dorian": 0.15})
        bpm = bpm_in(80, 175)
        loud = {"quiet": 0.05, "medium": 0.5, "loud": 0.45}
        dist = u() < 0.7
        parts.append(("distorted_guitar" if dist else "electric_guitar", "power" if dist else "strum"))
        parts.append(("bass", "root"))
        if u() < 0.25:
            parts.append(("piano", "chords") if u() < 0.5 else ("organ", "chords"))
        if u() < 0.2:
            parts.append(("acoustic_guitar", "strum"))
        drums = "rock"
        voice = "male" if u() < 0.75 else "female"
        lead = "distorted_guitar" if dist else "electric_guitar"
        voice_p = 0.75
    elif g == "metal":
        style = "metal"
        mode = _pick(rng, {"minor": 0.5, "phrygian": 0.3, "harmonic_minor": 0.2})
        bpm = bpm_in(110, 200)
        loud = {"medium": 0.35, "loud": 0.65}
        parts += [("distorted_guitar", "chug"), ("bass", "root")]
        drums = "metal"
        voice = "growl" if u() < 0.5 else "male"
        lead = "distorted_guitar"
        voice_p = 0.65
    elif g == "pop":
        style = "pop"
        mode = _pick(rng, {"major": 0.7, "minor": 0.3})
        bpm = bpm_in(72, 135)
        loud = {"quiet": 0.1, "medium": 0.65, "loud": 0.25}
        parts.append(_pick(rng, {("piano", "chords"): 0.4, ("acoustic_guitar", "strum"): 0.35,
                                 ("electric_guitar", "strum"): 0.1, ("synth", "pad"): 0.15}))
        parts.append(("bass", "root") if u() < 0.7 else ("synth", "bass"))
        if u() < 0.3:
            parts.append(("strings", "pad"))
        drums = "pop" if u() < 0.85 else None
        voice = "female" if u() < 0.55 else ("male" if u() < 0.85 else "duet")
        lead = parts[0][0]
    elif g == "ambient":
        style = "ambient" if u() < 0.6 else "newage"
        mode = _pick(rng, {"major": 0.5, "dorian": 0.25, "minor": 0.25})
        bpm = bpm_in(45, 92)
        loud = {"quiet": 0.65, "medium": 0.33, "loud": 0.02}
        parts.append(("synth", "pad"))
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
        if u() < 0.1:
            voice, voice_p = "female", 0.6
    elif g == "indian":
        style = "indian"
        mode = _pick(rng, {"bhairav": 0.3, "yaman": 0.3, "kafi": 0.4})
        bpm = bpm_in(55, 170)
        loud = {"quiet": 0.25, "medium": 0.6, "loud": 0.15}
        parts.append(("tanpura", "drone"))
        lead = _pick(rng, {"sitar": 0.7, "flute": 0.15, "violin": 0.05, "none": 0.1})
        if lead == "none":
            lead, voice, voice_p = None, ("male" if u() < 0.5 else "female"), 0.95
        else:
            parts.append((lead, "melody"))
            if u() < 0.12:
                voice, voice_p = ("male" if u() < 0.5 else "female"), 0.6
        drums = "tabla" if u() < 0.65 else None
        if lead == "sitar" and drums is None and voice is None and u() < 0.5:
            solo = True
    elif g == "opera":
        style = "opera"
        mode = _pick(rng, {"major": 0.5, "minor": 0.35, "harmonic_minor": 0.15})
        bpm = bpm_in(50, 130)
        loud = {"quiet": 0.1, "medium": 0.5, "loud": 0.4}
        parts.append(_pick(rng, {("strings", "pad"): 0.55, ("piano", "chords"): 0.3, ("piano", "arp"): 0.15}))
        if u() < 0.2:
            parts.append(("harp", "arp"))
        voice = "opera_female" if u() < 0.6 else "opera_male"
        voice_p = 0.92
    elif g == "choral":
        style = "chant" if u() < 0.25 else "choral"
        mode = _pick(rng, {"major": 0.5, "minor": 0.3, "dorian": 0.2})
        bpm = bpm_in(45, 100)
        loud = {"quiet": 0.4, "medium": 0.5, "loud": 0.1}
        if style == "choral" and u() < 0.4:
            parts.append(("organ", "chords") if u() < 0.5 else ("strings", "pad"))
        voice = "chant" if style == "chant" else "choir"
        voice_p = 0.95
    elif g == "country":
        style = "country"
        mode = _pick(rng, {"major": 0.85, "mixolydian": 0.15})
        bpm = bpm_in(85, 170)
        meter = 3 if u() < 0.15 else 4
        parts += [("acoustic_guitar", "boomchick"), ("bass", "root")]
        if u() < 0.35:
            parts.append(("violin", "melody"))
        if u() < 0.3:
            parts.append(("banjo", "roll"))
        if u() < 0.2:
            parts.append(("piano", "comp"))
        drums = "country" if u() < 0.75 else None
        voice = "male" if u() < 0.7 else "female"
        lead = "acoustic_guitar"
        voice_p = 0.8
    elif g == "folk":
        style = "irish" if u() < 0.35 else "folk"
        mode = _pick(rng, {"major": 0.5, "dorian": 0.3, "minor": 0.2})
        if style == "irish":
            bpm = bpm_in(100, 180)
            lead = "flute" if u() < 0.5 else "violin"
            parts += [(lead, "melody"), ("acoustic_guitar", "strum")]
            drums = "bodhran" if u() < 0.5 else None
            voice_p = 0.0
        else:
            bpm = bpm_in(60, 130)
            meter = 3 if u() < 0.25 else 4
            parts.append(("acoustic_guitar", "pick" if u() < 0.6 else "strum"))
            if u() < 0.3:
                parts.append(("flute" if u() < 0.5 else "violin", "melody"))
            voice = "male" if u() < 0.55 else ("female" if u() < 0.8 else "duet")
            lead = "acoustic_guitar"
            voice_p = 0.85
        loud = {"quiet": 0.3, "medium": 0.6, "loud": 0.1}
    elif g == "jazz":
        style = "jazz"
        mode = _pick(rng, {"major": 0.6, "dorian": 0.4})
        bpm = bpm_in(70, 200)
        lead = _pick(rng, {"sax": 0.45, "piano": 0.35, "flute": 0.1, "electric_guitar": 0.1})
        parts += [("piano", "comp"), ("bass", "walk")]
        if lead != "piano":
            parts.append((lead, "melody"))
        drums = "jazz"
        voice = "female" if u() < 0.15 else None
        voice_p = 0.7
        loud = {"quiet": 0.3, "medium": 0.6, "loud": 0.1}
    elif g == "world":
        style = "maqam"
        mode = "hijaz" if u() < 0.6 else "phrygian"
        bpm = bpm_in(70, 160)
        lead = "oud" if u() < 0.55 else "ney"
        parts.append((lead, "melody"))
        if lead == "ney":
            parts.append(("oud", "melody"))
        drums = "darbuka" if u() < 0.75 else None
        if u() < 0.2:
            voice, voice_p = "male", 0.7
        loud = {"quiet": 0.2, "medium": 0.65, "loud": 0.15}
    else:  # weird
        style = "weird"
        mode = _pick(rng, {"chromatic": 0.5, "phrygian": 0.25, "minor": 0.25})
        bpm = bpm_in(50, 180)
        roles = ["ringmod", "reverse", "glitch", "cluster", "chirp", "bells"]
        for r in rng.choice(roles, size=int(rng.integers(2, 4)), replace=False):
            parts.append(("weird", str(r)))
        if u() < 0.3:
            parts.append(("synth", "drone"))
        drums = "glitch" if u() < 0.35 else None
        if u() < 0.2:
            voice, voice_p = "weird", 0.8
        loud = {"quiet": 0.3, "medium": 0.45, "loud": 0.25}
    return dict(genre=g, style=style, key=key, mode=mode, bpm=round(bpm, 2), meter=meter, loudness=loud,
                parts=parts, lead=lead, drums=drums, voice=voice, voice_p=voice_p, solo=solo)


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


_DRUM_CLASS = {"rock": "acoustic", "metal": "acoustic", "pop": "acoustic", "country": "acoustic", "jazz": "acoustic",
               "techno": "electronic", "dance": "electronic", "breaks": "electronic", "glitch": "electronic",
               "tabla": "hand", "darbuka": "hand", "bodhran": "hand"}
_GUITARS = ("acoustic_guitar", "electric_guitar", "distorted_guitar")


def _attributes(c: dict) -> set[str]:
    """Latent attribute flags of a clip, the vocabulary of the tag emission rules."""
    a = {f"g:{c['genre']}", f"s:{c['style']}", f"t:{c['tempo']}", f"l:{c['loudness']}",
         "m:minor" if c["mode"] in _MINORISH else "m:major"}
    insts = {p for p, _ in c["parts"]}
    roles = {r for _, r in c["parts"]}
    a |= {f"i:{p}" for p in insts}
    if "synth" in insts:
        a.add("i:synth")
    if c["drums"] == "tabla":
        a.add("i:tabla")
    if c["lead"]:
        a.add(f"lead:{'flute' if c['lead'] == 'ney' else c['lead']}")
    if "ney" in insts:
        a.add("i:flute")
    if insts & set(_GUITARS):
        a.add("guitar")
        if c["lead"] in _GUITARS and (c["voice"] is None or c["solo"]):
            a.add("guitar_lead")
    if "distorted_guitar" in insts:
        a.add("dist")
    if any(r == "lead" and p in _GUITARS for p, r in c["parts"]):
        a |= {"guitar_solo", "guitar_lead"}
    if c["solo"]:
        a.add("solo")
    if c["drums"]:
        a.add(f"d:{_DRUM_CLASS[c['drums']]}")
        if c["tempo"] == "fast":
            a.add("fastbeat")
    else:
        a.add("nodrums")
    v = c["voice"]
    if v:
        a.add("v:any")
        if v in ("male", "growl", "opera_male", "chant", "duet"):
            a.add("v:male")
        if v in ("female", "opera_female", "duet"):
            a.add("v:female")
        if v.startswith("opera"):
            a |= {"v:opera", f"v:{v}"}
        if v in ("choir", "chant", "duet"):
            a.add(f"v:{v}")
    else:
        a.add("v:none")
    if "piano" not in insts:
        a.add("nopiano")
    if not insts & set(_GUITARS):
        a.add("noguitar")
    if "strum" in roles or "boomchick" in roles:
        a.add("strum")
    if "pick" in roles:
        a.add("picking")
    if "pad" in roles:
        a.add("pad")
    if c["lead"] == "acoustic_guitar" and c["genre"] == "classical":
        a.add("classical_guitar")
    if "violin" in insts and c["genre"] in ("country", "folk"):
        a.add("fiddle")
    if any(r == "bells" for _, r in c["parts"]):
        a.add("bells")
    if c["loudness"] == "quiet" or insts & {"harp", "flute"} or c["style"] == "newage":
        a.add("soft_timbre")
    return a


def _emit_tags(c: dict, rng: np.random.Generator) -> tuple[str, ...]:
    """Draw the noisy tags of a clip from its latent (noisy-OR with a per-clip attention factor)."""
    attrs = _attributes(c)
    attention = float(np.clip(rng.gamma(1.6, 1 / 1.6), 0.05, 2.5))
    out = set()
    draws = rng.random(len(COLUMNS))
    for j, tag in enumerate(COLUMNS):
        if tag in _RULES:
            rules, fp = _RULES[tag]
        else:
            rules, fp = _OTHER_RULES.get(tag, ()), _OTHER_FP
        q = 1.0 - fp
        for attr, p in rules:
            if attr in attrs:
                q *= 1.0 - min(0.97, attention * p)
        if draws[j] < 1.0 - q:
            out.add(tag)
    return tuple(t for t in COLUMNS if t in out)


def _force_tag(c: dict, rng: np.random.Generator) -> tuple[str, ...]:
    """The single most likely of the 50 tags of a clip (used so that no folder loses all its clips)."""
    attrs = _attributes(c)
    best, best_p = TAGS[0], -1.0
    for tag in TAGS:
        rules, _ = _RULES[tag]
        p = max((pr for attr, pr in rules if attr in attrs), default=0.0)
        if p > best_p:
            best, best_p = tag, p
    return (best,)


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


# --------------------------------------------------------------------------------------------------------
# Synthesis primitives
# --------------------------------------------------------------------------------------------------------

HOP = 16  # control-rate hop: pitch and amplitude curves are computed at 1 kHz and held for 16 samples
CR = SR / HOP
TS = 4096  # wavetable length (nearest-sample lookup; error < -50 dB for the harmonics used)
NYQ_SAFE = 7600.0  # highest partial a wavetable may hold (below 8 kHz so nothing aliases)
_VEL = {"quiet": 0.45, "medium": 0.7, "loud": 0.95}


def _hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=float) - 69.0) / 12.0)


def _table(amps, phases=None) -> np.ndarray:
    """One period of a waveform with harmonic amplitudes ``amps`` (harmonic 1 first), RMS-normalised."""
    amps = np.asarray(amps, dtype=float)[: TS // 2 - 1]
    spec = np.zeros(TS // 2 + 1, dtype=complex)
    ph = np.zeros(len(amps)) if phases is None else np.asarray(phases)[: len(amps)]
    spec[1: len(amps) + 1] = amps * np.exp(1j * (ph - np.pi / 2))
    w = np.fft.irfft(spec, TS)
    return w / max(np.sqrt(np.mean(w * w)), 1e-9)


def _saw_amps(f_max, cutoff=None, res=0.0, slope=1.0):
    """Harmonic amplitudes of a band-limited sawtooth, optionally through a resonant low-pass at ``cutoff``
    harmonics (4th-order roll-off, a peak of height ``res`` at the cutoff)."""
    nh = max(1, int(NYQ_SAFE / f_max))
    k = np.arange(1, nh + 1, dtype=float)
    a = 1.0 / k ** slope
    if cutoff is not None:
        x = k / cutoff
        a = a / np.sqrt(1 + x ** 8) * (1 + res * np.exp(-((x - 1) ** 2) / 0.05))
    return a


class _Ctx:
    """Musical and random context of one clip: grid, key, chords, noise, caches."""

    def __init__(self, clip: ClipPlan, seconds: float, rng: np.random.Generator):
        self.clip, self.rng = clip, rng
        self.n = int(round(seconds * SR))
        self.m = self.n // HOP + 2  # control-rate length
        self.dur = self.n / SR
        self.beat = 60.0 / clip.bpm
        self.meter = clip.meter
        self.bar = self.beat * clip.meter
        self.t0 = -rng.uniform(0, self.bar)  # the clip starts inside a bar, as an excerpt would
        self.scale = _SCALES[clip.mode]
        self.tonic = 48 + clip.key  # C3..B3
        self.vel = _VEL[clip.loudness]
        # A pool of unit-variance noise reused by every part (uniform: 5x cheaper to draw than Gaussian, and
        # every use filters or envelopes it anyway).
        self.noise = (rng.random(1 << 16, dtype=np.float32) - np.float32(0.5)) * np.float32(math.sqrt(12))
        self._hiss = None
        self.cache: dict = {}
        self._chords()

    # -- harmony --------------------------------------------------------------------------------------
    def _chords(self):
        g, rng = self.clip.genre, self.rng
        minor = self.clip.mode in _MINORISH
        if g in ("indian", "world", "weird") or self.clip.style in ("chant", "ambient"):
            progs = [[0]]
        elif g == "jazz":
            progs = [[1, 4, 0, 0], [0, 5, 1, 4], [2, 5, 1, 4]]
        elif g in ("rock", "metal"):
            progs = [[0, 6, 5, 6], [0, 3, 4, 3], [0, 5, 3, 4], [0, 0, 6, 3]] if minor else \
                [[0, 4, 5, 3], [0, 3, 4, 3], [0, 6, 3, 0]]
        else:
            progs = [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 3, 6, 2]] if minor else \
                [[0, 4, 5, 3], [0, 3, 4, 0], [0, 5, 3, 4], [1, 4, 0, 0], [0, 3, 0, 4]]
        prog = progs[int(rng.integers(len(progs)))]
        per = self.bar * (2 if (self.clip.bpm > 140 or g in ("techno", "electronic") or
                                self.clip.style in ("techno", "newage")) else 1)
        if self.clip.tempo == "slow" and g == "classical" and self.meter == 4 and rng.random() < 0.5:
            per = self.bar / 2  # slow classical pieces move their harmony every half bar
        self.chord_len = per
        self.drone = g in ("indian", "world", "weird")  # no harmony: tonic and fifth
        nch = int(np.ceil((self.dur - self.t0) / per)) + 1
        self.chords = [prog[i % len(prog)] for i in range(nch)]
        self.seventh = g == "jazz"

    def chord_at(self, t: float) -> tuple[int, ...]:
        """Pitch classes (semitones above the tonic, 0-11) of the chord sounding at time ``t``."""
        if self.drone:
            return (0, 7)
        i = int(max(0, (t - self.t0) // self.chord_len))
        deg = self.chords[min(i, len(self.chords) - 1)]
        L = len(self.scale)
        idx = [deg, deg + 2, deg + 4] + ([deg + 6] if self.seventh else [])
        return tuple(self.scale[d % L] for d in idx)

    def chord_times(self):
        """Start times of the chord changes from the first one overlapping the clip."""
        k = np.arange(len(self.chords))
        t = self.t0 + k * self.chord_len
        return t[t < self.dur]

    def deg2midi(self, deg: int) -> int:
        L = len(self.scale)
        return self.tonic + 12 * (deg // L) + self.scale[deg % L]

    def midi2deg(self, midi: float) -> int:
        L = len(self.scale)
        rel = midi - self.tonic
        octv, pc = divmod(rel, 12)
        return int(octv * L + int(np.argmin([abs(s - pc) for s in self.scale])))

    def voicing(self, t, lo, hi, n=None, root_low=True):
        """MIDI notes of the chord at ``t`` in ``[lo, hi]`` (all of them, or ``n`` spread evenly)."""
        pcs = self.chord_at(t)
        notes = [m for m in range(int(lo), int(hi) + 1) if (m - self.tonic) % 12 in pcs]
        if root_low:
            r = pcs[0]
            while len(notes) > 1 and (notes[0] - self.tonic) % 12 != r:
                notes = notes[1:]
        if n is not None and len(notes) > n:
            idx = np.round(np.linspace(0, len(notes) - 1, n)).astype(int)
            notes = [notes[i] for i in idx]
        return notes

    def root(self, t, lo=28, hi=45) -> int:
        pc = self.chord_at(t)[0]
        m = lo + ((self.tonic + pc - lo) % 12)
        return m if m <= hi else m - 12

    # -- time -------------------------------------------------------------------------------------------
    def grid(self, step_beats: float, jitter: float = 0.0):
        """Onset times on a grid of ``step_beats`` beats covering the clip, and their position in the bar."""
        step = step_beats * self.beat
        k0 = int(np.floor(-self.t0 / step)) - 1
        k = np.arange(max(k0, 0), int(np.ceil((self.dur - self.t0) / step)) + 1)
        t = self.t0 + k * step
        pos = (k * step_beats) % self.meter
        if jitter:
            t = t + self.rng.normal(0, jitter, len(t))
        keep = (t > -1.0) & (t < self.dur)
        return t[keep], pos[keep]

    def noise_at(self, n: int) -> np.ndarray:
        """``n`` samples of the clip's noise pool (unit variance) from a random offset, wrapping around."""
        start = int(self.rng.integers(len(self.noise)))
        if n <= len(self.noise) - start:
            return self.noise[start:start + n]
        return np.resize(np.roll(self.noise, -start), n)

    def hiss_at(self, n: int) -> np.ndarray:
        """Like ``noise_at`` but band-passed to 1.5-6 kHz (bow, breath and air noise), unit RMS."""
        if self._hiss is None:
            h = sps.sosfilt(_butter("bandpass", (1500.0, 6000.0)), self.noise)
            self._hiss = h / np.std(h)
        start = int(self.rng.integers(len(self._hiss)))
        return np.resize(np.roll(self._hiss, -start), n)

    def velocity(self, pos, accent=0.15, spread=0.08):
        """Note velocity from the loudness class, a downbeat accent and random spread."""
        v = self.vel * (1 + accent * (np.asarray(pos) % self.meter == 0)) * (1 + self.rng.normal(0, spread))
        return float(np.clip(v, 0.1, 1.2))


def _place(out: np.ndarray, x: np.ndarray, t: float, gain: float = 1.0, length: float | None = None,
           fade: float = 0.03):
    """Add ``x * gain`` into ``out`` at time ``t`` seconds, cut to ``length`` seconds with a ``fade`` release."""
    if length is not None:
        L = min(len(x), int((length + fade) * SR))
        x = x[:L]
        nf = min(L, int(fade * SR))
        if nf > 1 and L == int((length + fade) * SR):
            x = x.copy()
            x[-nf:] *= np.linspace(1.0, 0.0, nf)
    a = int(round(t * SR))
    b = a + len(x)
    if b <= 0 or a >= len(out):
        return
    xa = max(0, -a)
    xb = len(x) - max(0, b - len(out))
    out[max(a, 0):min(b, len(out))] += gain * x[xa:xb]


def _melody(ctx: _Ctx, lo: float, hi: float, durs, weights, rest: float = 0.08, phrase=(4, 9),
            chord_p: float = 0.6, leap: float = 0.15, breath=(1.0, 2.0)):
    """A melody as a list of ``(t, dur, midi, vel)``: a scale-wise random walk in ``[lo, hi]`` with chord
    tones on strong beats, occasional leaps and phrases separated by rests of ``breath`` beats."""
    rng = ctx.rng
    w = np.asarray(weights, dtype=float)
    w /= w.sum()
    notes = []
    t = ctx.t0 - ctx.bar * rng.integers(0, 2)
    deg = ctx.midi2deg((lo + hi) / 2 + rng.uniform(-3, 3))
    count, plen = 0, int(rng.integers(*phrase))
    L = len(ctx.scale)
    while t < ctx.dur:
        d = float(durs[int(rng.choice(len(durs), p=w))]) * ctx.beat
        if count >= plen:
            t += rng.uniform(*breath) * ctx.beat
            count, plen = 0, int(rng.integers(*phrase))
            continue
        if rng.random() < rest:
            t += d
            continue
        step = int(rng.choice([-2, -1, 0, 1, 2], p=[0.15, 0.32, 0.08, 0.32, 0.13]))
        if rng.random() < leap:
            step = int(rng.choice([-5, -4, -3, 3, 4, 5]))
        deg += step
        midi = ctx.deg2midi(deg)
        if midi > hi or midi < lo:
            deg -= 2 * step
            midi = ctx.deg2midi(deg)
            while midi > hi:
                deg -= L
                midi = ctx.deg2midi(deg)
            while midi < lo:
                deg += L
                midi = ctx.deg2midi(deg)
        pos = ((t - ctx.t0) / ctx.beat) % ctx.meter
        if abs(pos - round(pos)) < 1e-6 and rng.random() < chord_p:
            pcs = ctx.chord_at(t)
            for dd in (0, -1, 1, -2, 2):
                if (ctx.deg2midi(deg + dd) - ctx.tonic) % 12 in pcs:
                    deg += dd
                    break
            midi = ctx.deg2midi(deg)
        if t + d > 0:
            notes.append((t, d, float(midi), ctx.velocity(round(pos))))
        t += d
        count += 1
    return notes


def _lines(ctx: _Ctx, ranges, rhythm_beats=None):
    """Voice-led chord lines: for each ``(lo, hi)`` range one note list following the chord changes, each
    voice moving to the nearest tone of the next chord (for string sections, choirs, organs, pads)."""
    times = list(ctx.chord_times())
    if rhythm_beats:
        times, _ = ctx.grid(rhythm_beats)
        times = list(times)
    out = []
    for lo, hi in ranges:
        prev = (lo + hi) / 2 + ctx.rng.uniform(-2, 2)
        notes = []
        for j, t in enumerate(times):
            end = times[j + 1] if j + 1 < len(times) else ctx.dur + 0.5
            cands = [m for m in range(int(lo), int(hi) + 1) if (m - ctx.tonic) % 12 in ctx.chord_at(t + 1e-3)]
            if not cands:
                cands = [int(prev)]
            m = min(cands, key=lambda c: abs(c - prev) + 0.01 * ctx.rng.random())
            notes.append((t, end - t, float(m), ctx.vel))
            prev = m
        out.append(notes)
    return out


def _onset_index(ctx: _Ctx, notes):
    a = np.array([n[0] for n in notes]) if notes else np.zeros(0)
    return np.clip((a * CR).astype(int), 0, ctx.m - 1)


def _sustained(ctx: _Ctx, notes, amps_fn, *, attack=0.05, release=0.12, decay=None, vib_rate=5.5,
               vib_depth=0.0, vib_delay=0.25, glide=0.02, jitter=0.0, trem=0.0, detunes=(), levels=1,
               fenv=None, trem_rate=5.0, full=False):
    """A monophonic sustained tone (legato when notes overlap) from a wavetable oscillator.

    Parameters
    ----------
    notes : list of (t, dur, midi, vel)
    amps_fn : callable
        ``amps_fn(f_max, level)`` -> harmonic amplitudes; ``levels > 1`` builds a stack of tables from dark
        (level 0) to bright whose choice follows the envelope (louder = brighter, as for bows, reeds, voices)
        or ``fenv`` (a filter envelope decaying with this time constant after each onset, as in a synth).
    vib_rate, vib_depth, vib_delay : float
        Vibrato rate (Hz), depth (cents) and onset delay after each note (s).
    glide : float
        Portamento time constant (s).
    jitter : float
        Slow random pitch wander (cents).
    trem, trem_rate : float
        Amplitude modulation depth (fraction) and rate (Hz).
    detunes : sequence of float
        Extra detuned copies (cents) with their own phase: an ensemble at the cost of one lookup each.
    decay : float or None
        Exponential decay time within each note (percussive synths); None for a sustained tone.
    full : bool
        Also return the amplitude envelope and the phase (cycles), for breath noise and growls.

    Returns
    -------
    y : np.ndarray, or (y, envelope, phase) with ``full=True``
    """
    n, m, rng = ctx.n, ctx.m, ctx.rng
    if not notes:
        return (np.zeros(n), np.zeros(n), np.zeros(n)) if full else np.zeros(n)
    notes = sorted(notes)
    on = _onset_index(ctx, notes)
    # pitch: the latest note's pitch, held through rests, then portamento
    last = np.zeros(m, dtype=int)
    last[on] = np.arange(len(on))
    mark = np.zeros(m, dtype=bool)
    mark[on] = True
    idx = np.maximum.accumulate(np.where(mark, np.arange(m), 0))
    pitch = np.array([x[2] for x in notes])[last[idx]]
    if glide > 0:
        a = math.exp(-1.0 / (glide * CR))
        pitch = sps.lfilter([1 - a], [1, -a], pitch, zi=[pitch[0] * a])[0]
    since = (np.arange(m) - idx) / CR
    cents = np.zeros(m)
    if vib_depth:
        rate = vib_rate * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * np.arange(m) / CR + rng.uniform(0, 6)))
        vib = np.sin(2 * np.pi * np.cumsum(rate) / CR + rng.uniform(0, 6))
        cents += vib_depth * vib * np.clip((since - vib_delay) / 0.3, 0, 1)
    if jitter:
        wander = sps.lfilter([0.02], [1, -0.98], ctx.noise_at(m))
        cents += jitter * wander / (np.std(wander) + 1e-9)
    f = _hz(pitch + cents / 100.0)
    # amplitude envelope: attack ramp, sustain (or decay), release
    env = np.zeros(m)
    na, nr = max(1, int(attack * CR)), max(1, int(release * CR))
    for t, d, _, v in notes:
        b = int((t + d) * CR)
        if b <= 0:
            continue
        a0 = int(t * CR)
        seg_len = max(1, b - a0)
        e = np.full(seg_len, v)
        k = min(na, seg_len)
        e[:k] *= np.linspace(0, 1, k + 1)[1:]
        if decay is not None:
            e *= np.exp(-np.arange(seg_len) / (decay * CR))
        r = e[-1] * np.linspace(1, 0, nr + 1)[1:]
        seg = np.concatenate([e, r])
        lo, hi = max(a0, 0), min(a0 + len(seg), m)
        if hi > lo:
            env[lo:hi] = np.maximum(env[lo:hi], seg[lo - a0:hi - a0])
    if trem:
        env *= 1 + trem * np.sin(2 * np.pi * trem_rate * np.arange(m) / CR + rng.uniform(0, 6))
    # Audio-rate work is done on (frame, hop) float32 blocks: the phase is accumulated per frame in float64,
    # wrapped, and ramped linearly inside each 16-sample hop; envelopes multiply whole rows.
    M = -(-n // HOP)
    inc = f[:M] * (TS / SR)  # table samples per audio sample
    ramp = np.arange(HOP, dtype=np.float32)
    f_max = float(f.max()) * 1.03

    def frames(ratio):
        step = inc * ratio
        phc = np.cumsum(step * HOP) - step * HOP + rng.random() * TS
        phc = np.mod(phc, 2 * TS).astype(np.float32)  # mod 2 cycles: the growl needs the half-rate phase
        return phc[:, None] + step.astype(np.float32)[:, None] * ramp

    if levels > 1:
        tabs = np.concatenate([_table(amps_fn(f_max, lv / (levels - 1))) for lv in range(levels)]).astype(np.float32)
        if fenv is not None:
            ctl = np.exp(-since / fenv) * (0.35 + 0.65 * np.minimum(env / max(ctx.vel, 1e-3), 1.2) / 1.2)
        else:
            ctl = env / (env.max() + 1e-9)
        base = (np.clip((ctl[:M] * (levels - 1) + 0.5).astype(np.int32), 0, levels - 1) * TS)[:, None]
    else:
        tabs, base = _table(amps_fn(f_max, 1.0)).astype(np.float32), None

    def look(ph):
        i = ph.astype(np.int32)
        np.bitwise_and(i, TS - 1, out=i)
        if base is not None:
            i += base
        return tabs.take(i)

    ph0 = frames(1.0)
    y = look(ph0)
    for c in detunes:
        y += look(frames(2 ** (c / 1200)))
    envf = (env[:M] * (1.0 / math.sqrt(1 + len(detunes)))).astype(np.float32)
    y *= envf[:, None]
    y = y.reshape(-1)[:n]
    if full:
        return y, np.repeat(envf, HOP)[:n], ph0.reshape(-1)[:n] / TS
    return y


_CIS_N = 1 << 14
_CIS = np.exp(-2j * np.pi * np.arange(_CIS_N) / _CIS_N).astype(np.complex64)  # a gather is 5x cheaper than exp


def _cis(k: np.ndarray) -> np.ndarray:
    """``exp(-2j * pi * k)`` by table lookup (phase error < 1e-4 cycle, far below a resonance's width)."""
    return _CIS.take((k * _CIS_N).astype(np.int64) & (_CIS_N - 1))


def _string(ctx: _Ctx, f0: float, nfft: int, t60: float, bright: float, *, B: float = 0.0, pos: float = 0.0,
            hf: float = 3000.0, strings: tuple = (0.0,), octave: float = 0.0, hammer: float | None = None):
    """One plucked or struck string: the impulse response of a lossy (optionally stiff) delay-line loop,
    computed in the frequency domain (a Karplus-Strong string without the per-sample recursion).

    The loop resonates at partials ``k f0 sqrt(1 + B k^2)``; each partial decays with its own T60
    (``t60 / (1 + (f / hf)^2)``: high partials die first, as with Karplus-Strong's averaging filter). The
    excitation is low-passed at ``bright`` Hz (2nd order for a pluck, 4th order for a felt ``hammer``) and
    combed by the pluck/strike position ``pos`` (fraction of the string: the harmonics with a node there
    are missing). ``strings`` lists detunings in cents of unison strings (piano beating); ``octave`` adds
    a string an octave up at that gain (harpsichord 4' stop). One inverse FFT of ``nfft`` points.
    """
    key = ("f", nfft)
    if key not in ctx.cache:
        ctx.cache[key] = np.fft.rfftfreq(nfft, 1.0 / SR).astype(np.float32)
    f = ctx.cache[key]
    t60 = min(t60, 0.8 * nfft / SR)  # decays before the FFT length: no audible time aliasing
    x2 = (f * np.float32(1 / bright)) ** 2
    E = np.float32(1) / (np.float32(1) + (x2 * x2 if hammer else x2))
    E *= f / (f + np.float32(0.5 * f0))  # no DC
    decay = (np.float32(-6.9078 / t60)) * (np.float32(1) + (f * np.float32(1 / hf)) ** 2)  # ln(1e-3) / T60(f)
    H = np.zeros(len(f), dtype=np.complex64)
    tunings = [(f0 * 2 ** (c / 1200), 1.0) for c in strings] + ([(2 * f0, octave)] if octave else [])
    for fr, gain in tunings:
        x = f * np.float32(1 / fr)
        k = x if B <= 0 else np.sqrt((np.sqrt(1 + np.float32(4 * B) * x * x) - 1) * np.float32(1 / (2 * B)))
        r = np.exp(decay * np.float32(1 / fr))  # gain per round trip of the loop
        loop = np.complex64(gain) / (np.float32(1) - r * _cis(k))
        if pos:
            loop *= np.complex64(1) - _cis(np.float32(pos) * k)
        H += loop
    y = sfft.irfft(E * H, nfft)
    y[:8] *= np.linspace(0, 1, 8)
    return y / (np.sqrt(np.mean(y[: nfft // 4] ** 2)) + 1e-9) * 0.3


def _pluck_notes(ctx: _Ctx, notes, name: str, nfft: int, fade=0.04, bend=None, **kw):
    """Render a list of ``(t, dur, midi, vel)`` with ``_string`` (one cached string per pitch and velocity
    step), each damped after its duration. ``bend(note) -> cents array or None`` adds pitch glides."""
    out = np.zeros(ctx.n, dtype=np.float32)
    for t, d, midi, v in notes:
        vb = int(np.clip(round(v * 2.5), 1, 3))  # three velocity (brightness) steps share cached strings
        key = (name, round(midi * 4), vb)
        x = ctx.cache.get(key)
        if x is None:
            kw2 = {k: (val(midi) if callable(val) else val) for k, val in kw.items()}
            kw2["bright"] = kw2["bright"] * (0.5 + 0.25 * vb)
            x = _string(ctx, float(_hz(midi)), nfft, **kw2)
            ctx.cache[key] = x
        if bend is not None:
            c = bend((t, d, midi, v))
            if c is not None:
                L = min(len(x), int((d + fade) * SR))
                # c is a pitch offset in cents per control frame (1 kHz); the last value is held
                ratio = 2 ** (np.interp(np.arange(L), np.arange(len(c)) * HOP, c) / 1200)
                pos = np.cumsum(ratio)
                x = np.interp(pos, np.arange(len(x)), x, right=0.0)
        _place(out, x, t, v, length=d, fade=fade)
    return out


def _sos_peaks(peaks) -> np.ndarray:
    """Cascade of RBJ peaking EQs, ``peaks`` = ((freq Hz, Q, gain dB), ...), as second-order sections."""
    sos = []
    for f0, q, g in peaks:
        A = 10 ** (g / 40)
        w = 2 * np.pi * min(f0, 7800) / SR
        al = np.sin(w) / (2 * q)
        b = [1 + al * A, -2 * np.cos(w), 1 - al * A]
        a = [1 + al / A, -2 * np.cos(w), 1 - al / A]
        sos.append(np.concatenate([np.array(b) / a[0], np.array(a) / a[0]]))
    return np.array(sos)


def _resonators(formants) -> np.ndarray:
    """Klatt cascade resonators (unity gain at DC), ``formants`` = ((freq Hz, bandwidth Hz), ...)."""
    sos = []
    for F, bw in formants:
        F = min(F, 7600)
        C = -np.exp(-2 * np.pi * bw / SR)
        Bc = 2 * np.exp(-np.pi * bw / SR) * np.cos(2 * np.pi * F / SR)
        A = 1 - Bc - C
        sos.append([A, 0, 0, 1, -Bc, -C])
    return np.array(sos)


_HP = {}


def _butter(kind: str, f, order: int = 2) -> np.ndarray:
    key = (kind, f if np.isscalar(f) else tuple(f), order)
    if key not in _HP:
        _HP[key] = sps.butter(order, f, btype=kind, fs=SR, output="sos")
    return _HP[key]


# --------------------------------------------------------------------------------------------------------
# Instruments: each returns one mono layer of ctx.n samples
# --------------------------------------------------------------------------------------------------------

def _durs(ctx: _Ctx, kind: str = "melody"):
    """Note-duration choices (beats) and weights for a melody, denser at slow tempi so that the note rate
    still rises with the tempo but a slow piece is not all whole notes."""
    if kind == "fast":
        return (0.25, 0.5, 1.0), (0.55, 0.35, 0.1)
    if ctx.clip.bpm < 84:
        return (0.5, 1.0, 2.0, 0.25), (0.35, 0.35, 0.2, 0.1)
    if ctx.clip.bpm < 128:
        return (0.5, 1.0, 0.25, 2.0), (0.45, 0.3, 0.15, 0.1)
    return (0.5, 1.0, 0.25, 2.0), (0.5, 0.3, 0.1, 0.1)


def _strum_notes(ctx: _Ctx, pattern, lo=40, hi=66, spread=(0.012, 0.025), n_down=6, n_up=4):
    rng = ctx.rng
    hits = []
    bar = ctx.t0 - ctx.bar
    while bar < ctx.dur:
        for p in pattern:
            hits.append((bar + p * ctx.beat + rng.normal(0, 0.006), p % 1 != 0, p))
        bar += ctx.bar
    hits = [h for h in hits if -1 < h[0] < ctx.dur]
    notes = []
    for j, (t, up, p) in enumerate(hits):
        nxt = hits[j + 1][0] if j + 1 < len(hits) else t + ctx.beat
        voice = ctx.voicing(t + 0.01, lo, hi, n=n_down)
        if up:
            voice = voice[-n_up:][::-1]
        dt = rng.uniform(*spread)
        v = ctx.velocity(p) * (0.7 if up else 1.0)
        for k, mm in enumerate(voice):
            tk = t + k * dt
            notes.append((tk, max(0.05, nxt - tk), float(mm), v * rng.uniform(0.85, 1.05)))
    return notes


def _arp_notes(ctx: _Ctx, lo, hi, step, order="up", ring=1.5, n=6):
    rng = ctx.rng
    ts, pos = ctx.grid(step)
    notes = []
    k = 0
    seq = None
    for t, p in zip(ts, pos):
        voice = ctx.voicing(t + 0.01, lo, hi, n=n)
        if not voice:
            continue
        if order == "up":
            seq = voice
        elif order == "updown":
            seq = voice + voice[-2:0:-1]
        else:
            seq = [voice[0], voice[-1], voice[len(voice) // 2], voice[-1]]
        mm = seq[k % len(seq)]
        k += 1
        notes.append((t, ring * ctx.beat, float(mm), ctx.velocity(p) * rng.uniform(0.8, 1.0)))
    return notes


def _acoustic_guitar(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    kw = dict(t60=rng.uniform(1.2, 2.2), bright=rng.uniform(2500, 4000), pos=rng.uniform(0.1, 0.2),
              hf=rng.uniform(2000, 3500), B=1e-5)
    if role == "strum":
        pats4 = [[0, 1, 2, 3], [0, 1, 1.5, 2.5, 3, 3.5], [0, 2, 2.5, 3.5], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]]
        pats3 = [[0, 1, 2], [0, 1, 1.5, 2, 2.5]]
        pats = pats4 if ctx.meter == 4 else pats3
        notes = _strum_notes(ctx, pats[int(rng.integers(len(pats)))])
    elif role == "boomchick":
        notes = []
        for t, p in zip(*ctx.grid(1.0, 0.005)):
            if int(round(p)) % 2 == 0:
                r = ctx.root(t + 0.01, 40, 52)
                r = r + (7 if (int((t - ctx.t0) / ctx.bar) % 2 and rng.random() < 0.7) else 0)
                notes.append((t, ctx.beat * 0.9, float(r), ctx.velocity(p)))
            else:
                for k, mm in enumerate(ctx.voicing(t + 0.01, 52, 67, n=4)):
                    notes.append((t + 0.01 * k, ctx.beat * 0.7, float(mm), ctx.velocity(p) * 0.8))
    elif role == "pick":
        notes = _arp_notes(ctx, 40, 67, 0.5 if ctx.clip.bpm > 80 else 0.25, "alberti", ring=1.5, n=5)
    else:  # melody / solo: classical or folk guitar line, with bass notes in a solo
        d, w = _durs(ctx)
        notes = _melody(ctx, 52, 79, d, w)
        if role == "solo":
            for t in ctx.chord_times():
                notes.append((t, ctx.chord_len, float(ctx.root(t + 0.01, 40, 52)), ctx.vel * 0.8))
    y = _pluck_notes(ctx, notes, "ag", 16384, **kw)
    body = _sos_peaks(((rng.uniform(90, 120), 2, 6), (rng.uniform(180, 250), 2, 4), (rng.uniform(2500, 3500), 1, 2)))
    return sps.sosfilt(body, y)


def _echo(ctx: _Ctx, y: np.ndarray, beats: float = 0.75, fb: float = 0.35, taps: int = 3) -> np.ndarray:
    d = int(beats * ctx.beat * SR)
    out = y.copy()
    for k in range(1, taps + 1):
        if k * d >= len(y):
            break
        out[k * d:] += fb ** k * y[: len(y) - k * d]
    return out


def _electric_guitar(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    kw = dict(t60=rng.uniform(1.5, 2.5), bright=rng.uniform(3000, 4500), pos=rng.uniform(0.08, 0.15),
              hf=rng.uniform(2500, 4000))
    if role == "strum":
        notes = _strum_notes(ctx, [[0, 1, 2, 3], [0, 1.5, 2.5, 3], [0, 0.5, 1.5, 2, 3]][int(rng.integers(3))],
                             lo=45, hi=71, n_down=5)
    elif role == "arp":
        notes = _arp_notes(ctx, 52, 76, 0.5, "updown", ring=1.0, n=4)
    else:  # lead
        d, w = _durs(ctx, "fast" if ctx.clip.bpm < 110 else "melody")
        notes = _melody(ctx, 60, 86, d, w, rest=0.05)
    y = _pluck_notes(ctx, notes, "eg", 16384, **kw)
    y = np.tanh(2.0 * y / (np.abs(y).max() + 1e-9)) if role == "lead" else y  # a light overdrive
    return _echo(ctx, y) if role in ("arp", "lead") else y


def _distorted_guitar(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    open_kw = dict(t60=2.0, bright=3000.0, pos=0.15, hf=3000.0)
    notes, muted = [], []
    if role == "power":
        step = 0.5 if ctx.clip.bpm < 150 else 1.0
        for t, p in zip(*ctx.grid(step, 0.004)):
            r = ctx.root(t + 0.01, 40, 52)
            for k, iv in enumerate((0, 7, 12)):
                notes.append((t + 0.004 * k, step * ctx.beat * 0.92, float(r + iv), ctx.velocity(p, 0.1)))
    elif role == "chug":
        step = 0.25 if ctx.clip.bpm < 170 else 0.5
        rest = rng.random(16) < 0.2
        accent = rng.random(16) < 0.2
        for t, p in zip(*ctx.grid(step, 0.003)):
            j = int(round(p / step)) % 16
            r = ctx.root(t + 0.01, 40, 47)
            if rest[j]:
                continue
            if accent[j] or p == 0:
                for k, iv in enumerate((0, 7, 12)):
                    notes.append((t + 0.003 * k, 2 * step * ctx.beat, float(r + iv), ctx.velocity(p)))
            else:
                muted.append((t, step * ctx.beat * 0.8, float(r), ctx.velocity(p) * 0.9))
    else:  # lead: a solo with bends
        d, w = _durs(ctx, "fast")
        notes = _melody(ctx, 62, 88, d, w, rest=0.04)

    def bend(note):
        if role != "lead" or rng.random() > 0.35:
            return None
        k = int(0.12 * SR / HOP)
        c = np.zeros(max(k * 4, 4))
        c[:k] = np.linspace(-200, 0, k)
        c[k:] += 35 * np.sin(2 * np.pi * 6 * np.arange(len(c) - k) / CR)
        return c

    y = _pluck_notes(ctx, notes, "dg", 16384, bend=bend, **open_kw)
    if muted:
        y += 0.9 * _pluck_notes(ctx, muted, "pm", 4096, t60=0.15, bright=1500.0, pos=0.15, hf=1200.0)
    # amp chain: tighten the lows and push the mids into the clipper, clip asymmetrically (odd and even
    # harmonics), then a 4x12 cabinet: presence peak near 2.5 kHz, steep roll-off above 4-5.5 kHz
    y = sps.sosfilt(np.vstack([_butter("highpass", 250.0), _sos_peaks(((800.0, 0.8, 9.0),))]), y)
    y = y / (np.abs(y).max() + 1e-9)
    drive = rng.uniform(8, 25)
    y = np.tanh(drive * y + 0.2) - np.tanh(0.2)
    cab = np.vstack([_butter("highpass", 90.0), _sos_peaks(((rng.uniform(2000, 3000), 1.2, 5.0),)),
                     _butter("lowpass", float(round(rng.uniform(4000, 5500), -2)), 4)])
    return sps.sosfilt(cab, y)


def _bass(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    notes = []
    g = ctx.clip.genre
    if role == "walk":
        ts, pos = ctx.grid(1.0, 0.008)
        prev = ctx.root(ctx.t0 + 0.01, 33, 48)
        for t, p in zip(ts, pos):
            if p == 0:
                mm = ctx.root(t + 0.01, 33, 48)
            else:
                nxt = ctx.root(t + ctx.beat + 0.01, 33, 48)
                mm = prev + int(np.sign(nxt - prev) or 1) * int(rng.choice([1, 2]))
                if rng.random() < 0.3:
                    mm = prev + int(rng.choice([-3, 4, 7]))
            notes.append((t, ctx.beat * 0.95, float(mm), ctx.velocity(p, 0.05)))
            prev = mm
    else:
        step = 0.5 if g in ("rock", "metal") else 1.0
        for t, p in zip(*ctx.grid(step, 0.005)):
            r = ctx.root(t + 0.01, 28, 45)
            if g == "country" and int(round(p)) % 2 == 1:
                continue
            if g == "country" and int(round(p)) == 2:
                r += 7
            notes.append((t, step * ctx.beat * (0.9 if g != "country" else 1.8), float(r), ctx.velocity(p)))
    return _pluck_notes(ctx, notes, "bass", 16384, t60=1.4, bright=rng.uniform(700, 1400), pos=0.2, hf=1200.0)


def _piano(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    B = 10 ** rng.uniform(-4.0, -3.3)
    det = rng.uniform(0.5, 2.0)
    kw = dict(t60=lambda mm: float(np.clip(6 * 2 ** (-(mm - 40) / 18), 0.5, 1.6)), bright=2500.0, B=B,
              pos=1 / 8, hf=lambda mm: 1500 + 40 * max(mm - 40, 0), strings=(-det, det), hammer=1.2)
    notes = []
    if role == "chords":
        pats = [[0], [0, 2], [0, 1, 2, 3], [0, 1.5, 2.5]] if ctx.meter == 4 else [[0], [0, 1, 2]]
        pat = pats[int(rng.integers(len(pats)))]
        bar = ctx.t0 - ctx.bar
        while bar < ctx.dur:
            hits = [bar + p * ctx.beat for p in pat]
            for j, t in enumerate(hits):
                end = hits[j + 1] if j + 1 < len(hits) else bar + ctx.bar
                v = ctx.velocity(pat[j])
                for mm in [ctx.root(t + 0.01, 36, 48)] + ctx.voicing(t + 0.01, 55, 72, n=3, root_low=False):
                    notes.append((t + rng.normal(0, 0.004), end - t, float(mm), v))
            bar += ctx.bar
    elif role == "arp":
        notes = _arp_notes(ctx, 43, 79, 0.5 if ctx.clip.bpm < 110 else 0.25, "updown", ring=2.0, n=6)
    elif role == "comp":
        for t, p in zip(*ctx.grid(0.5, 0.01)):
            if (p % 1 != 0 and rng.random() < 0.5) or (p % 1 == 0 and rng.random() < 0.15):
                for mm in ctx.voicing(t + 0.01, 52, 70, n=3, root_low=False):
                    notes.append((t, ctx.beat * 0.4, float(mm), ctx.velocity(p) * 0.8))
    else:  # melody or alberti: a right-hand melody over a left hand
        d, w = _durs(ctx)
        notes = _melody(ctx, 62, 88, d, w)
        if role == "alberti":
            notes += _arp_notes(ctx, 43, 62, 0.5, "alberti", ring=0.6, n=3)
        else:
            for t in ctx.chord_times():
                for mm in ctx.voicing(t + 0.01, 36, 57, n=3):
                    notes.append((t, ctx.chord_len, float(mm), ctx.vel * 0.75))
    y = _pluck_notes(ctx, notes, "piano", 32768, fade=0.08, **kw)
    return y


def _harpsichord(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    kw = dict(t60=lambda mm: float(np.clip(2.2 * 2 ** (-(mm - 48) / 24), 0.6, 1.6)), bright=6500.0,
              pos=rng.uniform(0.07, 0.12), hf=6000.0, octave=rng.uniform(0.3, 0.6))
    notes = []
    if role == "melody":
        notes = _melody(ctx, 60, 86, (0.25, 0.5), (0.7, 0.3), rest=0.02, chord_p=0.4, leap=0.1, breath=(0.5, 1.0))
        for t, p in zip(*ctx.grid(1.0, 0.004)):
            notes.append((t, ctx.beat, float(ctx.root(t + 0.01, 36, 50) + (12 if p % 2 else 0)), ctx.vel * 0.8))
    else:  # continuo: arpeggiated chords on the beats over a bass line
        for t, p in zip(*ctx.grid(1.0, 0.004)):
            for k, mm in enumerate(ctx.voicing(t + 0.01, 50, 74, n=4)):
                notes.append((t + 0.025 * k, ctx.beat, float(mm), ctx.velocity(p)))
        for t, p in zip(*ctx.grid(0.5, 0.004)):
            notes.append((t, ctx.beat * 0.5, float(ctx.root(t + 0.01, 36, 50) + (7 if p % 1 else 0)), ctx.vel * 0.8))
    y = _pluck_notes(ctx, notes, "hpsi", 16384, fade=0.05, **kw)
    return sps.sosfilt(_sos_peaks(((1200, 1.5, 4), (3500, 1, 3))), y)


def _harp(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    kw = dict(t60=lambda mm: float(np.clip(3.0 * 2 ** (-(mm - 40) / 24), 0.7, 1.6)), bright=rng.uniform(1400, 2200),
              pos=rng.uniform(0.3, 0.45), hf=2000.0)
    notes = _arp_notes(ctx, 40, 84, 0.5 if ctx.clip.bpm < 100 else 0.25, "up", ring=3.0, n=8)
    if role == "melody":
        d, w = _durs(ctx)
        notes = [(t, d_, mm, v * 0.6) for t, d_, mm, v in notes if mm < 64]
        notes += _melody(ctx, 64, 88, d, w)
    # glissandi at some chord changes: a fast scale run over two octaves
    for t in ctx.chord_times():
        if rng.random() < 0.25:
            deg0 = ctx.midi2deg(55)
            for k in range(14):
                notes.append((t - 0.5 + k * 0.035, 1.0, float(ctx.deg2midi(deg0 + k)), ctx.vel * 0.6))
    return _pluck_notes(ctx, notes, "harp", 32768, fade=0.2, **kw)


def _jawari(y: np.ndarray, amount: float) -> np.ndarray:
    """Sitar/tanpura bridge buzz: a high-passed rectified copy, stronger while the string is loud."""
    y = y / (np.abs(y).max() + 1e-9)
    buzz = sps.sosfilt(_butter("highpass", 1500.0), np.abs(y) ** 1.5)
    return y + amount * buzz / (np.std(buzz) + 1e-9) * np.std(y)


def _sitar(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    fast = ctx.clip.bpm > 110
    d, w = _durs(ctx, "fast" if fast else "melody")
    notes = _melody(ctx, ctx.tonic + 12, ctx.tonic + 31, d, w, rest=0.05, chord_p=0.3)
    prev = {"m": notes[0][2] if notes else 60.0}

    def bend(note):  # meend: glide from the previous note; gamak on some long notes
        _, dd, mm, _ = note
        diff, prev["m"] = (prev["m"] - mm) * 100, mm
        n_c = max(4, int(dd * CR))
        if rng.random() < 0.4 and abs(diff) > 0:
            k = min(n_c, int(rng.uniform(0.08, 0.25) * CR))
            c = np.zeros(n_c)
            c[:k] = np.linspace(diff, 0, k)
            return c
        if dd > 0.6 and rng.random() < 0.3:
            return 80 * np.sin(2 * np.pi * 5 * np.arange(n_c) / CR)
        return None

    y = _pluck_notes(ctx, notes, "sitar", 16384, bend=bend, t60=2.0, bright=5000.0, pos=0.08, hf=5000.0)
    if fast:  # chikari: the rhythm strings struck on the off-beats
        ch = [(t, 0.2, float(ctx.tonic + 24), ctx.vel * 0.35) for t, p in zip(*ctx.grid(0.5)) if p % 1]
        y += _pluck_notes(ctx, ch, "chik", 4096, t60=0.3, bright=6000.0, pos=0.1, hf=5000.0)
    return _jawari(y, rng.uniform(0.35, 0.6))


def _tanpura(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    cycle = rng.uniform(2.4, 4.0)
    pitches = [ctx.tonic - 5, ctx.tonic, ctx.tonic, ctx.tonic - 12]
    notes = []
    t = -rng.uniform(0, cycle)
    k = 0
    while t < ctx.dur:
        notes.append((t, cycle * 0.9, float(pitches[k % 4]), ctx.vel * rng.uniform(0.8, 1.0)))
        t += cycle / 4 * rng.uniform(0.95, 1.05)
        k += 1
    y = _pluck_notes(ctx, notes, "tanp", 32768, fade=0.3, t60=3.0, bright=3500.0, pos=0.05, hf=3000.0)
    return _jawari(y, 0.7)


_VIOLIN_BODY = ((280, 3, 6), (460, 3, 4), (2800, 1.2, 5), (7000, 0.7, -10))
_CELLO_BODY = ((110, 2.5, 6), (220, 3, 4), (1500, 1.2, 4), (5000, 0.7, -10))


def _bow_noise(ctx: _Ctx, env: np.ndarray, level: float) -> np.ndarray:
    """Rosin and bow noise following the bowing envelope."""
    return level * ctx.hiss_at(ctx.n) * env


def _bowed_amps(f_max, level):
    return _saw_amps(f_max, cutoff=4 + 22 * level)


def _strings(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    ranges = [(36, 52), (48, 64), (55, 72), (62, 81)]
    if role == "stacc":
        lines = _lines(ctx, ranges, rhythm_beats=0.5)
        lines = [[(t, 0.35 * ctx.beat, mm, v * rng.uniform(0.8, 1.0)) for t, _, mm, v in ln] for ln in lines]
        att, rel = 0.015, 0.06
    else:
        lines = _lines(ctx, ranges)
        att, rel = rng.uniform(0.15, 0.45), 0.3
    if role == "melody":
        d, w = _durs(ctx)
        lines[-1] = _melody(ctx, 64, 86, d, w, rest=0.03)
        lines[-2] = [(t, dd, mm - 12, v * 0.7) for t, dd, mm, v in lines[-1]]
    y, env = np.zeros(ctx.n), np.zeros(ctx.n)
    for k, ln in enumerate(lines):  # the violin lines are ensembles of two detuned players
        yk, ek, _ = _sustained(ctx, ln, _bowed_amps, attack=att, release=rel, vib_rate=rng.uniform(5, 6.5),
                               vib_depth=12, vib_delay=0.2, glide=0.05, jitter=3,
                               detunes=(rng.uniform(6, 12),) if k >= 2 else (), levels=3, full=True)
        y += yk
        env += ek
    y = sps.sosfilt(_sos_peaks(((280, 2, 4), (500, 2, 3), (2500, 1, 3), (6500, 0.7, -8))), y)
    return y + _bow_noise(ctx, env, 0.06 * _rms(y) / (_rms(env) + 1e-9))


def _bowed_solo(ctx: _Ctx, role: str, inst: str) -> np.ndarray:
    rng = ctx.rng
    if inst == "violin":
        lo, hi, body = 62, 88, _VIOLIN_BODY
    else:
        lo, hi, body = 43, 67, _CELLO_BODY
    if role == "bass":
        notes = [(t, ctx.chord_len / 2, float(ctx.root(t + 0.01, 36, 52)), ctx.vel * 0.8)
                 for t in np.concatenate([ctx.chord_times(), ctx.chord_times() + ctx.chord_len / 2])]
        notes.sort()
    else:
        d, w = _durs(ctx, "fast" if ctx.clip.style == "irish" else "melody")
        notes = _melody(ctx, lo, hi, d, w, rest=0.04)
    y, env, _ = _sustained(ctx, notes, _bowed_amps, attack=rng.uniform(0.05, 0.12), release=0.12,
                           vib_rate=rng.uniform(5.5, 6.8), vib_depth=rng.uniform(18, 35), vib_delay=0.15,
                           glide=0.04, jitter=4, levels=3, full=True)
    y = sps.sosfilt(_sos_peaks(body), y)
    return y + _bow_noise(ctx, env, 0.08 * _rms(y) / (_rms(env) + 1e-9))


def _flute(ctx: _Ctx, role: str, ney: bool = False) -> np.ndarray:
    rng = ctx.rng
    lo, hi = (55, 79) if ney else (64, 91)
    d, w = _durs(ctx, "fast" if ctx.clip.style == "irish" else "melody")
    notes = _melody(ctx, lo, hi, d, w, rest=0.06)
    r = rng.uniform(0.6, 1.4, 6)
    amps = np.array([1, 0.3, 0.12, 0.05, 0.02, 0.01]) * r * (np.array([1, .6, .5, .4, .3, .2]) if ney else 1)
    y, env, _ = _sustained(ctx, notes, lambda fm, lv: amps[: max(1, int(NYQ_SAFE / fm))],
                           attack=rng.uniform(0.04, 0.07), release=0.08, vib_rate=rng.uniform(4.5, 5.5),
                           vib_depth=rng.uniform(8, 16), vib_delay=0.2, glide=0.015, jitter=3, trem=0.06, full=True)
    y = y + (0.25 if ney else 0.1) * ctx.hiss_at(ctx.n) * env * (_rms(y) / (_rms(env) + 1e-9))
    chiff = sps.sosfilt(_butter("bandpass", (2000.0, 5000.0)), ctx.noise_at(640)) * np.exp(-np.arange(640) / 160)
    for t, _, _, v in notes:
        _place(y, chiff, t, 0.3 * v)
    return y


def _sax(ctx: _Ctx, role: str) -> np.ndarray:
    d, w = _durs(ctx)
    notes = _melody(ctx, 55, 80, d, w, rest=0.08)

    def amps(fm, lv):
        k = np.arange(1, max(2, int(NYQ_SAFE / fm)) + 1)
        return k ** -0.8 * (1 + 2.0 * np.exp(-((k * fm / 1.4 - 1200) / 700) ** 2)) * (1 / (1 + (k / (3 + 12 * lv)) ** 3))

    y, env, _ = _sustained(ctx, notes, amps, attack=0.03, release=0.08, vib_rate=5.0, vib_depth=15,
                           vib_delay=0.3, glide=0.02, jitter=5, levels=3, full=True)
    return y + 0.08 * ctx.hiss_at(ctx.n) * env * (_rms(y) / (_rms(env) + 1e-9))


def _organ(ctx: _Ctx, role: str) -> np.ndarray:
    amps = np.array([1, 0.8, 0.5, 0.6, 0, 0.3, 0, 0.3])
    lines = _lines(ctx, [(36, 48), (52, 64), (57, 69), (62, 76)])
    y = np.zeros(ctx.n)
    for ln in lines:
        y += _sustained(ctx, ln, lambda fm, lv: amps[: max(1, int(NYQ_SAFE / fm))], attack=0.03, release=0.15,
                        trem=0.08, trem_rate=6.5)
    return y


def _synth_amps(res=0.0):
    return lambda fm, lv: _saw_amps(fm, cutoff=1.5 + 16 * lv ** 1.5, res=res)


def _synth(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    if role == "pad":
        lines = _lines(ctx, [(48, 60), (55, 67), (60, 74)])
        y = np.zeros(ctx.n)
        for ln in lines:
            y += _sustained(ctx, ln, _synth_amps(0.3), attack=rng.uniform(0.4, 1.5), release=0.8, vib_rate=0.4,
                            vib_depth=6, vib_delay=0, glide=0.1, detunes=(rng.uniform(8, 16),), levels=4)
        return y
    if role == "drone":
        notes = [(-1.0, ctx.dur + 2, float(ctx.tonic - 12), ctx.vel), (-1.0, ctx.dur + 2, float(ctx.tonic - 5), ctx.vel)]
        y = np.zeros(ctx.n)
        for nt in notes:
            y += _sustained(ctx, [nt], _synth_amps(0.5), attack=1.0, detunes=(-7, 6), levels=6, trem=0.3,
                            trem_rate=rng.uniform(0.05, 0.2))
        return y
    if role == "arp":
        step = 0.25 if ctx.clip.bpm < 140 else 0.5
        notes = _arp_notes(ctx, 55, 79, step, "updown", ring=0.8, n=5)
        notes = [(t, step * ctx.beat * 0.8, mm, v) for t, _, mm, v in notes]
        y = _sustained(ctx, notes, _synth_amps(1.5), attack=0.005, release=0.05, decay=0.15,
                       fenv=rng.uniform(0.05, 0.15), levels=6, detunes=(8,))
        return _echo(ctx, y, 0.75, 0.3)
    if role == "stab":
        offs = rng.random(8) < 0.5
        offs[1] = True
        lines = _lines(ctx, [(55, 67), (60, 72), (64, 76)], rhythm_beats=0.5)
        y = np.zeros(ctx.n)
        for ln in lines:
            ln = [(t, 0.12, mm, v) for t, _, mm, v in ln if offs[int(round((t - ctx.t0) / ctx.beat * 2)) % 8]]
            y += _sustained(ctx, ln, _synth_amps(1.0), attack=0.003, release=0.08, decay=0.12, fenv=0.05, levels=5,
                            detunes=(-10, 9))
        return y
    if role == "acid":
        pat_rest = rng.random(16) < 0.25
        pat_oct = rng.random(16) < 0.25
        pat_acc = rng.random(16) < 0.3
        notes = []
        for t, p in zip(*ctx.grid(0.25)):
            j = int(round(p * 4)) % 16
            if pat_rest[j]:
                continue
            mm = ctx.root(t + 0.01, 36, 47) + (12 if pat_oct[j] else 0)
            notes.append((t, 0.22 * ctx.beat, float(mm), ctx.vel * (1.3 if pat_acc[j] else 0.8)))
        return _sustained(ctx, notes, _synth_amps(2.5), attack=0.003, release=0.03, glide=0.012,
                          fenv=rng.uniform(0.06, 0.15), levels=8)
    if role == "bass":
        notes = []
        offbeat = ctx.clip.style == "dance"
        for t, p in zip(*ctx.grid(0.5)):
            if offbeat and p % 1 == 0:
                continue
            if not offbeat and rng.random() < 0.3:
                continue
            notes.append((t, 0.4 * ctx.beat, float(ctx.root(t + 0.01, 33, 45)), ctx.velocity(p)))
        return _sustained(ctx, notes, lambda fm, lv: np.r_[1.5, _saw_amps(fm, cutoff=2 + 6 * lv)[1:]],
                          attack=0.005, release=0.05, decay=0.25, fenv=0.1, levels=4)
    # lead
    d, w = _durs(ctx)
    notes = _melody(ctx, 60, 84, d, w, rest=0.06)
    return _sustained(ctx, notes, _synth_amps(0.8), attack=0.01, release=0.1, vib_rate=5.0, vib_depth=15,
                      vib_delay=0.3, glide=0.04, detunes=(7,), levels=4)


def _banjo(ctx: _Ctx, role: str) -> np.ndarray:
    step = 0.25 if ctx.clip.bpm < 140 else 0.5
    notes = _arp_notes(ctx, 55, 76, step, "up", ring=0.5, n=3)
    notes += [(t, 0.3, float(ctx.tonic + 19), ctx.vel * 0.6) for t, p in zip(*ctx.grid(1.0)) if p % 2 == 1]
    return _pluck_notes(ctx, notes, "banjo", 8192, t60=0.5, bright=5000.0, pos=0.08, hf=4000.0)


def _oud(ctx: _Ctx, role: str) -> np.ndarray:
    rng = ctx.rng
    d, w = _durs(ctx)
    notes = []
    for t, dd, mm, v in _melody(ctx, 50, 74, d, w, rest=0.06):
        if dd >= ctx.beat and rng.random() < 0.3:  # tremolo picking on long notes
            k = int(dd / (0.25 * ctx.beat))
            notes += [(t + j * 0.25 * ctx.beat, 0.25 * ctx.beat, mm, v * 0.8) for j in range(k)]
        else:
            notes.append((t, dd, mm, v))
    return _pluck_notes(ctx, notes, "oud", 16384, t60=0.9, bright=2500.0, pos=0.15, hf=2500.0, B=1e-4)


def _bell(ctx: _Ctx, f0: float, dur: float) -> np.ndarray:
    n = int(dur * SR)
    t = np.arange(n) / SR
    y = np.zeros(n)
    for ratio, g, dec in ((1, 1, 1.0), (2.76, 0.6, 0.6), (5.4, 0.4, 0.35), (8.93, 0.25, 0.2), (13.34, 0.15, 0.12)):
        if f0 * ratio < NYQ_SAFE:
            y += g * np.sin(2 * np.pi * f0 * ratio * t) * np.exp(-t / (dec * dur / 2))
    return y


def _weird(ctx: _Ctx, role: str) -> np.ndarray:
    """Experimental textures, mostly off the grid and off the scale."""
    rng = ctx.rng
    n = ctx.n
    y = np.zeros(n)
    times = np.sort(rng.uniform(-0.5, ctx.dur, int(rng.integers(6, 20))))
    if role == "ringmod":
        notes = [(t, rng.uniform(0.1, 1.2), rng.uniform(40, 88), ctx.vel) for t in times]
        x = _sustained(ctx, notes, lambda fm, lv: _saw_amps(fm, cutoff=6), attack=0.01, release=0.1, glide=0.08)
        car = _table([1.0]).take(((np.arange(n) * rng.uniform(150, 1500) / SR) * TS).astype(np.int64) & (TS - 1))
        return x * car
    if role == "reverse":
        for t in times:
            x = _string(ctx, float(_hz(rng.uniform(40, 80))), 16384, rng.uniform(0.5, 1.2), 3000.0, B=3e-4)
            L = int(rng.uniform(0.4, 1.0) * SR)
            _place(y, x[:L][::-1], t, rng.uniform(0.5, 1.0))
        return y
    if role == "glitch":
        for t in times:
            L = int(rng.uniform(0.005, 0.06) * SR)
            g = ctx.noise_at(L) if rng.random() < 0.5 else np.sign(np.sin(2 * np.pi * rng.uniform(100, 3000) * np.arange(L) / SR))
            g = np.round(g * 4) / 4  # bit-crushed
            for k in range(int(rng.integers(1, 8))):
                _place(y, g, t + k * rng.uniform(0.03, 0.07), rng.uniform(0.3, 1.0))
        return y
    if role == "cluster":
        for t in times[: max(2, len(times) // 3)]:
            base = rng.uniform(45, 72)
            for k in range(int(rng.integers(4, 8))):
                x = _string(ctx, float(_hz(base + k)), 16384, 1.2, 1800.0, B=3e-4, hammer=1.2)
                _place(y, x, t, 0.5, length=rng.uniform(0.5, 1.5))
        return y
    if role == "chirp":
        f = np.zeros(ctx.m)
        seg = np.sort(rng.uniform(0, ctx.m, 6).astype(int))
        for a, b in zip(np.r_[0, seg], np.r_[seg, ctx.m]):
            f[a:b] = np.exp(np.linspace(np.log(rng.uniform(150, 4000)), np.log(rng.uniform(150, 4000)), b - a))
        ph = np.cumsum(np.repeat(f, HOP)[:n] / SR)
        car = _table([1.0]).take((ph * TS).astype(np.int64) & (TS - 1))
        return sps.sosfilt(_butter("lowpass", 400.0), ctx.noise_at(n)) * car * 4
    # bells: inharmonic partials at microtonal pitches
    for t in times:
        _place(y, _bell(ctx, float(_hz(rng.uniform(60, 96))), rng.uniform(0.5, 2.0)), t, rng.uniform(0.3, 1.0))
    return y


_INSTRUMENTS = {
    "acoustic_guitar": _acoustic_guitar, "electric_guitar": _electric_guitar, "distorted_guitar": _distorted_guitar,
    "bass": _bass, "piano": _piano, "harpsichord": _harpsichord, "harp": _harp, "sitar": _sitar,
    "tanpura": _tanpura, "strings": _strings, "violin": lambda c, r: _bowed_solo(c, r, "violin"),
    "cello": lambda c, r: _bowed_solo(c, r, "cello"), "flute": _flute, "ney": lambda c, r: _flute(c, r, ney=True),
    "sax": _sax, "organ": _organ, "synth": _synth, "banjo": _banjo, "oud": _oud, "weird": _weird,
}


# --------------------------------------------------------------------------------------------------------
# Drums
# --------------------------------------------------------------------------------------------------------

_PATTERNS = {  # one bar of 4 beats in 16 steps (jazz: 12 triplet steps); 'x' hit, 'o' ghost
    "rock": {"K": "x.......x.x.....", "S": "....x.......x...", "H": "x.x.x.x.x.x.x.x."},
    "metal": {"K": "xxxxxxxxxxxxxxxx", "S": "....x.......x...", "R": "x...x...x...x..."},
    "pop": {"K": "x.....x.x.......", "S": "....x.......x...", "H": "xoxoxoxoxoxoxoxo"},
    "techno": {"K": "x...x...x...x...", "O": "..x...x...x...x.", "H": "xoxoxoxoxoxoxoxo", "P": "....x.......x..."},
    "dance": {"K": "x...x...x...x...", "P": "....x.......x...", "O": "..x...x...x...x.", "H": "x.x.x.x.x.x.x.x."},
    "breaks": {"K": "x.x.......xx....", "S": "....x..o.o..x..o", "H": "x.x.x.x.x.x.x.x."},
    "country": {"K": "x.......x.......", "B": "xoxoxoxoxoxoxoxo", "S": "....x.......x..."},
    "jazz": {"R": "x..x.xx..x.x", "H": "...x.....x..", "K": "o.....o....."},
    "darbuka": {"D": "x.......x.......", "T": "..x...x.....x.o.", "k": "....o.....o...o."},
    "bodhran": {"D": "x.....x.x.....x.", "T": "..o.o.....o.o..."},
}


def _env(n: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * SR))


def _drum_samples(ctx: _Ctx, style: str) -> dict:
    """One synthesized sample per drum voice (with per-clip random tuning and decay)."""
    rng = ctx.rng
    el = style in ("techno", "dance", "breaks", "glitch")
    s = {}
    n = int(0.5 * SR)
    t = np.arange(n) / SR
    f_hi, f_lo = rng.uniform(100, 180), rng.uniform(42, 60)
    f = f_lo + (f_hi - f_lo) * np.exp(-t / rng.uniform(0.02, 0.06))
    dec = rng.uniform(0.25, 0.45) if el else rng.uniform(0.12, 0.3)
    click = np.zeros(n)
    click[:48] = ctx.noise_at(48) * np.linspace(1, 0, 48)
    s["K"] = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / dec) + rng.uniform(0.2, 0.6) * click
    n = int(0.35 * SR)
    t = t[:n]
    ft = rng.uniform(170, 240)
    tone = (np.sin(2 * np.pi * ft * t) + 0.5 * np.sin(2 * np.pi * 1.6 * ft * t)) * _env(n, 0.05)
    nz = sps.sosfilt(_butter("highpass", rng.uniform(1200, 2500)), ctx.noise_at(n)) * _env(n, rng.uniform(0.08, 0.18))
    s["S"] = 0.5 * tone + nz / (np.abs(nz).max() + 1e-9)
    clap = np.zeros(n)
    for k in range(4):
        a = int(k * 0.011 * SR)
        clap[a:] += ctx.noise_at(n - a) * _env(n - a, 0.012 if k < 3 else 0.12)
    s["P"] = sps.sosfilt(_butter("bandpass", (900.0, 2600.0)), clap)
    ramp = np.arange(int(1.2 * SR)) / SR
    metal = sum(((fr * rng.uniform(0.9, 1.25) * ramp) % 1.0 < 0.5) - 0.5  # six square waves: the 808 "metal"
                for fr in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
    hat = sps.sosfilt(_butter("highpass", 5000.0), 0.5 * metal + ctx.noise_at(len(metal)) * 2)
    hat /= np.abs(hat).max() + 1e-9
    s["H"] = hat[: int(0.15 * SR)] * _env(int(0.15 * SR), rng.uniform(0.02, 0.05))
    s["O"] = hat[: int(0.6 * SR)] * _env(int(0.6 * SR), rng.uniform(0.15, 0.3))
    ride = sps.sosfilt(_butter("bandpass", (2500.0, 7000.0)), metal + 0.5 * ctx.noise_at(len(metal)))
    s["R"] = 0.5 * ride / (np.abs(ride).max() + 1e-9) * _env(len(ride), rng.uniform(0.4, 0.9))
    s["C"] = hat * _env(len(hat), rng.uniform(0.6, 1.2))
    for name, ft in (("T1", 200.0), ("T2", 150.0), ("T3", 100.0)):
        ft *= rng.uniform(0.85, 1.15)
        n = int(0.4 * SR)
        tt = np.arange(n) / SR
        ph = np.cumsum(ft * (1 + 0.4 * np.exp(-tt / 0.03))) / SR
        s[name] = np.sin(2 * np.pi * ph) * _env(n, 0.18)
    n = int(0.25 * SR)
    brush = sps.sosfilt(_butter("lowpass", 6000.0), ctx.noise_at(n)) * np.minimum(np.arange(n) / (0.02 * SR), 1)
    s["B"] = 0.4 * brush * _env(n, 0.06)
    if style == "country":  # brushes on the snare
        s["S"] = 0.5 * s["S"] + 0.5 * np.r_[s["B"], np.zeros(len(s["S"]) - n)]
    if style in ("darbuka", "bodhran"):
        n = int(0.3 * SR)
        tt = np.arange(n) / SR
        s["D"] = np.sin(2 * np.pi * np.cumsum(rng.uniform(80, 110) * (1 + 0.3 * np.exp(-tt / 0.02))) / SR) * _env(n, 0.15)
        tek = 0.6 * np.sin(2 * np.pi * rng.uniform(500, 800) * tt) * _env(n, 0.03)
        tek += sps.sosfilt(_butter("highpass", 2000.0), ctx.noise_at(n)) * _env(n, 0.02)
        s["T"] = tek
        s["k"] = 0.5 * tek
    return s


def _tabla(ctx: _Ctx) -> np.ndarray:
    """Teentaal theka (16 matras) on tabla: dayan strokes tuned to the tonic, bayan with a rising glide."""
    rng = ctx.rng
    f_sa = float(_hz(ctx.tonic + 12))
    na = _string(ctx, f_sa, 8192, 0.5, 4000.0, pos=0.25, hf=3000.0)
    tin = _string(ctx, f_sa, 8192, 0.25, 2500.0, pos=0.5, hf=2000.0)
    n = int(0.5 * SR)
    tt = np.arange(n) / SR
    ge = np.sin(2 * np.pi * np.cumsum(rng.uniform(85, 110) * (1 + 0.25 * (1 - np.exp(-tt / 0.15)))) / SR) * _env(n, 0.3)
    te = sps.sosfilt(_butter("bandpass", (1500.0, 5000.0)), ctx.noise_at(400)) * _env(400, 0.006)
    strokes = {"dha": (("ge", 1.0), ("na", 0.8)), "dhin": (("ge", 1.0), ("tin", 0.8)), "tin": (("tin", 0.9),),
               "ta": (("na", 0.9),)}
    smp = {"ge": ge, "na": na[:n] / (np.abs(na).max() + 1e-9), "tin": tin[:n] / (np.abs(tin).max() + 1e-9)}
    theka = ["dha", "dhin", "dhin", "dha", "dha", "dhin", "dhin", "dha", "dha", "tin", "tin", "ta", "ta", "dhin",
             "dhin", "dha"]
    y = np.zeros(ctx.n)
    for t, _ in zip(*ctx.grid(1.0, 0.01)):
        k = int(round((t - ctx.t0) / ctx.beat)) % 16
        for name, g in strokes[theka[k]]:
            _place(y, smp[name], t, g * (1.2 if k == 0 else 1.0))
        if ctx.clip.bpm < 110 and rng.random() < 0.5:  # tirakita fillers between the matras
            for j in range(1, 4):
                _place(y, te / (np.abs(te).max() + 1e-9), t + j * ctx.beat / 4, 0.35)
    return y


def _drums(ctx: _Ctx, style: str) -> np.ndarray:
    rng = ctx.rng
    if style == "tabla":
        return _tabla(ctx)
    s = _drum_samples(ctx, style)
    y = np.zeros(ctx.n)
    el = style in ("techno", "dance", "breaks", "glitch")
    jit = 0.0 if el else 0.006
    if style == "glitch":
        for t in np.sort(rng.uniform(0, ctx.dur, int(rng.integers(10, 40)))):
            _place(y, s[str(rng.choice(["K", "S", "H", "P"]))], t, rng.uniform(0.4, 1.0))
        return y
    pats = dict(_PATTERNS[style])
    if style == "pop" and rng.random() < 0.4:
        pats["H"] = "x.x.x.x.x.x.x.x."
    if ctx.meter == 3:
        pats = {"K": "x...........", "S": "....x...x...", "H": "x.x.x.x.x.x."}
    step = ctx.bar / len(next(iter(pats.values())))
    bar = ctx.t0 - ctx.bar
    b = 0
    while bar < ctx.dur:
        fill = style in ("rock", "metal", "pop") and b % 4 == 3 and rng.random() < 0.5
        for voice, pat in pats.items():
            for j, ch in enumerate(pat):
                if ch == ".":
                    continue
                t = bar + j * step
                if fill and t >= bar + ctx.bar - ctx.beat and voice != "K":
                    continue
                g = (1.0 if ch == "x" else 0.45) * (1.1 if j == 0 else 1.0) * rng.uniform(0.85, 1.0)
                _place(y, s[voice], t + (rng.normal(0, jit) if jit else 0.0), g)
        if fill:
            for j in range(4):
                _place(y, s[("T1", "T1", "T2", "T3")[j]], bar + ctx.bar - ctx.beat + j * ctx.beat / 4, 0.9)
        if style in ("rock", "metal", "pop") and (b % 4 == 0 or (style == "metal" and b % 2 == 0)):
            _place(y, s["C"], bar, 0.5)
        bar += ctx.bar
        b += 1
    return y


# --------------------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------------------

_VOWELS = {  # male formants F1-F4 (Hz), after Peterson & Barney
    "a": (730, 1090, 2440, 3400), "e": (530, 1840, 2480, 3500), "i": (270, 2290, 3010, 3500),
    "o": (570, 840, 2410, 3300), "u": (300, 870, 2240, 3300),
}
_BW = (80, 90, 120, 150)


def _glottal(slope: float):
    def amps(fm, lv):
        k = np.arange(1, max(2, int(NYQ_SAFE / fm)) + 1, dtype=float)
        return k ** -(slope + 0.5 * (1 - lv))  # louder = brighter voice
    return amps


def _formant_filter(ctx: _Ctx, x: np.ndarray, bounds, vowels, scale: float, f0s=None, extra=()):
    """Filter ``x`` through vowel formants, one vowel per segment (``bounds`` in samples), carrying the
    filter state across segments so that vowels change without clicks."""
    zi = None
    y = np.zeros_like(x)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            continue
        F = [f * scale for f in _VOWELS[vowels[j]]]
        if f0s is not None:
            F[0] = max(F[0], 1.1 * f0s[j])  # sopranos tune F1 above f0
        sos = _resonators(list(zip(F, _BW)) + list(extra))
        if zi is None:
            zi = np.zeros((len(sos), 2))
        y[a:b], zi = sps.sosfilt(sos, x[a:b], zi=zi)
    return y


def _consonants(ctx: _Ctx, y: np.ndarray, notes, level: float):
    rng = ctx.rng
    s_len = int(0.08 * SR)
    ess = sps.sosfilt(_butter("highpass", 4500.0), ctx.noise_at(s_len)) * np.hanning(s_len)
    tee = ctx.noise_at(160) * _env(160, 0.003)
    ref = np.sqrt(np.mean(y * y)) + 1e-9
    for t, _, _, v in notes:
        r = rng.random()
        if r < 0.25:
            _place(y, ess, t - 0.07, level * 3 * ref * v)
        elif r < 0.5:
            _place(y, tee, t - 0.01, level * 4 * ref * v)


def _voice(ctx: _Ctx, kind: str) -> np.ndarray:
    rng = ctx.rng
    if kind in ("choir", "chant"):
        return _choir(ctx, kind)
    if kind == "duet":
        return 0.8 * _voice(ctx, "male") + 0.8 * _voice(ctx, "female")
    female = kind in ("female", "opera_female")
    opera = kind.startswith("opera")
    lo, hi = {"male": (43, 58), "female": (55, 70), "opera_male": (50, 67), "opera_female": (64, 81),
              "growl": (40, 52), "weird": (45, 80)}[kind]  # sung f0: male ~100-230 Hz, female ~200-470 Hz
    if opera:
        durs, w = (0.5, 1.0, 2.0, 3.0), (0.2, 0.35, 0.3, 0.15)
    else:
        durs, w = _durs(ctx)
    notes = _melody(ctx, lo, hi, durs, w, rest=0.06, phrase=(4, 9), breath=(1.0, 2.5), leap=0.25 if opera else 0.12)
    if not notes:  # a very short clip can fall into a breath
        return np.zeros(ctx.n)
    vib = (rng.uniform(5.5, 6.5), rng.uniform(60, 100), 0.05) if opera else (rng.uniform(4.5, 5.8), rng.uniform(10, 30), 0.35)
    src, env, phase = _sustained(ctx, notes, _glottal(rng.uniform(1.1, 1.4) if opera else rng.uniform(1.2, 1.7)),
                                 attack=0.04, release=0.08, vib_rate=vib[0], vib_depth=vib[1], vib_delay=vib[2],
                                 glide=0.2 if kind == "weird" else 0.035, jitter=6, levels=3, full=True)
    breath = rng.uniform(0.05, 0.2) * (3 if kind == "growl" else 1)  # aspiration noise
    src = src + breath * ctx.noise_at(ctx.n) * env * (_rms(src) / (_rms(env) + 1e-9))
    if kind == "growl":  # period doubling and rough noise: a growled, screamed metal voice
        src = src * (1 + 0.8 * np.sign(np.sin(np.pi * phase)))
    scale = (1.17 if female else 1.0) * rng.uniform(0.95, 1.05) * (rng.choice([0.7, 1.5]) if kind == "weird" else 1)
    on = sorted(int(max(0.0, t) * SR) for t, *_ in notes)
    bounds = sorted(set([0] + [min(a, ctx.n) for a in on] + [ctx.n]))
    vowels = [str(v) for v in rng.choice(list("aeiou"), size=len(bounds), p=[0.3, 0.2, 0.15, 0.2, 0.15] if not opera
                                         else [0.45, 0.15, 0.05, 0.3, 0.05])]
    f0s = [float(_hz(n[2])) for n in sorted(notes)]
    f0s = [f0s[0]] * (len(bounds) - len(f0s)) + f0s
    extra = ((2900, 350),) if opera else ()
    y = _formant_filter(ctx, src, bounds, vowels, scale, f0s if (female or opera) else None, extra)
    if kind == "growl":
        y = np.tanh(3 * y / (np.abs(y).max() + 1e-9))
    _consonants(ctx, y, notes, 0.15)
    return y


def _choir(ctx: _Ctx, kind: str) -> np.ndarray:
    rng = ctx.rng
    if kind == "chant":
        d = (1.0, 2.0, 0.5)
        groups = [([_melody(ctx, 45, 57, d, (0.5, 0.3, 0.2), rest=0.02, leap=0.02, chord_p=0.2)], 1.0, (-8, 6, 13))]
    else:
        b, t_, a, s_ = _lines(ctx, [(43, 57), (50, 64), (57, 69), (62, 79)])
        groups = [([b, t_], 1.0, (9,)), ([a, s_], 1.17, (-10,))]
    y = np.zeros(ctx.n)
    bounds = sorted(set([0] + [min(int(max(0.0, t) * SR), ctx.n) for t in ctx.chord_times()] + [ctx.n]))
    vowels = [str(v) for v in rng.choice(list("aoue"), size=len(bounds), p=[0.4, 0.3, 0.15, 0.15])]
    for lines, scale, det in groups:
        src, env = np.zeros(ctx.n), np.zeros(ctx.n)
        for ln in lines:
            sk, ek, _ = _sustained(ctx, ln, _glottal(rng.uniform(1.3, 1.7)), attack=0.15, release=0.3,
                                   vib_rate=rng.uniform(4.5, 5.5), vib_depth=rng.uniform(10, 25), vib_delay=0.3,
                                   glide=0.06, jitter=8, detunes=det, full=True)
            src += sk
            env += ek
        src = src + 0.1 * ctx.noise_at(ctx.n) * env * (_rms(src) / (_rms(env) + 1e-9))
        y += _formant_filter(ctx, src, bounds, vowels, scale)
    return y


# --------------------------------------------------------------------------------------------------------
# Mix
# --------------------------------------------------------------------------------------------------------

_ROLE_GAIN = {"melody": 0, "lead": 0, "solo": 0, "chords": -4, "strum": -3, "boomchick": -3, "pick": -3, "pad": -5,
              "stacc": -4, "arp": -5, "comp": -7, "alberti": -1, "continuo": -2, "root": -4, "walk": -4, "bass": -4,
              "acid": -3, "stab": -5, "drone": -8, "power": -1, "chug": -1, "roll": -5}
_WET = {"classical": (1.2, 2.5, 0.35), "opera": (1.2, 2.5, 0.35), "choral": (1.8, 3.0, 0.5),
        "ambient": (2.0, 3.0, 0.55), "indian": (0.6, 1.5, 0.2), "weird": (0.3, 2.5, 0.3)}
_LEVEL = {"quiet": (-36, -28), "medium": (-26, -19), "loud": (-16, -11)}


_IR_CACHE: dict = {}


def _ir_spectrum(rt60: float, variant: int, nfft: int) -> np.ndarray:
    """Spectrum of a room impulse response at 8 kHz: a few early reflections and an exponentially decaying
    noise tail. Drawn from a fixed seed per (rt60 step, variant), so it is the same in every process and
    is computed once per process (an FFT of the response per clip would cost as much as the convolution)."""
    key = (rt60, variant, nfft)
    if key not in _IR_CACHE:
        rng = np.random.default_rng([int(rt60 * 100), variant, 7])
        sr2 = SR // 2
        L = int(min(rt60, 1.5) * sr2)
        ir = rng.standard_normal(L) * np.exp(-6.9 * np.arange(L) / (rt60 * sr2))
        ir[: int(0.01 * sr2)] = 0
        for d in rng.uniform(0.005, 0.04, 5):
            ir[int(d * sr2)] += rng.uniform(0.5, 1.5) * 3
        ir /= np.sqrt(np.sum(ir * ir))
        _IR_CACHE[key] = sfft.rfft(ir, nfft).astype(np.complex64)
    return _IR_CACHE[key]


def _reverb(ctx: _Ctx, x: np.ndarray, rt60: float) -> np.ndarray:
    """Room reverb: FFT convolution at 8 kHz (rooms absorb the highs), back to 16 kHz by linear
    interpolation. ``rt60`` is rounded to 0.25 s and one of 8 response variants is drawn."""
    rt60 = max(0.25, round(rt60 * 4) / 4)
    xd = np.float32(0.5) * (x[0:-1:2] + x[1::2]).astype(np.float32)
    nfft = sfft.next_fast_len(len(xd) + int(min(rt60, 1.5) * SR // 2), real=True)
    H = _ir_spectrum(rt60, int(ctx.rng.integers(8)), nfft)
    wet = sfft.irfft(sfft.rfft(xd, nfft) * H, nfft)[: len(xd)]
    up = np.zeros(len(x), dtype=np.float32)
    up[0: 2 * len(wet): 2] = wet
    up[1: 2 * len(wet) - 1: 2] = 0.5 * (wet[:-1] + wet[1:])
    return up


def _soft_limit(y: np.ndarray, thr: float) -> np.ndarray:
    """Identity below ``thr``, then a tanh knee that approaches (never exceeds) 1."""
    over = np.flatnonzero(np.abs(y) > thr)
    if len(over):
        y = y.copy()
        a = np.abs(y[over])
        y[over] = np.sign(y[over]) * (thr + (1 - thr) * np.tanh((a - thr) / (1 - thr)))
    return y


def _rms(x: np.ndarray) -> float:
    """Root mean square, estimated on every 3rd sample (a level, not a measurement)."""
    x = x[::3]
    return float(np.sqrt(np.mean(np.square(x), dtype=np.float64))) if len(x) else 0.0


def render(clip: ClipPlan, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """Synthesize one clip of a plan.

    Parameters
    ----------
    clip : ClipPlan
        One element of ``plan(n_clips, seconds, seed)``.
    seconds : float
        Duration.
    seed : int
        The corpus seed (the clip's generator is derived from ``(seed, clip.index)``).

    Returns
    -------
    y : np.ndarray [shape=(round(seconds * 16000),), dtype=float32]
        The mixed clip at 16 kHz, peaks below 0.9 (soft-limited), before MP3 encoding.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, clip.index)))
    ctx = _Ctx(clip, seconds, rng)
    layers = []
    for inst, role in clip.parts:
        g = _ROLE_GAIN.get(role, -3) + rng.normal(0, 2.5) + (1.5 if clip.lead == inst else 0)
        layers.append((_INSTRUMENTS[inst](ctx, role), g))
    if clip.drums:
        layers.append((_drums(ctx, clip.drums), rng.normal(-1, 2)))
    if clip.voice:
        layers.append((_voice(ctx, clip.voice), rng.normal(1.5, 2)))
    y = np.zeros(ctx.n, dtype=np.float32)
    for x, g in layers:
        r = _rms(x)
        if r > 1e-9:
            y += x * np.float32(10 ** (g / 20) / r)
    rt_lo, rt_hi, send = _WET.get(clip.genre, (0.3, 1.0, 0.15))
    if clip.style == "newage":
        rt_lo, rt_hi, send = 1.5, 3.0, 0.45
    y += np.float32(rng.uniform(0.5, 1.5) * send) * _reverb(ctx, y, rng.uniform(rt_lo, rt_hi))
    # recording colour: a random spectral tilt, a low cut and sometimes an early roll-off
    tilt = rng.uniform(-0.6, 0.4)
    y = np.convolve(y, np.array([1, tilt], dtype=np.float32) / np.float32(1 + abs(tilt)))[: ctx.n]
    if rng.random() < 0.3:
        sos = np.vstack([_butter("highpass", float(round(rng.uniform(25, 60), -1))),
                         _butter("lowpass", float(round(rng.uniform(4500, 7000), -2)))])
        y = sps.sosfilt(sos, y).astype(np.float32)
    y += ctx.noise_at(ctx.n) * np.float32(_rms(y) * 10 ** (rng.uniform(-60, -40) / 20))  # noise floor
    # dynamics: quiet music swells and fades, loud music is compressed
    if clip.loudness != "loud" and rng.random() < 0.6:
        depth = rng.uniform(0.1, 0.5 if clip.loudness == "quiet" else 0.3)
        g = 1 + depth * np.sin(2 * np.pi * np.arange(ctx.m) / CR / rng.uniform(4, 15) + rng.uniform(0, 6))
        y *= np.repeat(g.astype(np.float32), HOP)[: ctx.n]
    lo, hi = _LEVEL[clip.loudness]
    target = 10 ** (rng.uniform(lo, hi) / 20)
    y *= np.float32(target / (_rms(y) + 1e-12))
    if clip.loudness == "loud":
        y = _soft_limit(y * np.float32(1.6), 0.3)
        y *= np.float32(target / (_rms(y) + 1e-12))
    y = np.float32(0.9) * _soft_limit(y * np.float32(1 / 0.9), 0.8)  # MP3 overshoot stays near 1
    return y.astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Corpus writer
# --------------------------------------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary name beside ``path``, then rename: a killed writer leaves no
    half-written file under the real name (and ``generate`` removes stale temporaries when it resumes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


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
        data = encode_mp3(render(clip, seconds, seed))
        _atomic_write(mp3, data)
    elif need_npy:
        data = mp3.read_bytes()
    if need_npy:
        y, _ = sf.read(io.BytesIO(data), dtype="float32")
        buf = io.BytesIO()
        np.save(buf, y)
        _atomic_write(npy, buf.getvalue())
    return clip.index, time.perf_counter() - t


def _params(n_clips, seconds, seed, waveform) -> dict:
    return {"generator": "data.demo", "version": VERSION, "n_clips": n_clips, "seconds": seconds, "seed": seed,
            "waveform": bool(waveform), "sample_rate": SR}


_IDENTITY = ("generator", "version", "n_clips", "seconds", "seed", "waveform", "sample_rate")


def _describe(p: dict) -> str:
    return ", ".join(f"{k}={p.get(k)!r}" for k in ("n_clips", "seconds", "seed", "waveform", "version"))


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
    _atomic_write(csv_path, buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = ["clip_id", "mp3_path", "track", "genre", "style", "key", "mode", "bpm", "meter", "tempo", "loudness",
              "parts", "lead", "drums", "voice", "solo"]
    w.writerow(fields)
    for c in clips:
        d = asdict(c)
        d["parts"] = "|".join(f"{i}:{r}" for i, r in c.parts)
        w.writerow(["" if d[k] is None else d[k] for k in fields])
    _atomic_write(root / LATENT, buf.getvalue().encode())
    return csv_path


def generate(root: str | os.PathLike, n_clips: int = 1600, seconds: float = 10.0, seed: int = 0,
             waveform: bool = False, workers: int | None = None, progress: bool = True) -> Path:
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
        Duration of every clip.
    seed : int >= 0
        Corpus seed.
    waveform : bool
        Also write ``ROOT/waveform/<f>/<name>.npy``: the *decoded MP3* as float32 at 16 kHz (what the
        project reads from the MP3 layout, as in MTAT's pre-decoded release), not the pre-encoding signal.
    workers : int or None
        Worker processes (default ``os.cpu_count()``); 1 renders in this process.
    progress : bool
        Show a tqdm progress bar with the rate in clips per second.

    Returns
    -------
    pathlib.Path
        ``ROOT/annotations_final.csv``.

    Raises
    ------
    ValueError
        For a bad ``n_clips``, ``seconds``, ``seed`` or ``workers`` (the message names it).
    FileExistsError
        When ``root`` holds something else: a demo corpus with other parameters, or files that are not a
        demo corpus. Pick another folder or delete that one.
    """
    n_clips, seconds, seed = _check_args(n_clips, seconds, seed)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    root = Path(root)
    params = _params(n_clips, seconds, seed, waveform)
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
    _atomic_write(pending, json.dumps(params, indent=1).encode())
    if upgrade:
        marker.unlink()  # after the pending marker: an interrupted upgrade resumes like any other run
    clips = plan(n_clips, seconds, seed)
    for sub in ("mp3", "waveform") if waveform else ("mp3",):
        for f in FOLDERS:
            (root / sub / f).mkdir(parents=True, exist_ok=True)
            for tmp in (root / sub / f).glob(".*.tmp"):
                if not _writer_alive(tmp):  # left by a killed run (not by a concurrent one)
                    tmp.unlink(missing_ok=True)
    tasks = [(c, seconds, seed, str(root), bool(waveform)) for c in clips]
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
    _atomic_write(marker, json.dumps(done, indent=1).encode())  # last: marks the corpus complete
    pending.unlink(missing_ok=True)
    return csv_path


def ensure_demo(root: str | os.PathLike = "cache/demo", **kw) -> Path:
    """Generate the demo corpus at ``root`` unless it is already there; return ``root``.

    This is what the pipeline uses when no ``--data`` is given. Keyword arguments go to ``generate``.
    """
    generate(root, **kw)
    return Path(root)


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
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default: %(default)s)")
    ap.add_argument("--waveform", action="store_true",
                    help="also write waveform/<f>/*.npy (the decoded MP3 as float32 at 16 kHz)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        generate(a.out, n_clips=a.clips, seconds=a.seconds, seed=a.seed, waveform=a.waveform, workers=a.workers,
                 progress=not a.quiet)
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
