"""eval.recall.recall_at_k against a brute-force pure-Python reference, ties included."""
import math

import numpy as np
import pytest

from eval import recall as recall_mod
from eval.recall import recall_at_k


def brute_neighbours(x, metric, k):
    """K nearest other rows of every row, by the documented float64 score, ties to lower index."""
    rows = [[float(v) for v in row] for row in np.asarray(x)]
    d = len(rows[0])
    norms = []
    for row in rows:
        acc = 0.0
        for v in row:  # summed in order, as the definition says (not math.fsum)
            acc += v * v
        norms.append(math.sqrt(acc))
    out = []
    for q, xq in enumerate(rows):
        scored = []
        for i, xi in enumerate(rows):
            if i == q:
                continue
            acc = 0.0
            if metric == "cosine":
                if norms[q] != 0.0 and norms[i] != 0.0:
                    for j in range(d):
                        acc += (xq[j] / norms[q]) * (xi[j] / norms[i])
                scored.append((-acc, i))
            else:
                for j in range(d):
                    t = xq[j] - xi[j]
                    acc += t * t
                scored.append((acc, i))
        scored.sort()
        out.append([i for _, i in scored[:k]])
    return out


def brute_recall(labels, neighbours, ks):
    """Mean over clips with a tag of |y_q & (y_1 | ... | y_K)| / |y_q|, and the skipped count."""
    tags = [set(np.flatnonzero(row)) for row in np.asarray(labels)]
    per_k = {k: [] for k in ks}
    skipped = 0
    for q, yq in enumerate(tags):
        if not yq:
            skipped += 1
            continue
        for k in ks:
            found = set().union(*(tags[i] for i in neighbours[q][:k]))
            per_k[k].append(len(yq & found) / len(yq))
    return {k: math.fsum(v) / len(v) for k, v in per_k.items()}, skipped


def _labels(rng, n, t=6, p=0.3):
    y = (rng.random((n, t)) < p).astype(np.uint8)
    y[rng.random(n) < 0.1] = 0  # some clips without a tag: skipped as queries
    return y


def _collection(rng, kind, n, d):
    if kind == "gauss32":
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == "grid":  # small integers: many exact ties, collinear rows
        return rng.integers(-2, 3, (n, d)).astype(np.float32)
    if kind == "duplicates":
        base = rng.standard_normal((max(1, n // 5), d))
        return base[rng.integers(0, len(base), n)]
    if kind == "offset":  # far from the origin, tiny spread: cancellation in |x|^2 - 2 x.y
        x = 1000.0 + 1e-3 * rng.standard_normal((n, d))
        x[rng.random(n) < 0.3] = x[0]
        return x
    if kind == "last_bit":  # rows one ulp apart: near-ties the float32 pass cannot separate
        x = np.repeat(rng.standard_normal((-(-n // 3), d)), 3, axis=0)[:n]
        return np.nextafter(x, np.inf * rng.choice([-1, 1], x.shape)) if n > 1 else x
    if kind == "zeros":
        x = rng.standard_normal((n, d))
        x[rng.random(n) < 0.3] = 0.0
        return x
    raise AssertionError(kind)


KINDS = ["gauss32", "grid", "duplicates", "offset", "last_bit", "zeros"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", KINDS)
def test_equals_brute_force(kind, metric):
    rng = np.random.default_rng(KINDS.index(kind) * 10 + (metric == "cosine"))
    for _ in range(6):
        n, d = int(rng.integers(2, 70)), int(rng.integers(1, 7))
        x = _collection(rng, kind, n, d)
        y = _labels(rng, n)
        y[0, 0] = 1  # at least one query
        ks = sorted({1, 2, 4, min(8, n - 1)} - {k for k in (2, 4) if k > n - 1})
        # Small blocks and chunks: many blocks, chunk borders everywhere.
        res = recall_at_k(x, y, ks=ks, metric=metric, block_size=int(rng.integers(1, 9)),
                          chunk_size=int(rng.integers(1, 40)))
        ref = brute_neighbours(x, metric, ks[-1])
        assert res["neighbours"].tolist() == [ref[q] for q in res["rows"]]
        expect, skipped = brute_recall(y, ref, ks)
        assert res["recall"] == expect
        assert res["n_skipped"] == skipped
        assert res["n_queries"] == n - skipped


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_many_exact_ties_take_the_exact_scan(metric):
    # 100 identical rows: more near-ties than the candidate buffer holds, so these queries go
    # through the plain exact scan; the answer is still the lowest indices.
    rng = np.random.default_rng(5)
    x = np.vstack([np.ones((100, 3)), rng.standard_normal((40, 3))]).astype(np.float32)
    assert 100 > recall_mod.CAP // 2
    y = _labels(rng, len(x))
    y[:, 0] = 1
    res = recall_at_k(x, y, ks=(1, 8), metric=metric)
    ref = brute_neighbours(x, metric, 8)
    assert res["neighbours"].tolist() == ref
    assert res["neighbours"][0].tolist() == list(range(1, 9))
    assert res["recall"] == brute_recall(y, ref, (1, 8))[0]


def test_block_and_chunk_sizes_do_not_change_the_result():
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((20, 16))
    lab = rng.integers(0, 20, 3000)
    x = (centres[lab] + rng.standard_normal((3000, 16))).astype(np.float32)
    x[100:110] = x[50]  # exact ties across blocks and chunks
    y = np.zeros((3000, 20), np.uint8)
    y[np.arange(3000), lab] = 1
    for metric in ("cosine", "euclidean"):
        runs = [recall_at_k(x, y, metric=metric, block_size=b, chunk_size=c)
                for b, c in [(None, None), (7, 333), (3000, 3000), (1000, 64)]]
        for r in runs[1:]:
            np.testing.assert_array_equal(r["neighbours"], runs[0]["neighbours"])
            assert r["recall"] == runs[0]["recall"]
            assert runs[0]["neighbours"][50].tolist() == list(range(100, 108))


def test_hand_computed_example():
    # Points on a line; clip 3 has no tag (skipped as a query, still found as a neighbour).
    x = np.array([[0.0], [1.0], [3.0], [3.5]])
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]])
    res = recall_at_k(x, y, ks=(1, 2), metric="euclidean")
    # neighbours: 0 -> 1, 2 ; 1 -> 0, 2 ; 2 -> 3, 1
    assert res["neighbours"].tolist() == [[1, 2], [0, 2], [3, 1]]
    assert res["n_queries"] == 3 and res["n_skipped"] == 1
    assert res["recall"][1] == pytest.approx((1 + 1 / 2 + 0) / 3, abs=1e-15)
    assert res["recall"][2] == pytest.approx((1 + 1 + 1 / 2) / 3, abs=1e-15)
    assert res["metric"] == "euclidean"


def test_cosine_ignores_scale_and_treats_zero_vectors_as_orthogonal():
    x = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 0.0], [-1.0, 0.1], [0.0, 5.0]])
    y = np.ones((5, 1), np.uint8)
    res = recall_at_k(x, y, ks=(4,), metric="cosine")
    nb = res["neighbours"].tolist()
    assert nb[0] == [1, 2, 4, 3]  # the zero vector and 4 both have cosine 0: lower index first
    assert nb[2] == [0, 1, 3, 4]  # a zero query: every cosine 0, so index order


def test_ks_are_sorted_and_deduplicated_and_bool_labels_accepted():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 4))
    y = rng.random((30, 5)) < 0.4
    a = recall_at_k(x, y, ks=[4, 1, 4, 2])
    b = recall_at_k(x, y.astype(np.uint8), ks=(1, 2, 4))
    assert list(a["recall"]) == [1, 2, 4]
    assert a["recall"] == b["recall"]
    assert recall_at_k(x, y, ks=3)["ks"] == [3]


def test_no_query_with_a_tag_gives_nan_and_warns():
    with pytest.warns(RuntimeWarning, match="no clip has a positive tag"):
        res = recall_at_k(np.eye(3), np.zeros((3, 2)), ks=(1,))
    assert math.isnan(res["recall"][1]) and res["n_queries"] == 0 and res["n_skipped"] == 3


@pytest.mark.parametrize("x, y, kwargs, match", [
    (np.eye(4), np.ones((4, 2)), {"ks": (4,)}, r"K=4 is larger than N-1=3"),
    (np.eye(4), np.ones((4, 2)), {"ks": (0, 1)}, r"ks: expected positive integers"),
    (np.eye(4), np.ones((4, 2)), {"ks": (1.5,)}, r"ks: expected positive integers"),
    (np.eye(4), np.ones((3, 2)), {}, r"labels: 3 rows but embeddings has 4"),
    (np.eye(4), np.ones(4), {}, r"labels: expected a 2-D array"),
    (np.ones(4), np.ones((4, 2)), {}, r"embeddings: expected a 2-D array"),
    (np.zeros((0, 3)), np.ones((0, 2)), {}, r"embeddings: empty array"),
    (np.array([[1.0, np.nan]] * 3), np.ones((3, 1)), {"ks": 1}, r"embeddings: 3 non-finite"),
    (np.array([[1.0, -np.inf]] * 3), np.ones((3, 1)), {"ks": 1}, r"non-finite values \(0 NaN\)"),
    (np.eye(3), np.array([[0, 1], [2, 0], [1, 1]]), {"ks": 1}, r"labels must be 0 or 1; found 2"),
    (np.eye(3), np.ones((3, 1)), {"ks": (1,), "metric": "manhattan"}, r"metric: expected one of"),
    (np.eye(3) * 1e200, np.ones((3, 1)), {"ks": (1,)}, r"larger than 1e\+150"),
    (np.eye(3) * 1e-200, np.ones((3, 1)), {"ks": 1}, r"row 0 is not zero but has a norm below"),
    (np.eye(3), np.ones((3, 1)), {"ks": (1,), "block_size": 0}, r"block_size: expected a positive"),
])
def test_bad_input_raises_value_error(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        recall_at_k(x, y, **kwargs)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["duplicates", "offset", "last_bit", "grid"])
def test_fast_path_equals_plain_exact_scan_on_larger_sets(kind, metric):
    # The blockwise float32 search with its rounding margin must give exactly what a plain
    # float64 scan of every clip gives (that scan is checked against the brute force above).
    from eval import _topk
    rng = np.random.default_rng(4 + KINDS.index(kind))
    x = _collection(rng, kind, 1500, 24)
    res = recall_at_k(x, np.ones((1500, 1)), ks=(8,), metric=metric, block_size=97,
                      chunk_size=500)
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    plain = _topk.exact_topk(x64, _topk.row_norms(x64), recall_mod.METRICS[metric],
                             np.arange(1500, dtype=np.int64), 8)
    np.testing.assert_array_equal(res["neighbours"], plain)


def test_blas_thread_setting_is_restored():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library in this process: the limit is a no-op")
    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads() == [1] * len(before)
        with threadpool_limits(limits=1, user_api="blas"):  # nested: still one thread, restored only once
            pass
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
    recall_at_k(np.eye(5), np.ones((5, 1)), ks=(1,))  # the search limits BLAS and restores it
    assert blas_threads() == before
