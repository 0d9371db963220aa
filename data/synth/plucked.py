"""Plucked and struck instruments (guitars, bass, keyboards, harp, sitar, banjo, oud), each one mono layer."""
from __future__ import annotations

import numpy as np
import scipy.signal as sps

from data.synth.notes import _arp_notes, _durs, _melody, _strum_notes
from data.synth.primitives import CR, HOP, SR, _butter, _Ctx, _echo, _pluck_notes, _sos_peaks


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
