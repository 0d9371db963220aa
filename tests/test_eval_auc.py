"""eval.auc.tag_auc against scikit-learn, to 1e-12, on random, tied, tiny and degenerate input."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from eval.auc import UndefinedTagWarning, tag_auc

TOL = 1e-12


def _scores(rng, kind, n, t):
    if kind == "random":
        return rng.random((n, t))
    if kind == "integers":  # heavy ties
        return rng.integers(-2, 3, (n, t)).astype(np.float64)
    if kind == "rounded32":  # ties, float32
        return np.round(rng.random((n, t)), 1).astype(np.float32)
    if kind == "constant":
        return np.full((n, t), 0.5)
    if kind == "extremes":  # signed zeros tie; subnormals and huge values keep their order
        vals = [-0.0, 0.0, 5e-324, -5e-324, 1e-300, -1e300, np.finfo(float).max, 0.25]
        return rng.choice(vals, (n, t))
    raise AssertionError(kind)


def _sklearn(y, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return roc_auc_score(y, s), average_precision_score(y, s)


@pytest.mark.parametrize("kind", ["random", "integers", "rounded32", "constant", "extremes"])
def test_per_tag_equals_sklearn(kind):
    rng = np.random.default_rng(len(kind))
    checked = 0
    for _ in range(40):
        n, t = int(rng.integers(2, 200)), int(rng.integers(1, 6))
        s = _scores(rng, kind, n, t)
        y = (rng.random((n, t)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedTagWarning)
            res = tag_auc(s, y)
        for j in range(t):
            if y[:, j].min() == y[:, j].max():
                assert np.isnan(res["roc_auc"][j]) and np.isnan(res["pr_auc"][j])
                continue
            roc, ap = _sklearn(y[:, j], s[:, j])
            assert abs(res["roc_auc"][j] - roc) <= TOL
            assert abs(res["pr_auc"][j] - ap) <= TOL
            checked += 1
    assert checked > 50


def test_macro_equals_sklearn_on_a_larger_set():
    rng = np.random.default_rng(7)
    n, t = 5000, 12
    y = (rng.random((n, t)) < np.linspace(0.01, 0.5, t)).astype(np.uint8)
    # Scores correlated with the labels, on a coarse float32 grid so ties are common.
    s = np.round(y * 0.3 + rng.random((n, t)), 3).astype(np.float32)
    res = tag_auc(s, y)
    assert res["undefined"] == []
    assert abs(res["roc_auc_macro"] - roc_auc_score(y, s, average="macro")) <= TOL
    assert abs(res["pr_auc_macro"] - average_precision_score(y, s, average="macro")) <= TOL
    np.testing.assert_allclose(res["roc_auc"], roc_auc_score(y, s, average=None), rtol=0, atol=TOL)
    np.testing.assert_allclose(res["pr_auc"], average_precision_score(y, s, average=None),
                               rtol=0, atol=TOL)
    np.testing.assert_array_equal(res["n_positive"], y.sum(axis=0))


@pytest.mark.parametrize("scores, labels, roc, ap", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75, 5 / 6),  # scikit-learn's documented example
    ([0.9, 0.1], [1, 0], 1.0, 1.0),
    ([0.1, 0.9], [1, 0], 0.0, 0.5),
    ([0.5, 0.5], [1, 0], 0.5, 0.5),  # a tie counts one half; precision 1/2 at the only threshold
    ([0.5, 0.5, 0.5], [1, 1, 0], 0.5, 2 / 3),
])
def test_tiny_cases_by_hand(scores, labels, roc, ap):
    res = tag_auc(np.array(scores), np.array(labels))
    assert res["roc_auc"].shape == (1,)
    assert abs(res["roc_auc"][0] - roc) <= TOL
    assert abs(res["pr_auc"][0] - ap) <= TOL
    assert res["roc_auc_macro"] == res["roc_auc"][0]


def test_undefined_tags_are_nan_named_and_left_out():
    rng = np.random.default_rng(3)
    s = rng.random((30, 4))
    y = (rng.random((30, 4)) < 0.5).astype(np.uint8)
    y[:, 1] = 0  # no positive
    y[:, 3] = 1  # no negative
    with pytest.warns(UndefinedTagWarning, match=r"2 of 4 tags.*: bass, drums$"):
        res = tag_auc(s, y, tag_names=["guitar", "bass", "piano", "drums"])
    assert res["undefined"] == ["bass", "drums"]
    assert np.isnan(res["roc_auc"][[1, 3]]).all() and np.isnan(res["pr_auc"][[1, 3]]).all()
    assert not np.isnan(res["roc_auc"][[0, 2]]).any()
    expect = [_sklearn(y[:, j], s[:, j]) for j in (0, 2)]
    assert abs(res["roc_auc_macro"] - np.mean([e[0] for e in expect])) <= TOL
    assert abs(res["pr_auc_macro"] - np.mean([e[1] for e in expect])) <= TOL


def test_all_tags_undefined_gives_nan_macro():
    with pytest.warns(UndefinedTagWarning, match="tag_0, tag_1"):
        res = tag_auc(np.ones((5, 2)), np.zeros((5, 2), np.uint8))
    assert np.isnan(res["roc_auc_macro"]) and np.isnan(res["pr_auc_macro"])


def test_bool_labels_float32_scores_and_c_or_fortran_order_agree():
    rng = np.random.default_rng(11)
    s = rng.random((300, 6)).astype(np.float32)
    y = rng.random((300, 6)) < 0.2
    ref = tag_auc(s.astype(np.float64), y.astype(np.uint8))
    for ss, yy in [(s, y), (np.asfortranarray(s), y.astype(np.int64)), (s, y.astype(np.float64))]:
        res = tag_auc(ss, yy)
        np.testing.assert_array_equal(res["roc_auc"], ref["roc_auc"])
        np.testing.assert_array_equal(res["pr_auc"], ref["pr_auc"])


@pytest.mark.parametrize("scores, labels, match", [
    (np.zeros((4, 2)), np.zeros((3, 2)), r"labels: 3 rows but scores has 4"),
    (np.zeros((4, 2)), np.zeros((4, 3)), r"labels: shape \(4, 3\) does not match"),
    (np.array([[0.1, np.nan], [0.2, 0.3]]), np.eye(2), r"scores: 1 non-finite values \(1 NaN\)"),
    (np.array([[0.1, np.inf], [0.2, 0.3]]), np.eye(2), r"scores: 1 non-finite values \(0 NaN\)"),
    (np.zeros((2, 2)), np.array([[0, 2], [1, 0]]), r"labels: labels must be 0 or 1; found 2"),
    (np.zeros((2, 2)), np.array([[0, 0.5], [1, 0]]), r"labels must be 0 or 1; found 0.5"),
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), r"scores: expected a 2-D array"),
    (np.zeros((0, 3)), np.zeros((0, 3)), r"scores: empty array"),
    (np.zeros((2, 2), complex), np.zeros((2, 2)), r"scores: dtype complex128 is not a real"),
    (np.array([["a", "b"]]), np.zeros((1, 2)), r"scores: dtype <U1 is not a real"),
])
def test_bad_input_raises_value_error(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        tag_auc(scores, labels)


def test_wrong_number_of_tag_names():
    with pytest.raises(ValueError, match="tag_names: 1 names for 2 tags"):
        tag_auc(np.zeros((2, 2)), np.eye(2), tag_names=["a"])
