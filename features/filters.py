"""Mel and chroma filter banks, as librosa defines them, in plain numpy.

``librosa.filters`` is the reference (``tests/test_features.py`` checks equality), but importing
it pulls in scipy.signal and numba: some 2.7 s of every extraction's start-up for two small
matrices. These follow librosa's documented definitions:

* mel: ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)``: Slaney's mel scale (linear below
  1 kHz, logarithmic above), triangles between adjacent mel points, area-normalised (``norm='slaney'``);
* chroma: ``librosa.filters.chroma(sr, n_fft, n_chroma, tuning=0)``: Gaussian bumps around each
  pitch class on a log-frequency axis, columns L2-normalised, weighted by a Gaussian over octaves
  centred on octave 5 (width 2), starting at C.
"""
from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Slaney: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    """Slaney mel of frequencies in Hz."""
    hz = np.asanyarray(hz, dtype=np.float64)
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, hz / _F_SP)


def mel_to_hz(mel):
    """Frequencies in Hz of Slaney mels."""
    mel = np.asanyarray(mel, dtype=np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


def mel(sr: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Mel filter bank, ``(n_mels, 1 + n_fft // 2)`` float32, equal to ``librosa.filters.mel``'s default."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    width = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    weights = np.zeros((n_mels, len(fft_hz)), np.float32)
    for i in range(n_mels):
        rising, falling = -ramps[i] / width[i], ramps[i + 2] / width[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_hz[2:n_mels + 2] - mel_hz[:n_mels]))[:, None]  # equal area per band
    return weights


def chroma(sr: int, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """Chroma filter bank, ``(n_chroma, 1 + n_fft // 2)`` float32, equal to ``librosa.filters.chroma``
    with ``tuning=0`` (A440) and its other defaults."""
    hz = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    bins = n_chroma * np.log2(hz / (440.0 / 16))  # pitch in chroma bins above A0 - 4 octaves
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))  # the 0-Hz bin: 1.5 octaves below bin 1
    width = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1]))
    half = np.round(n_chroma / 2)
    dist = np.remainder(np.subtract.outer(bins, np.arange(n_chroma, dtype="d")).T + half + 10 * n_chroma,
                        n_chroma) - half
    w = np.exp(-0.5 * (2 * dist / width[None, :]) ** 2)
    w /= np.sqrt((w ** 2).sum(axis=0, keepdims=True))
    w *= np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2.0) ** 2)[None, :]
    w = np.roll(w, -3 * (n_chroma // 12), axis=0)  # start at C
    return np.ascontiguousarray(w[:, : 1 + n_fft // 2], dtype=np.float32)
