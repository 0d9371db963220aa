"""The commands eval/recall.py and eval/auc.py: trainer run folders, output, exit status 2."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval import auc as auc_cli
from eval import recall as recall_cli
from eval.auc import tag_auc
from eval.recall import recall_at_k

REPO = Path(__file__).resolve().parents[1]
TAGS = [f"name {i}" for i in range(50)]


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as the trainer writes it (tag 7 has no positive clip)."""
    rng = np.random.default_rng(0)
    n = 300
    lab = rng.integers(0, 10, n)
    y = (rng.random((n, 50)) < 0.05).astype(np.uint8)
    y[np.arange(n), 10 + lab] = 1
    y[:, 7] = 0
    y[:5] = 0  # clips without a tag
    centres = rng.standard_normal((10, 16))
    x = (centres[lab] + rng.standard_normal((n, 16))).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", x)
    np.save(tmp_path / "predictions.npy", (0.3 * y + 0.7 * rng.random((n, 50))).astype(np.float32))
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "clip_ids.npy", np.arange(n, dtype=np.int64))
    (tmp_path / "tags.json").write_text(json.dumps(TAGS))
    return tmp_path


def _script(name, *args):
    # As documented: run from the repository root, so sys.path[0] is eval/.
    return subprocess.run([sys.executable, f"eval/{name}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_recall_command_on_a_run_folder(run_dir):
    proc = _script("recall.py", run_dir / "embeddings.npy", "--json", "--k", "1,3")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    res = recall_at_k(np.load(run_dir / "embeddings.npy"), np.load(run_dir / "labels.npy"),
                      ks=(1, 3))
    assert out["recall"] == {"1": res["recall"][1], "3": res["recall"][3]}
    assert (out["n_queries"], out["n_skipped"], out["metric"]) == (295, 5, "cosine")
    assert out["labels"] == str(run_dir / "labels.npy")


def test_auc_command_on_a_run_folder(run_dir):
    proc = _script("auc.py", run_dir / "predictions.npy", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    with pytest.warns(UserWarning):
        res = tag_auc(np.load(run_dir / "predictions.npy"), np.load(run_dir / "labels.npy"))
    assert out["roc_auc_macro"] == res["roc_auc_macro"]
    assert out["pr_auc_macro"] == res["pr_auc_macro"]
    assert out["undefined"] == ["name 7"]
    assert out["per_tag"][7] == {"tag": "name 7", "n_positive": 0, "roc_auc": None, "pr_auc": None}
    assert out["per_tag"][0]["roc_auc"] == res["roc_auc"][0]
    assert "warning: 1 of 50 tags" in proc.stderr and "name 7" in proc.stderr


def test_help_exits_zero():
    proc = _script("recall.py", "--help")
    assert proc.returncode == 0 and "--metric" in proc.stdout and "Recall@K" in proc.stdout
    with pytest.raises(SystemExit) as exc:
        auc_cli.main(["--help"])
    assert exc.value.code == 0


def test_human_summaries(run_dir, capsys):
    assert recall_cli.main([str(run_dir / "embeddings.npy"), "--metric", "euclidean"]) == 0
    out = capsys.readouterr().out
    res = recall_at_k(np.load(run_dir / "embeddings.npy"), np.load(run_dir / "labels.npy"),
                      metric="euclidean")
    assert "295 scored, 5 skipped" in out
    for k in (1, 2, 4, 8):
        assert f"{k:>6}  {res['recall'][k]:.4f}" in out

    assert auc_cli.main([str(run_dir / "predictions.npy")]) == 0
    out = capsys.readouterr().out
    assert "over 49 of 50 tags" in out and "best 5 by ROC-AUC" in out and "name " in out
    assert len(out.splitlines()) <= 24  # one screen
    assert auc_cli.main([str(run_dir / "predictions.npy"), "--per-tag"]) == 0
    assert sum(line.startswith("  name ") for line in capsys.readouterr().out.splitlines()) == 50


def test_labels_option_overrides_the_file_beside(run_dir, tmp_path_factory, capsys):
    other = tmp_path_factory.mktemp("other")
    y = np.load(run_dir / "labels.npy")
    np.save(other / "mine.npy", y.astype(bool))
    args = [str(run_dir / "embeddings.npy"), "--json"]
    recall_cli.main(args)
    a = json.loads(capsys.readouterr().out)
    recall_cli.main(args + ["--labels", str(other / "mine.npy")])
    b = json.loads(capsys.readouterr().out)
    assert a["recall"] == b["recall"] and b["labels"] == str(other / "mine.npy")


def _bad(tmp_path, name, arr):
    path = tmp_path / name
    if isinstance(arr, bytes):
        path.write_bytes(arr)
    else:
        np.save(path, arr)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("nan", "1 non-finite values (1 NaN), the first at row 0, column 1"),
    ("inf", "1 non-finite values (0 NaN)"),
    ("rows", "labels.npy: 4 rows but"),
    ("not01", "labels must be 0 or 1; found 3"),
    ("k", "K=3 is larger than N-1=2"),
    ("kparse", "--k: expected comma-separated positive integers, got '1,,2'"),
    ("empty", "embeddings.npy: empty file"),
    ("text", "embeddings.npy: not a .npy file"),
    ("npz", "embeddings.npy: is an .npz (zip) archive"),
    ("ndim", "embeddings.npy: expected a 2-D array (clips x dimensions), got shape (3,)"),
    ("nolabels", "no --labels given and no labels.npy beside it"),
    ("missing", "nothere.npy: no such file"),
    ("notags", "no clip has a positive tag"),
])
def test_recall_bad_input_exits_2(tmp_path, capsys, case, message):
    good = np.eye(3, dtype=np.float32)
    emb = {"nan": np.array([[1.0, np.nan], [0, 1], [1, 1]]),
           "inf": np.array([[1.0, np.inf], [0, 1], [1, 1]]),
           "empty": b"", "text": b"1 2 3\n", "npz": b"PK\x03\x04rest",
           "ndim": np.ones(3)}.get(case, good)
    labels = {"rows": np.ones((4, 1)), "not01": np.array([[1], [3], [0]]),
              "notags": np.zeros((3, 2))}.get(case, np.ones((3, 1)))
    e = _bad(tmp_path, "embeddings.npy", emb)
    if case != "nolabels":
        _bad(tmp_path, "labels.npy", labels)
    argv = {"k": [e, "--k", "1,3"], "kparse": [e, "--k", "1,,2"],
            "missing": [str(tmp_path / "nothere.npy")]}.get(case, [e, "--k", "1"])
    with pytest.raises(SystemExit) as exc:
        recall_cli.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""  # never a number on bad input


@pytest.mark.parametrize("case, message", [
    ("shape", "labels.npy: shape (3, 1) does not match"),
    ("nan", "predictions.npy: 3 non-finite values (3 NaN)"),
    ("not01", "labels must be 0 or 1; found -1"),
    ("undefined", "no tag has both a positive and a negative clip"),
    ("tags", "tags.json: 2 tag names but the labels have 3 columns"),
    ("badtags", "tags.json: cannot read as JSON"),
    ("empty", "predictions.npy: empty array of shape (0, 3)"),
])
def test_auc_bad_input_exits_2(tmp_path, capsys, case, message):
    pred = {"nan": np.array([[0.1, np.nan, 0.3]] * 3), "empty": np.zeros((0, 3))}.get(
        case, np.random.default_rng(0).random((3, 3)))
    labels = {"shape": np.ones((3, 1)), "not01": -np.eye(3), "undefined": np.ones((3, 3)),
              "empty": np.zeros((0, 3))}.get(case, np.eye(3))
    p = _bad(tmp_path, "predictions.npy", pred)
    _bad(tmp_path, "labels.npy", labels)
    if case == "tags":
        (tmp_path / "tags.json").write_text('["a", "b"]')
    if case == "badtags":
        (tmp_path / "tags.json").write_text('["a", ')
    with pytest.raises(SystemExit) as exc:
        auc_cli.main([p])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_auc_command_says_embeddings_are_not_predictions(run_dir):
    proc = _script("auc.py", run_dir / "embeddings.npy")
    assert proc.returncode == 2
    assert "has 16 columns, not the labels' 50 tags, so it is not predictions" in proc.stderr
    assert "score it with eval/recall.py" in proc.stderr
