"""Bowed strings, winds, organ, synths and experimental textures, and ``_INSTRUMENTS``: instrument name ->
``f(ctx, role)``, one mono layer of ``ctx.n`` samples (the plucked ones are in ``plucked``)."""
from __future__ import annotations

import numpy as np
import scipy.signal as sps

from data.synth.notes import _arp_notes, _durs, _lines, _melody
from data.synth.plucked import (_acoustic_guitar, _banjo, _bass, _distorted_guitar, _electric_guitar, _harp,
                                _harpsichord, _oud, _piano, _sitar, _tanpura)
from data.synth.primitives import (HOP, NYQ_SAFE, SR, TS, _butter, _Ctx, _echo, _hz, _place, _rms, _saw_amps,
                                   _sos_peaks, _string, _sustained, _table)


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
