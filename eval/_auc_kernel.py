"""numba kernel behind :func:`eval.auc.tag_auc`: ROC-AUC and average precision per tag."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


_SIGN = np.uint64(0x8000000000000000)
_RADIX_BITS = 11
_PASSES = 6  # 6 x 11 bits cover the 64-bit keys


@njit(cache=True)
def _sortable(vals):
    """Map float64 values, in place, to uint64 keys with the same order and the same ties.

    ``-0.0`` is first made ``+0.0`` (they are equal scores); NaN must not occur.
    """
    for i in range(vals.size):
        vals[i] = vals[i] + 0.0
    bits = vals.view(np.uint64)
    for i in range(bits.size):
        b = bits[i]
        bits[i] = ~b if b & _SIGN else b | _SIGN
    return bits


@njit(cache=True)
def _radix_sort(keys, tmp):
    """Sort uint64 keys ascending (LSD radix, 11-bit digits); returns ``keys`` or ``tmp``.

    Several times faster than a comparison sort on the 10^4 - 10^6 scores of a tag.
    """
    n = keys.size
    nb = 1 << _RADIX_BITS
    mask = np.uint64(nb - 1)
    hist = np.zeros((_PASSES, nb), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(_PASSES):
            hist[p, (k >> np.uint64(p * _RADIX_BITS)) & mask] += 1
    src = keys
    dst = tmp
    off = np.empty(nb, np.int64)
    for p in range(_PASSES):
        h = hist[p]
        total = 0
        trivial = False
        for d in range(nb):
            if h[d] == n:  # every key has this digit: the pass would not move anything
                trivial = True
            off[d] = total
            total += h[d]
        if trivial:
            continue
        shift = np.uint64(p * _RADIX_BITS)
        for i in range(n):
            k = src[i]
            d = (k >> shift) & mask
            dst[off[d]] = k
            off[d] += 1
        src, dst = dst, src
    return src


@njit(parallel=True, cache=True)
def roc_ap(scores, labels):
    """ROC-AUC and average precision of every column, ties handled as scikit-learn does.

    Per tag, the positive and the negative scores are sorted apart (radix sort on keys that
    preserve order and ties) and merged from the top, one *distinct* score at a time, giving
    the true and false positive counts ``tp`` and ``fp`` at every threshold:

    * ROC-AUC is the trapezoidal area under (fp / N, tp / P), summed exactly in integers,
      ``sum (fp - fp') (tp + tp') / (2 P N)``; this is scikit-learn's area (its dropping of
      collinear points does not change it), a tie counting one half;
    * average precision is ``sum_k (R_k - R_{k-1}) P_k`` over the thresholds, from the
      highest, with ``R_k = tp / P`` and ``P_k = tp / (tp + fp)`` computed as
      ``precision_recall_curve`` does.

    Parameters
    ----------
    scores : np.ndarray [shape=(n, t), dtype=float64]
        Finite scores, higher meaning more likely positive (Fortran order is fastest).
    labels : np.ndarray [shape=(n, t), dtype=uint8]
        0/1 labels.

    Returns
    -------
    roc : np.ndarray [shape=(t,), dtype=float64]
        NaN for a tag without positive or without negative clips.
    ap : np.ndarray [shape=(t,), dtype=float64]
        NaN for the same tags.
    n_pos : np.ndarray [shape=(t,), dtype=int64]
        Positive clips per tag.
    """
    n, t = scores.shape
    roc = np.empty(t)
    ap = np.empty(t)
    n_pos = np.empty(t, np.int64)
    for j in prange(t):
        npos = 0
        for i in range(n):
            if labels[i, j] != 0:
                npos += 1
        nneg = n - npos
        n_pos[j] = npos
        if npos == 0 or nneg == 0:
            roc[j] = np.nan
            ap[j] = np.nan
            continue
        pv = np.empty(npos)
        nv = np.empty(nneg)
        a = 0
        b = 0
        for i in range(n):
            if labels[i, j] != 0:
                pv[a] = scores[i, j]
                a += 1
            else:
                nv[b] = scores[i, j]
                b += 1
        pos = _radix_sort(_sortable(pv), np.empty(npos, np.uint64))
        neg = _radix_sort(_sortable(nv), np.empty(nneg, np.uint64))
        a = npos - 1
        b = nneg - 1
        tp = 0
        fp = 0
        area2 = 0  # twice the area in units of 1 / (P N): an integer, summed exactly
        total = 0.0
        prev_recall = 0.0
        while a >= 0 or b >= 0:
            if b < 0 or (a >= 0 and pos[a] >= neg[b]):
                v = pos[a]
            else:
                v = neg[b]
            tp0 = tp
            fp0 = fp
            while a >= 0 and pos[a] == v:
                tp += 1
                a -= 1
            while b >= 0 and neg[b] == v:
                fp += 1
                b -= 1
            area2 += (fp - fp0) * (tp + tp0)
            if tp != tp0:
                recall = tp / npos
                total += (recall - prev_recall) * (tp / (tp + fp))
                prev_recall = recall
        roc[j] = area2 / (2.0 * npos * nneg)
        ap[j] = total
    return roc, ap, n_pos
