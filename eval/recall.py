"""Multi-label Recall@K of embeddings (Lee et al., ISMIR 2020), exact and blockwise.

Each clip with at least one positive tag is a query. Its K nearest *other* clips are found by
the embedding metric; the query scores ``|y_q & (y_1 | ... | y_K)| / |y_q|``, the share of its
tags that at least one of the K results carries. Recall@K is the mean over queries; queries
without a positive tag are skipped and counted.

Command line::

    python eval/recall.py EMBEDDINGS.npy [--labels LABELS.npy] [--k 1,2,4,8]
                          [--metric cosine|euclidean] [--json]

Scores and ties
---------------
*cosine*: ``sum_d (x_qd / |x_q|) (x_id / |x_i|)`` with ``|x| = sqrt(sum_d x_d^2)``, larger is
nearer; a zero vector has cosine 0 with every clip (it is then ranked by index among equals).
*euclidean*: ``sum_d (x_qd - x_id)^2``, smaller is nearer.
Both are computed in float64, summing over dimensions in order. Two clips are tied when these
float64 values are equal (duplicate rows always are); ties go to the lower index. The search
finds exactly these neighbours: float32 BLAS products over blocks of queries propose
candidates within a proven rounding margin, and the candidates are ranked by the float64 score
(see :mod:`eval._topk`). Memory beyond the embeddings is ``block_size x chunk_size`` float32
scores per worker thread plus two copies of the embeddings (float64 and float32), never N x N.
"""
from __future__ import annotations

import argparse
import json
import math
import operator
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from eval import _topk
from eval.bootstrap import add_arguments as add_bootstrap_arguments
from eval.bootstrap import mean_ci, paired_ci
from eval._checks import (LABELS_FILE, binary_labels, check_same_clips, finite_matrix, labels_beside, load_npy,
                          parse_ks, real_array)

METRICS = {"cosine": _topk.COSINE, "euclidean": _topk.EUCLIDEAN}
DEFAULT_KS = (1, 2, 4, 8)
#: Largest number of query rows per BLAS product, and collection rows per chunk:
#: 1024 x 4096 float32 = 16 MiB per worker thread (fastest of the sizes tried on 20,000 x 128).
BLOCK_SIZE = 1024
CHUNK_SIZE = 4096
#: Smallest block chosen automatically when the queries are split among the worker threads.
MIN_BLOCK = 64
#: Candidate slots per query; more than half of them within the margin sends the query to the
#: plain exact scan.
CAP = 128
# Largest magnitude accepted: squared distances of larger values overflow float64.
_BIG = 1e150

_U32 = 2.0 ** -24  # unit roundoff of float32
_U64 = 2.0 ** -53  # unit roundoff of float64


def _gamma(n: int, u: float) -> float:
    # Classic bound on the relative error of an n-term dot product in any summation order.
    return n * u / (1.0 - n * u)


def _check_embeddings(x, name: str) -> np.ndarray:
    x = finite_matrix(x, name, "clips x dimensions")
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    if x.dtype == np.float64 and max(x64.max(), -x64.min()) > _BIG:
        raise ValueError(f"{name}: values larger than {_BIG:g} in magnitude; squared distances "
                         "would overflow float64, rescale the embeddings")
    return x64


#: The proven margins below are multiplied by this, for peace of mind; it costs a few more
#: candidates in the exact re-ranking and nothing else.
SAFETY = 2.0


def _margins(metric: int, d: int, qnorm: np.ndarray, big: float, scale: float) -> np.ndarray:
    """Key margin per query: below the K-th best key minus this, a clip cannot be in the top K.

    Notation: ``u``, ``v`` the unit roundoffs of float32 and float64, ``gamma_n(u) = n u /
    (1 - n u)`` the bound on the relative error of an n-term dot product in any summation
    order (BLAS blocking and FMA included), ``qnorm`` and ``big`` upper bounds of the query's
    and of the largest collection operand's norm.

    Cosine. ``u_i`` are the float64 unit rows of the reference score ``r_i = u_q . u_i``
    (error <= gamma_d(v) |u_q||u_i|); the key is the float32 product ``g_i`` of ``fl32(u_q)``
    and ``fl32(fl64(u_i - c))``, so ``|g_i + u_q.c - r_i| <= E = c32 qnorm big + gamma_d(v)``.
    The K clips with key >= tau have ``r >= tau + u_q.c - E``; a clip with key below
    ``tau - 2E`` has ``r`` strictly below that: the margin is ``2E``.

    Euclidean. ``w = fl64(x - mu) * scale`` (a power of two), the key is ``fl64(g_i - h_i)``
    with ``g_i`` the float32 product of ``fl32(w_q)``, ``fl32(w_i)`` and ``h_i = |w_i|^2 / 2``
    in float64: ``|key_i - (w_q.w_i - |w_i|^2/2)| <= eps_key``. With ``rho_i = scale^2 r_i``
    the reference distance in these units, ``|rho_i - (|w_q|^2 - 2 key_i)| <= E = 2 eps_key
    + eps_ref``, ``eps_ref`` covering the float64 reference and the rounding of ``x - mu``.
    A clip with key below ``tau - E`` is then strictly farther than the K with key >= tau:
    the margin is ``E``.

    Both add ``slack`` for products that underflow (an absolute error per term).

    Parameters
    ----------
    metric : int
    d : int
        Dimensions.
    qnorm : np.ndarray [shape=(b,)]
        Per query.
    big : float
    scale : float
        The Euclidean power-of-two scale (1 for cosine).

    Returns
    -------
    np.ndarray [shape=(b,)]
        ``SAFETY`` times the proven margin.
    """
    u, v = _U32, _U64
    slack = (d + 2) * 2.0 ** -140
    if metric == _topk.COSINE:
        u1 = u + v + u * v  # fl32(fl64(.)) relative error
        c32 = _gamma(d, u) * (1 + u) * (1 + u1) + 2 * u1 + u1 * u1
        e = c32 * qnorm * big + _gamma(d, v) * 1.01 + slack
        margin = 2 * e
    else:
        s = qnorm + big
        c32 = _gamma(d, u) * (1 + u) ** 2 + 2 * u + u * u
        eps_key = (c32 * qnorm * big + _gamma(d, v) * 1.01 * big * big / 2
                   + v * 1.01 * (qnorm * big + big * big / 2))
        eps_ref = (_gamma(d + 2, v) * 1.01 + 2.01 * v) * s * s
        # Subnormal results in the float64 reference, in scaled units.
        tiny = math.ldexp(d + 2, -1074) * scale * scale if scale < 2.0 ** 500 else math.inf
        margin = 2 * eps_key + eps_ref + slack + tiny
    return SAFETY * margin


def _search(x64: np.ndarray, norms: np.ndarray, rows: np.ndarray, k: int, metric: int,
            block_size: int | None, chunk_size: int) -> np.ndarray:
    """Exact K nearest neighbours of the clips ``rows``; ``(len(rows), k)`` int64."""
    n, d = x64.shape
    db = np.empty((n, d), np.float32)
    grow = 1.0 + 4 * (d + 2) * _U64  # covers the rounding of computed norms
    if metric == _topk.COSINE:
        centre = np.zeros(d)
        for s in range(0, n, 65536):
            nn = norms[s:s + 65536, None]
            centre += np.divide(x64[s:s + 65536], nn, out=np.zeros_like(x64[s:s + 65536]),
                                where=nn != 0).sum(axis=0)
        centre /= n
        big = _topk.cosine_operands(x64, norms, centre, db) * grow
        half_sq = np.zeros(1)
        qnorm = np.where(norms[rows] != 0, grow, 0.0)
        scale = 1.0
        slack32 = np.zeros(len(rows))
    else:
        centre = x64.mean(axis=0)
        spread = _topk.centred_max_norm(x64, centre)
        # Scale by a power of two (exact) so every operand is at most 1: no float32 overflow.
        scale = math.ldexp(1.0, -math.frexp(spread)[1]) if spread > 0 else 1.0
        half_sq = np.empty(n)
        _topk.euclidean_operands(x64, centre, scale, db, half_sq)
        big = math.sqrt(2 * half_sq.max()) * grow
        qnorm = np.sqrt(2 * half_sq[rows]) * grow
        # The pre-check computes fl32(g - fl32(half_sq)); |g| <= qnorm * big, half_sq <= big^2/2.
        slack32 = 3 * _U32 * (qnorm * big + big * big / 2) + 2.0 ** -140
    margins = _margins(metric, d, qnorm, big, scale)

    out = np.empty((len(rows), k), np.int64)
    overflow = np.zeros(len(rows), np.bool_)
    chunk = min(chunk_size, n)
    n_threads = numba.get_num_threads()
    if block_size is None:
        # About four blocks per thread, so a thread slowed by other work does not hold up the end.
        block_size = min(BLOCK_SIZE, max(MIN_BLOCK, -(-len(rows) // (4 * n_threads))))
    block = min(block_size, len(rows))
    half_sq32 = half_sq.astype(np.float32)
    starts = iter(range(0, len(rows), block))
    lock = threading.Lock()

    def work():
        # One worker: a float32 product for a block of queries and a chunk of the collection,
        # then the numba selection on the same thread (both release the GIL).
        buf = np.empty(block * chunk, np.float32)
        while True:
            with lock:
                b0 = next(starts, None)
            if b0 is None:
                return
            r = rows[b0:b0 + block]
            b = len(r)
            if metric == _topk.COSINE:
                nn = norms[r, None]
                q = np.divide(x64[r], nn, out=np.zeros((b, d)), where=nn != 0).astype(np.float32)
            else:
                q = db[r]
            top = np.full((b, k), -np.inf)
            cand_key = np.empty((b, CAP))
            cand_idx = np.empty((b, CAP), np.int64)
            count = np.zeros(b, np.int64)
            over = overflow[b0:b0 + b]
            m = margins[b0:b0 + b]
            s32 = slack32[b0:b0 + b]
            for c0 in range(0, n, chunk):
                w = min(chunk, n - c0)
                sims = buf[:b * w].reshape(b, w)
                np.matmul(q, db[c0:c0 + w].T, out=sims)
                _topk.scan_chunk(sims, r, c0, half_sq, half_sq32, metric == _topk.EUCLIDEAN, m,
                                 s32, top, cand_key, cand_idx, count, over)
            _topk.rerank(x64, norms, metric, r, m, top, cand_key, cand_idx, count, over,
                         out[b0:b0 + b])

    n_workers = max(1, min(n_threads, -(-len(rows) // block)))
    # One BLAS thread per worker: OpenBLAS's own pool, left spinning after each product, slowed the
    # numba selection about three times on 2 cores.
    with threadpool_limits(limits=1, user_api="blas"):
        if n_workers == 1:
            work()
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                for f in [pool.submit(work) for _ in range(n_workers)]:
                    f.result()
    if overflow.any():
        out[overflow] = _topk.exact_topk(x64, norms, metric, rows[overflow], k)
    return out


def _recall(embeddings, labels, ks, metric, block_size, chunk_size, emb_name, labels_name):
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    x64 = _check_embeddings(embeddings, emb_name)
    n = x64.shape[0]
    y = real_array(labels, labels_name)
    if y.ndim != 2 or y.shape[1] == 0:
        raise ValueError(f"{labels_name}: expected a 2-D array (clips x tags), got shape {y.shape}")
    y = binary_labels(y, labels_name, (n, y.shape[1]), emb_name)
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    try:
        ks = sorted({operator.index(k) for k in ks})
    except TypeError:
        raise ValueError(f"ks: expected positive integers, got {ks!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: expected positive integers, got {ks!r}")
    if ks[-1] > n - 1:
        raise ValueError(f"K={ks[-1]} is larger than N-1={n - 1}, the number of other clips in "
                         f"{emb_name}")
    for label, v in (("block_size", block_size), ("chunk_size", chunk_size)):
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{label}: expected a positive integer, got {v!r}")
    code = METRICS[metric]
    norms = _topk.row_norms(x64)
    if code == _topk.COSINE:
        # Squares of such rows underflow: the norm would be wrong or 0 for a nonzero row.
        small = np.flatnonzero(norms < 1 / _BIG)
        weak = small[np.any(x64[small] != 0, axis=1)]
        if weak.size:
            raise ValueError(f"{emb_name}: row {int(weak[0])} is not zero but has a norm below "
                             f"{1 / _BIG:g}; its cosine cannot be computed reliably in float64, "
                             "rescale the embeddings")

    has_tag = y.any(axis=1)
    rows = np.flatnonzero(has_tag).astype(np.int64)
    result = {"recall": {}, "n_queries": int(rows.size), "n_skipped": int(n - rows.size),
              "metric": metric, "ks": list(ks), "n_clips": int(n), "dim": int(x64.shape[1])}
    if rows.size == 0:
        warnings.warn(f"{labels_name}: no clip has a positive tag; Recall@K is undefined (NaN)",
                      RuntimeWarning, stacklevel=3)
        result["recall"] = {k: math.nan for k in ks}
        result["neighbours"] = np.empty((0, ks[-1]), np.int64)
        result["per_query"] = np.empty((0, len(ks)))
        result["rows"] = rows
        return result
    nb = _search(x64, norms, rows, ks[-1], code, block_size, chunk_size or CHUNK_SIZE)
    per_query = _topk.recall_hits(y, rows, nb, np.asarray(ks, np.int64))
    # fsum: the mean is correctly rounded, so it does not depend on block or thread layout.
    result["recall"] = {k: math.fsum(per_query[:, j]) / rows.size for j, k in enumerate(ks)}
    result["per_query"] = per_query
    result["neighbours"] = nb
    result["rows"] = rows
    return result


def recall_at_k(embeddings, labels, ks=DEFAULT_KS, metric: str = "cosine",
                block_size: int | None = None, chunk_size: int | None = None) -> dict:
    """Multi-label Recall@K with exact nearest neighbours.

    Parameters
    ----------
    embeddings : np.ndarray [shape=(n, d)]
        One embedding per clip, finite real numbers (float32 or float64, integers accepted).
    labels : np.ndarray [shape=(n, t)]
        0/1 or bool tags of the same clips.
    ks : iterable of int
        Cut-offs K, each between 1 and ``n - 1``.
    metric : {'cosine', 'euclidean'}
        Cosine similarity or Euclidean distance (see the module docstring for the exact
        definitions, zero vectors and ties).
    block_size : int, optional
        Queries per BLAS product. By default about four blocks per numba thread, between
        ``MIN_BLOCK`` and ``BLOCK_SIZE`` queries.
    chunk_size : int, optional
        Collection clips per BLAS product (default ``CHUNK_SIZE``). Each worker thread holds
        ``4 * block_size * chunk_size`` bytes of scores; besides that the search keeps a
        float64 and a float32 copy of the embeddings, never an N x N matrix.

    Returns
    -------
    dict
        ``recall``: {K: float}, the mean over queries; ``n_queries``: queries scored;
        ``n_skipped``: clips without a positive tag (not used as queries, still retrievable);
        ``metric``; ``ks``; ``n_clips``; ``dim``; ``rows``: int64 indices of the queries;
        ``neighbours``: int64 array ``(n_queries, max(ks))``, nearest first; ``per_query``:
        ``(n_queries, len(ks))`` each query's recall at each K (for :mod:`eval.bootstrap`).
        With no query at all, every recall is NaN and a ``RuntimeWarning`` is issued.

    Raises
    ------
    ValueError
        Shapes that do not match, non-finite values, labels other than 0/1, K larger than
        ``n - 1``, an unknown metric.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((100, 16)).astype(np.float32)
    >>> y = rng.random((100, 50)) < 0.1
    >>> {k: round(v, 4) for k, v in recall_at_k(x, y, ks=(1, 5))["recall"].items()}
    {1: 0.0799, 5: 0.4207}
    """
    return _recall(embeddings, labels, ks, metric, block_size, chunk_size,
                   "embeddings", "labels")


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="eval/recall.py",
        description="Multi-label Recall@K of clip embeddings: for each clip with a tag, the "
                    "share of its tags carried by at least one of its K nearest other clips, "
                    "averaged over clips. Exact neighbours, ties to the lower index.")
    parser.add_argument("embeddings", metavar="EMBEDDINGS.npy",
                        help="float N x D array (the trainer's embeddings.npy)")
    parser.add_argument("--labels", metavar="LABELS.npy",
                        help=f"0/1 N x T array (default: {LABELS_FILE} beside EMBEDDINGS.npy)")
    parser.add_argument("--k", default=None, metavar="K,K,...",
                        help=f"comma-separated cut-offs (default: {','.join(map(str, DEFAULT_KS))}, those below "
                             "the number of clips)")
    parser.add_argument("--metric", choices=sorted(METRICS), default="cosine",
                        help="neighbour metric (default: cosine)")
    parser.add_argument("--ci", action="store_true",
                        help="also a 95%% bootstrap interval of each Recall@K over the queries")
    parser.add_argument("--against", metavar="OTHER.npy",
                        help="embeddings of the same clips by another system: the paired difference "
                             "(EMBEDDINGS - OTHER) at each K, with its 95%% bootstrap interval")
    add_bootstrap_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)

    try:
        x = load_npy(args.embeddings)
        # by default the cut-offs a split of N clips has (N-1 others), as the trainer reports them
        ks = parse_ks(args.k) if args.k else [k for k in DEFAULT_KS if k < len(x)] or [DEFAULT_KS[0]]
        labels_path, y = labels_beside(args.embeddings, args.labels)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = _recall(x, y, ks, args.metric, None, None, args.embeddings, labels_path)
            other = None
            if args.against:
                check_same_clips(args.embeddings, args.against)
                other = _recall(load_npy(args.against), y, ks, args.metric, None, None, args.against, labels_path)
        elapsed = time.perf_counter() - t0
        if res["n_queries"] == 0:
            raise ValueError(f"{labels_path}: no clip has a positive tag; nothing to score")
    except ValueError as exc:
        parser.error(str(exc))
    ci = mean_ci(res["per_query"], args.boot, args.seed) if args.ci or args.against else None
    diff = paired_ci(res["per_query"], other["per_query"], args.boot, args.seed) if other else None

    if args.json:
        out = {"embeddings": args.embeddings, "labels": labels_path, "metric": res["metric"],
               "n_clips": res["n_clips"], "dim": res["dim"], "n_queries": res["n_queries"],
               "n_skipped": res["n_skipped"],
               "recall": {str(k): v for k, v in res["recall"].items()},
               "seconds": round(elapsed, 3)}
        if ci:
            out["ci95"] = {str(k): [c["low"], c["high"]] for k, c in zip(ks, ci)}
            out["bootstrap"] = {"resamples": args.boot, "seed": args.seed}
        if diff:
            out["against"] = {"embeddings": args.against,
                              "recall": {str(k): v for k, v in other["recall"].items()},
                              "difference": {str(k): d for k, d in zip(ks, diff)}}
        print(json.dumps(out, indent=2))
        return 0
    print(f"Recall@K  {args.embeddings}  ({res['n_clips']} clips x {res['dim']} dims, "
          f"{res['metric']})")
    print(f"labels    {labels_path}  ({y.shape[1]} tags)")
    print(f"queries   {res['n_queries']} scored, {res['n_skipped']} skipped (no positive tag)")
    head = f"{'K':>6}  Recall@K" + ("  95% interval  " if ci else "")
    if diff:
        head += f"  {'other':>6}  difference  95% interval     "
    print(head)
    for j, (k, v) in enumerate(res["recall"].items()):
        line = f"{k:>6}  {v:.4f}  "
        if ci:
            line += f"  [{ci[j]['low']:.3f}, {ci[j]['high']:.3f}]"
        if diff:
            d = diff[j]
            line += (f"  {other['recall'][k]:6.4f}  {d['diff']:+10.4f}  [{d['low']:+.3f}, {d['high']:+.3f}]"
                     + ("  beyond noise" if d["beyond_noise"] else "  within noise"))
        print(line)
    if ci:
        print(f"(intervals: {args.boot} bootstrap resamples of the {res['n_queries']} queries, seed {args.seed}"
              + (f"; other: {args.against}" if diff else "") + ")")
    print(f"({elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
