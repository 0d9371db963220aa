"""The mix: every part of a clip at its level, room reverb, colouring EQ, noise floor, dynamics, limiting."""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import scipy.signal as sps

from data.synth.drums import _drums
from data.synth.instruments import _INSTRUMENTS
from data.synth.plan import ClipPlan
from data.synth.primitives import CR, HOP, SR, _butter, _Ctx, _rms
from data.synth.voices import _voice


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
