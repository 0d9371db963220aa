"""numba kernels behind :func:`eval.recall.recall_at_k`: exact K-nearest-neighbour search.

The search has two stages. A float32 BLAS product over a block of queries and a chunk of the
collection gives approximate scores; :func:`scan_chunk` keeps, for every query, every clip whose
approximate score lies within a proven error ``margin`` of the K-th best so far. The survivors
are then ranked by :func:`rerank` with the *reference* score, computed in float64 one dimension
after the other, exactly as the brute-force reference in the tests does. Because the margin
bounds the float32 error, the result is the exact top K of the reference score whatever BLAS,
thread count, block or chunk size; ties in the reference score go to the lower index.

A query whose candidates do not fit in its buffer (more than ``cap // 2`` clips within the
margin, e.g. many duplicate embeddings) is flagged and solved by :func:`exact_topk`, a plain
O(N D) scan of the reference score.

:func:`scan_chunk` and :func:`rerank` are serial and release the GIL: the caller runs one
worker thread per core, each doing its own BLAS product (on one BLAS thread) and selection, so
the numba selection runs in parallel over blocks of queries. (A ``prange`` selection between
multi-threaded BLAS calls was about three times slower on a 2-core machine, the idle BLAS
threads spinning against it.) The other kernels are ``prange``-parallel.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

COSINE = 0
EUCLIDEAN = 1


@njit(cache=True, inline="always")
def _reference(x, norms, q, i, metric):
    # The definition of the score, kept one summation order so ties are reproducible:
    # cosine: sum_d (x_qd / |x_q|) (x_id / |x_i|), 0 against a zero vector; larger is nearer.
    # euclidean: sum_d (x_qd - x_id)^2; smaller is nearer.
    d = x.shape[1]
    acc = 0.0
    if metric == COSINE:
        nq = norms[q]
        ni = norms[i]
        if nq == 0.0 or ni == 0.0:
            return 0.0
        for j in range(d):
            acc += (x[q, j] / nq) * (x[i, j] / ni)
    else:
        for j in range(d):
            t = x[q, j] - x[i, j]
            acc += t * t
    return acc


@njit(cache=True)
def reference_score(x, norms, q, i, metric):
    """Reference score of clip ``i`` for query ``q`` (see the module docstring).

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
        Embeddings.
    norms : np.ndarray [shape=(n,), dtype=float64]
        Row norms from :func:`row_norms` (used by the cosine metric only).
    q, i : int
        Row indices.
    metric : int
        ``COSINE`` or ``EUCLIDEAN``.

    Returns
    -------
    float
        Cosine similarity (larger is nearer) or squared Euclidean distance (smaller is nearer).
    """
    return _reference(x, norms, q, i, metric)


@njit(parallel=True, cache=True)
def row_norms(x):
    """Euclidean norm of every row, summed one dimension after the other in float64.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float64]
    """
    n, d = x.shape
    out = np.empty(n)
    for i in prange(n):
        acc = 0.0
        for j in range(d):
            acc += x[i, j] * x[i, j]
        out[i] = np.sqrt(acc)
    return out


@njit(parallel=True, cache=True)
def cosine_operands(x, norms, centre, out):
    """Unit rows minus ``centre``, as float32, for the approximate cosine product.

    Subtracting a common vector from the collection side shifts every score of a query by the
    same amount, so the ranking is unchanged, while the float32 error, proportional to the row
    norms, shrinks when the embeddings point in similar directions.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
    norms : np.ndarray [shape=(n,), dtype=float64]
    centre : np.ndarray [shape=(d,), dtype=float64]
    out : np.ndarray [shape=(n, d), dtype=float32]
        Written in place.

    Returns
    -------
    float
        The largest float64 norm of a centred unit row (before the float32 cast).
    """
    n, d = x.shape
    big = np.zeros(n)
    for i in prange(n):
        ni = norms[i]
        acc = 0.0
        for j in range(d):
            u = x[i, j] / ni if ni != 0.0 else 0.0
            v = u - centre[j]
            acc += v * v
            out[i, j] = np.float32(v)
        big[i] = np.sqrt(acc)
    return big.max()


@njit(parallel=True, cache=True)
def centred_max_norm(x, centre):
    """Largest Euclidean norm of ``x_i - centre`` over the rows, in float64.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
    centre : np.ndarray [shape=(d,), dtype=float64]

    Returns
    -------
    float
    """
    n, d = x.shape
    out = np.empty(n)
    for i in prange(n):
        acc = 0.0
        for j in range(d):
            v = x[i, j] - centre[j]
            acc += v * v
        out[i] = acc
    return np.sqrt(out.max())


@njit(parallel=True, cache=True)
def euclidean_operands(x, centre, scale, out, half_sq):
    """``(x - centre) * scale`` as float32 and half its squared norm in float64.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
    centre : np.ndarray [shape=(d,), dtype=float64]
    scale : float
        A power of two, so the scaling itself is exact.
    out : np.ndarray [shape=(n, d), dtype=float32]
        Written in place.
    half_sq : np.ndarray [shape=(n,), dtype=float64]
        Written in place.
    """
    n, d = x.shape
    for i in prange(n):
        acc = 0.0
        for j in range(d):
            v = (x[i, j] - centre[j]) * scale
            acc += v * v
            out[i, j] = np.float32(v)
        half_sq[i] = 0.5 * acc


#: Scores are pre-checked this many at a time with a loop LLVM vectorises; only a group with a
#: score above the threshold is walked one by one.
_GROUP = 64


@njit(cache=True, inline="always")
def _below32(x):
    # Largest float32 not above x, so a float32 pre-check never drops a candidate.
    f = np.float32(x)
    if np.float64(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


@njit(cache=True, inline="always")
def _group_hits(row, h32, j0, use_h, t32):
    h = 0
    if use_h:
        for t in range(_GROUP):
            if row[j0 + t] - h32[j0 + t] >= t32:
                h += 1
    else:
        for t in range(_GROUP):
            if row[j0 + t] >= t32:
                h += 1
    return h


@njit(cache=True, nogil=True)
def scan_chunk(sims, rows, col0, half_sq, half_sq32, use_half_sq, margin, slack32, top,
               cand_key, cand_idx, count, overflow):
    """Fold one chunk of approximate scores into every query's candidate set.

    The key of clip ``i`` is ``sims[r, i - col0]`` (cosine) or ``sims[r, i - col0] -
    half_sq[i]`` in float64 (Euclidean). A clip is kept while its key is at least the K-th
    best key so far minus ``margin``.

    Parameters
    ----------
    sims : np.ndarray [shape=(b, c), dtype=float32]
        Approximate scores (dot products) of ``b`` queries against clips ``col0 .. col0 + c - 1``.
    rows : np.ndarray [shape=(b,), dtype=int64]
        Index of each query in the collection (its own column is skipped).
    col0 : int
        Collection index of the chunk's first column.
    half_sq : np.ndarray [shape=(n,), dtype=float64]
        Subtracted from the scores when ``use_half_sq`` (Euclidean); ignored otherwise.
    half_sq32 : np.ndarray [shape=(n,), dtype=float32]
        ``half_sq`` rounded, for the float32 pre-check.
    use_half_sq : bool
    margin : np.ndarray [shape=(b,), dtype=float64]
        Proven bound: a clip whose key is below the K-th best key minus ``margin`` cannot be
        among the K nearest.
    slack32 : np.ndarray [shape=(b,), dtype=float64]
        Bound on the rounding of the float32 pre-check ``sims - half_sq32``.
    top : np.ndarray [shape=(b, k), dtype=float64]
        The K best keys so far, descending (``-inf`` when unset); updated.
    cand_key, cand_idx : np.ndarray [shape=(b, cap)]
        Candidate keys and indices, in increasing index order; updated.
    count : np.ndarray [shape=(b,), dtype=int64]
        Number of candidates held; updated.
    overflow : np.ndarray [shape=(b,), dtype=bool]
        Set for a query with too many candidates within the margin; such a query is skipped
        from then on and must be solved by :func:`exact_topk`.
    """
    b, c = sims.shape
    k = top.shape[1]
    cap = cand_key.shape[1]
    ngroups = (c + _GROUP - 1) // _GROUP
    for r in range(b):
        if overflow[r]:
            continue
        row = sims[r]
        h32 = half_sq32[col0:col0 + c] if use_half_sq else half_sq32[:0]
        q = rows[r]
        m = margin[r]
        kth = top[r, k - 1]
        thr = kth - m
        t32 = _below32(thr - slack32[r])
        n = count[r]
        for g in range(ngroups):
            j0 = g * _GROUP
            j1 = j0 + _GROUP
            if j1 <= c:
                if _group_hits(row, h32, j0, use_half_sq, t32) == 0:
                    continue
            else:
                j1 = c
            for jj in range(j0, j1):
                key = np.float64(row[jj])
                i = col0 + jj
                if use_half_sq:
                    key -= half_sq[i]
                if key < thr or i == q:
                    continue
                if key > kth:
                    p = k - 1
                    while p > 0 and top[r, p - 1] < key:
                        top[r, p] = top[r, p - 1]
                        p -= 1
                    top[r, p] = key
                    kth = top[r, k - 1]
                    thr = kth - m
                    t32 = _below32(thr - slack32[r])
                if n == cap:
                    # Drop what the better K-th key has ruled out since; give up on this fast
                    # path if that does not free half the buffer (too many near-ties).
                    w = 0
                    for t in range(n):
                        if cand_key[r, t] >= thr:
                            cand_key[r, w] = cand_key[r, t]
                            cand_idx[r, w] = cand_idx[r, t]
                            w += 1
                    n = w
                    if n > cap // 2:
                        overflow[r] = True
                        break
                cand_key[r, n] = key
                cand_idx[r, n] = i
                n += 1
            if overflow[r]:
                break
        count[r] = n


@njit(cache=True, inline="always")
def _insert(best, bidx, filled, v, i):
    # Keep the len(best) smallest (v, index) pairs, ascending. Clips arrive in increasing index
    # order, so an equal v never displaces an earlier clip: ties go to the lower index.
    k = best.shape[0]
    if filled == k and not v < best[k - 1]:
        return filled
    p = filled if filled < k else k - 1
    while p > 0 and best[p - 1] > v:
        best[p] = best[p - 1]
        bidx[p] = bidx[p - 1]
        p -= 1
    best[p] = v
    bidx[p] = i
    return filled + 1 if filled < k else k


@njit(cache=True, nogil=True)
def rerank(x, norms, metric, rows, margin, top, cand_key, cand_idx, count, overflow, out):
    """Rank each query's surviving candidates by the reference score; keep the K best.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
    norms : np.ndarray [shape=(n,), dtype=float64]
    metric : int
    rows, margin, top, cand_key, cand_idx, count, overflow
        As left by :func:`scan_chunk` after the last chunk; ``top`` is overwritten.
    out : np.ndarray [shape=(b, k), dtype=int64]
        Neighbour indices, nearest first; rows with ``overflow`` are left untouched.
    """
    b, k = out.shape
    for r in range(b):
        if overflow[r]:
            continue
        q = rows[r]
        lim = top[r, k - 1] - margin[r]
        best = top[r]
        filled = 0
        for t in range(count[r]):
            if cand_key[r, t] < lim:
                continue
            s = _reference(x, norms, q, cand_idx[r, t], metric)
            filled = _insert(best, out[r], filled, -s if metric == COSINE else s, cand_idx[r, t])


@njit(parallel=True, cache=True)
def exact_topk(x, norms, metric, rows, k):
    """K nearest clips of each query by a full scan of the reference score.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d), dtype=float64]
    norms : np.ndarray [shape=(n,), dtype=float64]
    metric : int
    rows : np.ndarray [shape=(b,), dtype=int64]
        Query indices.
    k : int
        At most ``n - 1``.

    Returns
    -------
    np.ndarray [shape=(b, k), dtype=int64]
        Neighbour indices, nearest first, ties to the lower index; the query itself excluded.
    """
    n = x.shape[0]
    b = rows.shape[0]
    out = np.empty((b, k), np.int64)
    for r in prange(b):
        q = rows[r]
        best = np.empty(k)
        filled = 0
        for i in range(n):
            if i != q:
                s = _reference(x, norms, q, i, metric)
                filled = _insert(best, out[r], filled, -s if metric == COSINE else s, i)
    return out


@njit(parallel=True, cache=True)
def recall_hits(labels, rows, neighbours, ks):
    """Per-query multi-label recall at each K.

    Parameters
    ----------
    labels : np.ndarray [shape=(n, t), dtype=uint8]
        0/1 tags.
    rows : np.ndarray [shape=(b,), dtype=int64]
        Query indices (each with at least one positive tag).
    neighbours : np.ndarray [shape=(b, kmax), dtype=int64]
        Neighbours of each query, nearest first.
    ks : np.ndarray [shape=(m,), dtype=int64]
        Increasing cut-offs, each at most ``kmax``.

    Returns
    -------
    np.ndarray [shape=(b, m), dtype=float64]
        ``|y_q & (y_1 | ... | y_K)| / |y_q|`` for each query and K.
    """
    b, kmax = neighbours.shape
    t = labels.shape[1]
    m = ks.shape[0]
    out = np.empty((b, m))
    for r in prange(b):
        q = rows[r]
        covered = np.zeros(t, np.bool_)
        npos = 0
        for j in range(t):
            if labels[q, j] != 0:
                npos += 1
        hits = 0
        c = 0
        for j in range(kmax):
            nb = neighbours[r, j]
            for a in range(t):
                if labels[q, a] != 0 and labels[nb, a] != 0 and not covered[a]:
                    covered[a] = True
                    hits += 1
            while c < m and ks[c] == j + 1:
                out[r, c] = hits / npos
                c += 1
    return out
