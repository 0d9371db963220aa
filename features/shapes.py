"""The input checks every network of ``train.models`` and ``features.musicnn`` shares.

A network takes standardised features ``x`` of shape ``(B, F, T)``: ``F`` feature rows (the
first ``n_mels`` of them mel bands), ``T`` frames. A wrong feature set (mel only where the
network was built for mel + MFCC + chroma) or too short a crop would otherwise fail deep inside
a convolution with a message that names no feature; these checks name it.
"""
from __future__ import annotations

__all__ = ["check_bins", "check_input"]


def check_bins(n_bins: int, n_mels: int) -> None:
    """Raise ``ValueError`` unless ``1 <= n_mels <= n_bins``.

    Parameters
    ----------
    n_bins : int
        Feature rows ``F`` the network is built for.
    n_mels : int
        Mel rows at the top of the input.
    """
    if n_mels < 1 or n_bins < n_mels:
        raise ValueError(f"need 1 <= n_mels <= n_bins, got n_mels={n_mels}, n_bins={n_bins}")


def check_input(model, x) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, model.n_bins, T)`` with ``T >= model.min_frames``.

    Parameters
    ----------
    model : torch.nn.Module
        A network with attributes ``n_bins`` and ``min_frames``.
    x : torch.Tensor
        Its input.
    """
    if x.dim() != 3 or x.shape[1] != model.n_bins:
        raise ValueError(f"{type(model).__name__} expects x of shape (B, {model.n_bins}, T), got {tuple(x.shape)}")
    if x.shape[2] < model.min_frames:
        raise ValueError(f"{type(model).__name__} needs at least {model.min_frames} frames, got T={x.shape[2]}")
