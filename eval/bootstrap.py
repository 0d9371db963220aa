"""Bootstrap intervals: how sure a Recall@K or an AUC is, and whether one embedding beats another.

A score over a test split is a mean over its queries (Recall@K) or a function of its clips
(macro ROC-AUC, PR-AUC); with a few hundred queries it moves by several points from one draw of
the split to the next. These functions resample the queries (or clips) with replacement,
``n_boot`` times from ``numpy.random.default_rng(seed)``, and report the 2.5th and 97.5th
percentiles of the statistic over the resamples (the percentile bootstrap, 95 % by default).
Comparing two embeddings or two score sets of the *same* clips, the resamples are paired: each
draw takes the same queries for both, so the interval is that of the difference, far narrower
than two separate intervals suggest.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.95


def add_arguments(parser) -> None:
    """``--boot`` and ``--seed``, the resampling options of the commands that report intervals."""
    def resamples(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
        return n

    parser.add_argument("--boot", type=resamples, default=DEFAULT_BOOT,
                        help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resamples (default: %(default)s)")


def draws(n: int, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> np.ndarray:
    """Resampled row indices, ``(n_boot, n)`` int64: row ``b`` is draw ``b`` of ``n`` items with replacement.

    All functions here draw through this one, so a resample ``b`` is the same whatever is measured
    on it (what a paired comparison needs, and what a direct reference can repeat).
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"need at least one item and one resample, got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval of ``samples`` (NaNs, from resamples where the statistic is undefined, left out)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    s = np.asarray(samples, np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def mean_ci(values, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL) -> list[dict]:
    """Intervals of the mean of each column of ``values`` (``(n, m)``: per query, per K).

    Returns
    -------
    list of dict
        Per column: ``mean``, ``low``, ``high``.
    """
    v = np.asarray(values, np.float64)
    v = v[:, None] if v.ndim == 1 else v
    idx = draws(len(v), n_boot, seed)
    out = []
    for j in range(v.shape[1]):
        boot = v[idx, j].mean(axis=1)
        lo, hi = interval(boot, level)
        out.append({"mean": float(v[:, j].mean()), "low": lo, "high": hi})
    return out


def paired_ci(a, b, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL) -> list[dict]:
    """Intervals of ``mean(a) - mean(b)`` per column, resampling the same rows of both.

    Parameters
    ----------
    a, b : np.ndarray [shape=(n, m)]
        Per-query values of two systems on the same queries (e.g. per-query Recall@K).

    Returns
    -------
    list of dict
        Per column: ``diff`` (``mean(a) - mean(b)``), ``low``, ``high`` and ``beyond_noise``
        (the interval leaves out 0).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one shape, got {a.shape} and {b.shape}")
    res = []
    for r in mean_ci(a - b, n_boot, seed, level):
        res.append({"diff": r["mean"], "low": r["low"], "high": r["high"],
                    "beyond_noise": bool(r["low"] > 0 or r["high"] < 0)})
    return res


def statistic_ci(fn, n: int, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = DEFAULT_LEVEL) -> dict:
    """Interval of a statistic of ``n`` items that is not a plain mean (a macro AUC over resampled clips).

    ``fn(rows)`` computes the statistic on the items ``rows`` (an int64 array, with repeats);
    it may return NaN where a resample leaves it undefined, or a tuple of statistics.

    Returns
    -------
    dict
        ``low`` and ``high`` (lists when ``fn`` returns a tuple) and ``n_undefined``, the
        resamples left out.
    """
    idx = draws(n, n_boot, seed)
    boot = np.array([np.atleast_1d(fn(rows)) for rows in idx], np.float64)  # (n_boot, k)
    bounds = [interval(boot[:, j], level) for j in range(boot.shape[1])]
    low, high = [b[0] for b in bounds], [b[1] for b in bounds]
    single = boot.shape[1] == 1
    return {"low": low[0] if single else low, "high": high[0] if single else high,
            "n_undefined": int(np.isnan(boot).any(axis=1).sum())}
