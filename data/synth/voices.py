"""Singers: formant synthesis of solo voices (male, female, opera, growl), choirs and chant."""
from __future__ import annotations

import numpy as np
import scipy.signal as sps

from data.synth.notes import _durs, _lines, _melody
from data.synth.primitives import NYQ_SAFE, SR, _butter, _Ctx, _env, _hz, _place, _resonators, _rms, _sustained


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
