"""Synthesis primitives: wavetable oscillators, frequency-domain strings, filters, and the clip context."""
from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import scipy.signal as sps

from data.synth.plan import ClipPlan
from data.synth.tracks import _MINORISH, _SCALES

#: Sample rate of the corpus (MTAT's).
SR = 16000


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


def _rms(x: np.ndarray) -> float:
    """Root mean square, estimated on every 3rd sample (a level, not a measurement)."""
    x = x[::3]
    return float(np.sqrt(np.mean(np.square(x), dtype=np.float64))) if len(x) else 0.0


def _env(n: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * SR))


def _echo(ctx: _Ctx, y: np.ndarray, beats: float = 0.75, fb: float = 0.35, taps: int = 3) -> np.ndarray:
    d = int(beats * ctx.beat * SR)
    out = y.copy()
    for k in range(1, taps + 1):
        if k * d >= len(y):
            break
        out[k * d:] += fb ** k * y[: len(y) - k * d]
    return out
