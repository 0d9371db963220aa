"""Drum kits and patterns per style, and the tabla."""
from __future__ import annotations

import numpy as np
import scipy.signal as sps

from data.synth.primitives import SR, _butter, _Ctx, _env, _hz, _place, _string


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
