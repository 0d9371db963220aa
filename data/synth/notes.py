"""Note lists ``(t, dur, midi, vel)`` on the clip's grid and harmony: melodies, chord lines, strums, arpeggios."""
from __future__ import annotations

import numpy as np

from data.synth.primitives import _Ctx


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
