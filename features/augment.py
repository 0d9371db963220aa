"""Data augmentation with digital audio effects, rendered offline with Spotify's pedalboard.

Each augmented version of a clip is a chain of effects whose parameters are drawn from a seed:

=============== ========================================================== =================
effect          what it does                                               drawn from
=============== ========================================================== =================
pitch_shift     transpose, keeping the tempo (Rubber Band via pedalboard)  +-2 semitones
time_stretch    change the tempo, keeping the pitch (changes the length)   rate 0.85-1.15
gain            louder or softer                                           -9 .. +6 dB
eq              one peaking band, plus a high-pass or a low-pass           +-9 dB at 100-6000 Hz
reverb          a room                                                     size 0.1-0.7, wet 0.05-0.35
compressor      dynamic range compression                                  -30 .. -10 dB, ratio 2-8
noise           white noise at a signal-to-noise ratio                     15-40 dB SNR
mp3             a lossy re-encode with LAME                                VBR quality 2-9
=============== ========================================================== =================

Every effect is in a chain with probability ``p`` (default 0.5), in the order above, and a chain
has at least one. Why pedalboard rather than audiomentations: one well-kept C++ library (JUCE,
Rubber Band, LAME) covers every effect here, including the lossy re-encode, at many times real
time, while audiomentations calls out to separate packages per effect (pydub/lameenc for MP3,
pyroomacoustics for rooms) and runs most of them in numpy.

The parameters of a version are plain JSON (``draw`` returns them, the features file records
them), and ``apply`` is a pure function of the audio and them: the same seed gives the same audio.
"""
from __future__ import annotations

import numpy as np

__all__ = ["EFFECTS", "draw", "apply", "max_length_factor"]

EFFECTS = ("pitch_shift", "time_stretch", "gain", "eq", "reverb", "compressor", "noise", "mp3")
_RATE = (0.85, 1.15)


def max_length_factor() -> float:
    """Largest ratio of an augmented version's length to the clip's (the slowest stretch)."""
    return 1.0 / _RATE[0]


def draw(rng: np.random.Generator, p: float = 0.5) -> dict:
    """Draw one effect chain.

    Parameters
    ----------
    rng : np.random.Generator
    p : float
        Probability of each effect being in the chain.

    Returns
    -------
    dict
        ``{effect: {parameter: value}}`` in the order of ``EFFECTS``; never empty.
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    on = rng.random(len(EFFECTS)) < p
    if not on.any():
        on[rng.integers(len(EFFECTS))] = True
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    params = {
        "pitch_shift": {"semitones": u(-2, 2)},
        "time_stretch": {"rate": u(*_RATE)},
        "gain": {"db": u(-9, 6)},
        "eq": {"freq_hz": float(np.exp(rng.uniform(np.log(100), np.log(6000)))), "gain_db": u(-9, 9), "q": u(0.5, 2),
               "pass": str(rng.choice(["highpass", "lowpass"])),
               "cutoff_hz": u(40, 300) if rng.random() < 0.5 else u(3000, 7000)},
        "reverb": {"room_size": u(0.1, 0.7), "wet": u(0.05, 0.35), "damping": u(0.2, 0.8)},
        "compressor": {"threshold_db": u(-30, -10), "ratio": u(2, 8), "attack_ms": u(1, 30),
                       "release_ms": u(50, 300)},
        "noise": {"snr_db": u(15, 40), "seed": int(rng.integers(2**31))},
        "mp3": {"vbr_quality": u(2, 9)},
    }
    chain = {e: params[e] for e, keep in zip(EFFECTS, on) if keep}
    if "eq" in chain:  # a high-pass above 300 Hz or a low-pass below 3 kHz would gut the clip
        eq = chain["eq"]
        eq["cutoff_hz"] = min(eq["cutoff_hz"], 300.0) if eq["pass"] == "highpass" else max(eq["cutoff_hz"], 3000.0)
    return chain


def apply(y: np.ndarray, sr: int, chain: dict) -> np.ndarray:
    """Render one effect chain on a mono waveform.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio (any float dtype).
    sr : int
        Sample rate, Hz (the MP3 re-encode needs one of LAME's rates; 16 kHz is one).
    chain : dict
        From :func:`draw` (or read back from a features file).

    Returns
    -------
    np.ndarray [shape=(m,), dtype=float32]
        ``m == n`` unless the chain has ``time_stretch`` (``m ~ n / rate``).

    Raises
    ------
    ValueError
        For an unknown effect.
    """
    import pedalboard as pb

    unknown = set(chain) - set(EFFECTS)
    if unknown:
        raise ValueError(f"unknown effect(s) {', '.join(sorted(unknown))}; known: {', '.join(EFFECTS)}")
    x = np.ascontiguousarray(y, dtype=np.float32)
    if "pitch_shift" in chain or "time_stretch" in chain:
        x = pb.time_stretch(x, sr, stretch_factor=chain.get("time_stretch", {}).get("rate", 1.0),
                            pitch_shift_in_semitones=chain.get("pitch_shift", {}).get("semitones", 0.0))[0]
    board = pb.Pedalboard()
    if "gain" in chain:
        board.append(pb.Gain(gain_db=chain["gain"]["db"]))
    if "eq" in chain:
        e = chain["eq"]
        board.append(pb.PeakFilter(cutoff_frequency_hz=e["freq_hz"], gain_db=e["gain_db"], q=e["q"]))
        board.append((pb.HighpassFilter if e["pass"] == "highpass" else pb.LowpassFilter)(e["cutoff_hz"]))
    if "reverb" in chain:
        r = chain["reverb"]
        board.append(pb.Reverb(room_size=r["room_size"], wet_level=r["wet"], dry_level=1 - r["wet"],
                               damping=r["damping"]))
    if "compressor" in chain:
        c = chain["compressor"]
        board.append(pb.Compressor(threshold_db=c["threshold_db"], ratio=c["ratio"], attack_ms=c["attack_ms"],
                                   release_ms=c["release_ms"]))
    if len(board):
        x = board(x, sr)
    if "noise" in chain:
        power = float(np.mean(x.astype(np.float64) ** 2))
        if power > 0:
            noise = np.random.default_rng(chain["noise"]["seed"]).standard_normal(len(x))
            x = x + (noise * np.sqrt(power / 10 ** (chain["noise"]["snr_db"] / 10))).astype(np.float32)
    if "mp3" in chain:
        n = len(x)
        x = pb.MP3Compressor(vbr_quality=chain["mp3"]["vbr_quality"])(x, sr)
        x = x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))  # the encoder's delay, trimmed to length
    return np.ascontiguousarray(x, dtype=np.float32)
