"""Batched spectral front-end on nnAudio: log-mel, MFCC and chroma from one STFT.

Each feature follows librosa's definition so that numbers can be checked against it:

========  ====================================================================================
mel       ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr, n_fft, hop_length,
          n_mels, fmin, fmax), top_db=top_db)`` (Slaney mel scale and area normalisation)
mfcc      ``librosa.feature.mfcc(S=<mel above>, n_mfcc)`` (DCT-II, orthonormal)
chroma    ``librosa.feature.chroma_stft(S=|STFT|**2, sr, n_fft, tuning=0.0, n_chroma)``
          (A440 tuning: no per-clip tuning estimate, so every clip shares one filter bank)
========  ====================================================================================

The STFT is nnAudio's convolutional STFT (Hann window, ``center=True`` with zero padding, as
``librosa.stft``), so it runs batched on the GPU when there is one and on the CPU otherwise.
Outputs are time-major, ``(batch, frames, bins)``, the layout the features file stores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import librosa
import numpy as np
import scipy.fft
import torch
from nnAudio.features import STFT
from torch import nn

from data.audio import SR

#: Features the front-end computes, in the order they are concatenated for models.
FEATURES = ("mel", "mfcc", "chroma")


@dataclass(frozen=True)
class FeatureParams:
    """Every parameter that determines the stored features (the course's defaults).

    One value of this class travels from the command line to the features file, the feed, the
    run folder (``config.json``) and the tag command.

    Attributes
    ----------
    sr : int
        Sample rate of the audio, Hz (always ``data.audio.SR``: every clip is resampled to it).
    n_fft : int
        STFT frame and window length, samples.
    hop_length : int
        Hop between frames, samples.
    n_mels : int
        Mel bands (Slaney scale and normalisation).
    f_min, f_max : float
        Lowest and highest mel band edge, Hz.
    n_mfcc : int
        MFCC coefficients (DCT-II of the log-mel).
    n_chroma : int
        Chroma bins per octave.
    top_db : float
        Log-mel floor, dB below each clip's peak.
    """

    sr: int = SR
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    f_min: float = 0.0
    f_max: float = 8000.0
    n_mfcc: int = 20
    n_chroma: int = 12
    top_db: float = 80.0

    def __post_init__(self):
        if self.n_fft <= 0 or self.hop_length <= 0 or self.sr <= 0:
            raise ValueError("sr, n_fft and hop_length must be positive")
        if not 0 <= self.f_min < self.f_max <= self.sr / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sr/2, got f_min={self.f_min}, f_max={self.f_max}")
        if not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}")

    def n_frames(self, n_samples: int) -> int:
        """Number of STFT frames of a signal of ``n_samples`` (``center=True``)."""
        return 1 + n_samples // self.hop_length

    def frames(self, seconds: float) -> int:
        """Frames spanning ``seconds`` of audio (a crop length): ``round(seconds * sr / hop_length)``."""
        return int(round(seconds * self.sr / self.hop_length))

    def bins(self, feature: str) -> int:
        """Number of bins (rows) of one feature."""
        return {"mel": self.n_mels, "mfcc": self.n_mfcc, "chroma": self.n_chroma}[feature]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "FeatureParams":
        """Parameters from a mapping such as HDF5 attributes (extra keys are ignored)."""
        # Field types are strings under `from __future__ import annotations`.
        cast = {"int": int, "float": float}
        return cls(**{f.name: cast[f.type](d[f.name]) for f in fields(cls) if f.name in d})


def pick_device(name: str = "auto") -> torch.device:
    """``'auto'``: CUDA when available, else the CPU; ``'cpu'`` and ``'cuda'`` as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def parse_features(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalise a feature list such as ``'mel,mfcc'`` to the canonical order of ``FEATURES``.

    Raises
    ------
    ValueError
        On an empty list or an unknown feature name.
    """
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    if not names:
        raise ValueError(f"no feature given; choose from {', '.join(FEATURES)}")
    return tuple(f for f in FEATURES if f in names)


class FrontEnd(nn.Module):
    """Waveforms to features, batched, with one STFT shared by all requested features.

    Parameters
    ----------
    features : sequence of str
        Any of ``'mel'``, ``'mfcc'``, ``'chroma'``.
    params : FeatureParams

    Examples
    --------
    >>> fe = FrontEnd(("mel", "mfcc"))
    >>> out = fe(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
    >>> out["mel"].shape, out["n_frames"].tolist()
    (torch.Size([2, 63, 96]), [63, 32])
    """

    def __init__(self, features=("mel",), params: FeatureParams = FeatureParams()):
        super().__init__()
        self.features = parse_features(features)
        self.params = p = params
        self.stft = STFT(n_fft=p.n_fft, hop_length=p.hop_length, window="hann", freq_scale="no",
                         center=True, pad_mode="constant", sr=p.sr, output_format="Complex", verbose=False)
        mel_fb = librosa.filters.mel(sr=p.sr, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.f_min, fmax=p.f_max)
        chroma_fb = librosa.filters.chroma(sr=p.sr, n_fft=p.n_fft, tuning=0.0, n_chroma=p.n_chroma)
        dct = scipy.fft.dct(np.eye(p.n_mels), type=2, norm="ortho", axis=0)[: p.n_mfcc]
        # Filter banks multiply frequency-major (B, F, T) spectra on the left.
        self.register_buffer("mel_fb", torch.from_numpy(mel_fb.astype(np.float32)))
        self.register_buffer("chroma_fb", torch.from_numpy(chroma_fb.astype(np.float32)))
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)))

    @torch.no_grad()
    def forward(self, y: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Compute the features of a batch of zero-padded waveforms.

        Parameters
        ----------
        y : torch.Tensor [shape=(batch, n)]
            Waveforms at ``params.sr``, zero-padded at the end to a common length.
        lengths : torch.Tensor [shape=(batch,)] or None
            True length of each waveform in samples; ``None`` means all are ``n`` long.

        Returns
        -------
        dict
            ``{feature: (batch, frames, bins) float32}`` for each requested feature, plus
            ``'n_frames'`` (batch,), the number of valid frames of each clip. Frames past a clip's
            valid count are set to 0.
        """
        p = self.params
        if y.ndim != 2:
            raise ValueError(f"expected waveforms of shape (batch, n), got {tuple(y.shape)}")
        if lengths is None:
            lengths = torch.full((y.shape[0],), y.shape[1], dtype=torch.long)
        n_frames = (1 + lengths.to(y.device) // p.hop_length).clamp(max=p.n_frames(y.shape[1]))
        # Work frequency-major, as nnAudio returns it; only the small outputs are transposed.
        power = self.stft(y.float(), output_format="Magnitude") ** 2  # (B, F, T)
        frames = power.shape[2]
        # (B, 1, T) 0/1 mask of valid frames; None when no clip of the batch is padded.
        valid = None if bool((n_frames == frames).all()) else \
            (torch.arange(frames, device=y.device)[None, :] < n_frames[:, None]).to(power.dtype)[:, None, :]
        out = {"n_frames": n_frames}
        if "mel" in self.features or "mfcc" in self.features:
            mel_db = self._power_to_db(self.mel_fb @ power, valid)  # (B, n_mels, T)
            if "mel" in self.features:
                out["mel"] = mel_db.transpose(1, 2)
            if "mfcc" in self.features:
                mfcc = self.dct @ mel_db
                out["mfcc"] = (mfcc if valid is None else mfcc * valid).transpose(1, 2)
        if "chroma" in self.features:
            raw = self.chroma_fb @ power
            peak = raw.amax(dim=1, keepdim=True)
            # librosa.util.normalize leaves frames below the smallest normal float untouched.
            peak = torch.where(peak < torch.finfo(raw.dtype).tiny, torch.ones_like(peak), peak)
            chroma = raw / peak
            out["chroma"] = (chroma if valid is None else chroma * valid).transpose(1, 2)
        return out

    def _power_to_db(self, s: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        # librosa.power_to_db (ref=1.0, amin=1e-10, top_db) with the top_db floor applied as one
        # clamp in the power domain: max(dB, peak_dB - top_db) = dB(max(S, peak * 10**(-top_db/10))).
        # The peak is the clip's own over its valid frames, so batch padding never changes a clip.
        floor = torch.full_like(s[:, :1, :1], 1e-10)
        if self.params.top_db is not None:
            peak = (s if valid is None else s * valid).amax(dim=(1, 2), keepdim=True)
            floor = torch.maximum(floor, peak * 10.0 ** (-self.params.top_db / 10.0))
        db = 10.0 * torch.log10(torch.maximum(s, floor))
        return db if valid is None else db * valid

    def n_bins(self) -> int:
        """Total bins of the requested features, concatenated in ``FEATURES`` order."""
        return sum(self.params.bins(f) for f in self.features)
