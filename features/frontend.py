"""Batched spectral front-end on nnAudio: log-mel, MFCC and chroma from one STFT.

Each feature follows librosa's definition so that numbers can be checked against it:

========  ====================================================================================
mel       ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr, n_fft, hop_length,
          n_mels, fmin, fmax), top_db=top_db)`` (Slaney mel scale and area normalisation)
mfcc      ``librosa.feature.mfcc(S=<mel above>, n_mfcc)`` (DCT-II, orthonormal)
chroma    ``librosa.feature.chroma_stft(S=|STFT|**2, sr, n_fft, tuning=0.0, n_chroma)``
          (A440 tuning: no per-clip tuning estimate, so every clip shares one filter bank)
========  ====================================================================================

The STFT (periodic Hann window, ``center=True`` with zero padding, as ``librosa.stft``) has two
back-ends, chosen by ``FeatureParams.stft``: ``'fft'``, PyTorch's ``torch.stft``, and
``'nnaudio'``, nnAudio's convolutional STFT (batched on the GPU: the design's). Everything after
the power spectrum is shared. Outputs are time-major, ``(batch, frames, bins)``, the layout the
features file stores.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import torch
from torch import nn

from features import filters
from features.device import pick_device  # noqa: F401  (re-exported)
from features.params import FEATURES, STFTS, FeatureParams, parse_features  # noqa: F401  (re-exported)


class FrontEnd(nn.Module):
    """Waveforms to features, batched, with one STFT shared by all requested features.

    Parameters
    ----------
    features : sequence of str
        Any of ``'mel'``, ``'mfcc'``, ``'chroma'``, ``'musicnn'`` (the taggram of musicnn's MTT
        network over the log-mel, :mod:`features.taggram`; needs the ``musicnn`` package).
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
        if p.stft == "nnaudio":
            from nnAudio.features import STFT  # here: it loads scipy.signal, almost a second, for this path only

            self.stft = STFT(n_fft=p.n_fft, hop_length=p.hop_length, window="hann", freq_scale="no",
                             center=True, pad_mode="constant", sr=p.sr, output_format="Complex", verbose=False)
        else:  # librosa's window: scipy's periodic ('fftbins') Hann
            self.register_buffer("window", torch.hann_window(p.n_fft, periodic=True))
        mel_fb = filters.mel(p.sr, p.n_fft, p.n_mels, p.f_min, p.f_max)
        chroma_fb = filters.chroma(p.sr, p.n_fft, p.n_chroma)
        dct = scipy.fft.dct(np.eye(p.n_mels), type=2, norm="ortho", axis=0)[: p.n_mfcc]
        # Filter banks multiply frequency-major (B, F, T) spectra on the left.
        self.register_buffer("mel_fb", torch.from_numpy(mel_fb.astype(np.float32)))
        self.register_buffer("chroma_fb", torch.from_numpy(chroma_fb.astype(np.float32)))
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)))
        self.musicnn = None
        if "musicnn" in self.features:
            from features.taggram import load_network

            if p.n_mels != 96:
                raise ValueError(f"the musicnn feature needs musicnn's 96 mel bands, got n_mels={p.n_mels}")
            self.musicnn = load_network("MTT_musicnn", p.n_mels)  # a submodule: it moves with .to(device)

    @torch.no_grad()
    def forward(self, y: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Compute the features of a batch of zero-padded waveforms.

        Parameters
        ----------
        y : torch.Tensor or np.ndarray [shape=(batch, n)]
            Waveforms at ``params.sr``, zero-padded at the end to a common length.
        lengths : torch.Tensor, array-like [shape=(batch,)] or None
            True length of each waveform in samples (best on the CPU: then a GPU batch never waits
            for the host); ``None`` means all are ``n`` long.

        Returns
        -------
        dict
            ``{feature: (batch, frames, bins) float32}`` for each requested feature, plus
            ``'n_frames'`` (batch,), the number of valid frames of each clip. Frames past a clip's
            valid count are set to 0.
        """
        p = self.params
        y = torch.as_tensor(y)  # numpy arrays and lists too, as in a notebook
        if y.ndim != 2:
            raise ValueError(f"expected waveforms of shape (batch, n), got {tuple(y.shape)}")
        frames = p.n_frames(y.shape[1])
        lengths = torch.full((y.shape[0],), y.shape[1], dtype=torch.long) if lengths is None else \
            torch.as_tensor(lengths)
        # The padding test on the host: lengths come from there, so a GPU batch waits for nothing.
        n_frames = (1 + lengths.cpu() // p.hop_length).clamp(max=frames)
        padded = not bool((n_frames == frames).all())
        n_frames = n_frames.to(y.device, non_blocking=True)
        # Work frequency-major, as nnAudio returns it; only the small outputs are transposed.
        power = self._power(y.float())  # (B, F, T)
        # (B, 1, T) 0/1 mask of valid frames; None when no clip of the batch is padded.
        valid = None if not padded else \
            (torch.arange(frames, device=y.device)[None, :] < n_frames[:, None]).to(power.dtype)[:, None, :]
        out = {"n_frames": n_frames}
        if {"mel", "mfcc", "musicnn"} & set(self.features):
            mel_db = self._power_to_db(self.mel_fb @ power, valid)  # (B, n_mels, T)
            if "mel" in self.features:
                out["mel"] = mel_db.transpose(1, 2)
            if "mfcc" in self.features:
                mfcc = self.dct @ mel_db
                out["mfcc"] = (mfcc if valid is None else mfcc * valid).transpose(1, 2)
        if self.musicnn is not None:
            from features.taggram import taggram_frames

            out["musicnn"] = taggram_frames(self.musicnn, mel_db, n_frames.tolist())
        if "chroma" in self.features:
            raw = self.chroma_fb @ power
            peak = raw.amax(dim=1, keepdim=True)
            # librosa.util.normalize leaves frames below the smallest normal float untouched.
            peak = torch.where(peak < torch.finfo(raw.dtype).tiny, torch.ones_like(peak), peak)
            chroma = raw / peak
            out["chroma"] = (chroma if valid is None else chroma * valid).transpose(1, 2)
        return out

    def _power(self, y: torch.Tensor) -> torch.Tensor:
        """``|STFT(y)|**2``, frequency-major ``(B, 1 + n_fft // 2, frames)``."""
        p = self.params
        if p.stft == "nnaudio":
            return self.stft(y, output_format="Magnitude") ** 2
        spec = torch.stft(y, p.n_fft, hop_length=p.hop_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        return spec.real.square() + spec.imag.square()

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
