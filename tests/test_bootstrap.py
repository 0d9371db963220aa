"""Bootstrap intervals of eval/ against a direct resampling loop, and the --ci / --against commands."""
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from eval import auc as auc_cli
from eval import recall as recall_cli
from eval.auc import macro_ci
from eval.bootstrap import mean_ci, paired_ci
from eval.recall import recall_at_k


def _reference(values, n_boot, seed, stat=np.mean):
    rng = np.random.default_rng(seed)
    boot = [stat(values[rng.integers(0, len(values), size=len(values))]) for _ in range(n_boot)]
    return np.percentile(boot, [2.5, 97.5])


def test_mean_interval_is_the_direct_resampling_one():
    rng = np.random.default_rng(1)
    v = rng.random((300, 3))
    got = mean_ci(v, n_boot=200, seed=4)
    # One draw of every resample serves all columns, as the direct loop over resamples does.
    rng = np.random.default_rng(4)
    idx = [rng.integers(0, 300, size=300) for _ in range(200)]
    for j, g in enumerate(got):
        lo, hi = np.percentile([v[i, j].mean() for i in idx], [2.5, 97.5])
        assert (g["low"], g["high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert g["low"] < v[:, j].mean() < g["high"]
    lo, hi = _reference(v[:, 0], 200, 4)
    assert (got[0]["low"], got[0]["high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_paired_difference_resamples_the_same_queries():
    rng = np.random.default_rng(2)
    b = rng.random((400, 2))
    a = b + 0.02 + 0.01 * rng.standard_normal((400, 2))  # a little better on every query
    d = paired_ci(a, b, n_boot=300, seed=0)
    assert all(r["beyond_noise"] and r["low"] > 0 for r in d)
    lo, hi = _reference((a - b)[:, 1], 300, 0)
    assert (d[1]["low"], d[1]["high"]) == pytest.approx((lo, hi), abs=1e-12)
    # Unpaired, the same gap is lost in the spread of the queries.
    sep = mean_ci(a, n_boot=300, seed=0)[1], mean_ci(b, n_boot=300, seed=1)[1]
    assert sep[0]["low"] < sep[1]["high"]
    assert not paired_ci(b, b, n_boot=50)[0]["beyond_noise"]


def test_macro_auc_interval_is_the_direct_resampling_one():
    rng = np.random.default_rng(3)
    y = (rng.random((120, 6)) < 0.2).astype(np.uint8)
    y[:3] = 1  # every tag has a positive
    s = 0.5 * y + rng.random((120, 6))
    got = macro_ci(s, y, n_boot=40, seed=7)

    def macro(rows, fn):
        yy, ss = y[rows], s[rows]
        ok = [j for j in range(6) if 0 < yy[:, j].sum() < len(rows)]
        return np.mean([fn(yy[:, j], ss[:, j]) for j in ok])

    rng = np.random.default_rng(7)
    idx = [rng.integers(0, 120, size=120) for _ in range(40)]
    for key, fn in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        lo, hi = np.percentile([macro(i, fn) for i in idx], [2.5, 97.5])
        t = macro(np.arange(120), fn)
        assert got[key] == pytest.approx((2 * t - hi, 2 * t - lo), abs=1e-9)  # the basic interval around t
        assert got[key][0] < t < got[key][1]
    same = macro_ci(s, y, other=s, n_boot=20)
    assert same["roc_auc"] == (0.0, 0.0)


def test_recall_command_reports_intervals_and_a_paired_difference(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = (rng.random((200, 10)) < 0.2).astype(np.uint8)
    y[np.arange(200), rng.integers(0, 10, 200)] = 1
    good = (y @ rng.standard_normal((10, 8)) + 0.3 * rng.standard_normal((200, 8))).astype(np.float32)
    noise = rng.standard_normal((200, 8)).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", good)
    np.save(tmp_path / "other.npy", noise)
    np.save(tmp_path / "labels.npy", y)
    assert recall_cli.main([str(tmp_path / "embeddings.npy"), "--against", str(tmp_path / "other.npy"),
                            "--k", "1,2", "--json", "--boot", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    per_q = recall_at_k(good, y, ks=(1, 2))["per_query"] - recall_at_k(noise, y, ks=(1, 2))["per_query"]
    ref = _reference(per_q[:, 0], 200, 0)
    d = out["against"]["difference"]["1"]
    assert (d["low"], d["high"]) == pytest.approx(tuple(ref), abs=1e-12) and d["beyond_noise"]
    assert out["ci95"]["1"][0] < out["recall"]["1"] < out["ci95"]["1"][1]
    assert recall_cli.main([str(tmp_path / "embeddings.npy"), "--ci", "--k", "1"]) == 0
    assert "95% interval" in capsys.readouterr().out


def test_auc_command_reports_intervals(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = (rng.random((150, 5)) < 0.3).astype(np.uint8)
    y[:2] = 1
    np.save(tmp_path / "predictions.npy", (y + rng.random((150, 5))).astype(np.float32))
    np.save(tmp_path / "other.npy", rng.random((150, 5)).astype(np.float32))
    np.save(tmp_path / "labels.npy", y)
    assert auc_cli.main([str(tmp_path / "predictions.npy"), "--against", str(tmp_path / "other.npy"), "--json",
                         "--boot", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    lo, hi = out["against"]["difference"]["ci95"]["roc_auc_macro"]
    assert 0 < lo < out["against"]["difference"]["roc_auc_macro"] < hi
    assert auc_cli.main([str(tmp_path / "predictions.npy"), "--ci", "--boot", "50"]) == 0
    assert "95% intervals" in capsys.readouterr().out
    # one tag given as a vector: the intervals of its single column
    np.save(tmp_path / "one.npy", np.load(tmp_path / "predictions.npy")[:, 0])
    np.save(tmp_path / "labels.npy", y[:, 0])
    assert auc_cli.main([str(tmp_path / "one.npy"), "--ci", "--boot", "50", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)["ci95"]
    two = macro_ci(np.load(tmp_path / "one.npy")[:, None], y[:, :1], n_boot=50)
    assert one["roc_auc_macro"] == pytest.approx(list(two["roc_auc"]), abs=1e-12)
