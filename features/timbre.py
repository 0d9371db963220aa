"""Clip-level timbre statistics from a stored MFCC, for the ``timbre`` sampler of metric learning."""
from __future__ import annotations

import numpy as np


def timbre_statistics(mfcc: np.ndarray) -> np.ndarray:
    """A clip's timbre statistics: the mean and standard deviation of each MFCC coefficient.

    Parameters
    ----------
    mfcc : np.ndarray [shape=(frames, n_mfcc)]
        Time-major, as the features file stores ``/mfcc``.

    Returns
    -------
    np.ndarray [shape=(2 * n_mfcc,)]
        float32, means then standard deviations.
    """
    x = np.asarray(mfcc, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"mfcc must be one clip's (frames, n_mfcc), got shape {x.shape}")
    return np.concatenate([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)
