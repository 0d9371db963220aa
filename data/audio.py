"""Audio decoding: any file in, 16 kHz mono float32 out."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: Sample rate of MTAT clips and of every feature in the project.
SR = 16000


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and says what is wrong."""


def load_audio(path: str | os.PathLike, sr: int = SR, npy_sr: int = SR) -> np.ndarray:
    """Decode an audio file to a mono float32 waveform at ``sr``.

    MP3, WAV, FLAC, OGG (anything libsndfile reads) at any sample rate and channel count are
    down-mixed by averaging the channels and resampled with soxr (high quality), as
    ``librosa.load(path, sr=sr)`` does. ``.npy`` files hold pre-decoded waveforms at ``npy_sr``.
    Samples are not clipped: decoded peaks above 1.0 are kept.

    Parameters
    ----------
    path : path
        Audio file (``.npy`` for a pre-decoded waveform).
    sr : int
        Output sample rate.
    npy_sr : int
        Sample rate of ``.npy`` waveforms (MTAT's pre-decoded release is 16 kHz). Integer
        ``.npy`` samples are PCM, scaled to [-1, 1) as libsndfile decodes a WAV of them
        (signed divided by 2^(bits-1); unsigned offset binary, 8-bit WAV's).

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    AudioError
        If the file is missing, empty, not decodable, holds no samples or non-finite values.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() == ".npy":
        y, src_sr = _load_npy(path), npy_sr
    else:
        try:
            y, src_sr = sf.read(path, dtype="float32", always_2d=True)
        except UnicodeEncodeError:  # libsndfile takes UTF-8 names; Python holds other bytes as surrogates
            raise AudioError(f"{os.fsencode(path).decode('utf-8', 'replace')}: its name is not UTF-8, which the "
                             "decoder needs; rename the file") from None
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            why = str(exc)
            if "possibly a pipe" in why:  # libsndfile's words for a file it knows no format of: the file is there
                why = "no audio format recognised: damaged, truncated, or not audio"
            raise AudioError(f"{path}: not an audio file the decoder can read ({why})") from exc
        y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if y.size == 0:
        raise AudioError(f"{path}: decodes to no samples (truncated or not audio)")
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: holds NaN or infinite samples")
    if src_sr != sr:
        n = int(np.ceil(len(y) * sr / src_sr))  # librosa.resample's length: soxr may give one sample less
        y = soxr.resample(y, src_sr, sr, quality="HQ")
        y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    return np.ascontiguousarray(y, dtype=np.float32)


def _load_npy(path: Path) -> np.ndarray:
    try:
        y = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AudioError(f"{path}: not a readable .npy waveform ({exc})") from exc
    if y.dtype.kind not in "fiu":
        raise AudioError(f"{path}: .npy waveform has non-numeric dtype {y.dtype}")
    if y.dtype.kind in "iu":  # PCM integers to [-1, 1) as libsndfile decodes them (unsigned: offset binary)
        full = 2.0 ** (8 * y.dtype.itemsize - 1)
        y = (y.astype(np.float64) - (full if y.dtype.kind == "u" else 0.0)) / full
    if y.ndim == 2:  # (channels, n) or (n, channels): average the shorter axis away
        y = y.mean(axis=0 if y.shape[0] < y.shape[1] else 1)
    elif y.ndim != 1:
        raise AudioError(f"{path}: .npy waveform must be 1-D or 2-D, got shape {y.shape}")
    return y.astype(np.float32, copy=False)
