"""Augmented versions and rhythm statistics stored by extraction (--augment), merged, and fed."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from data.audio import SR, load_audio
from data.mtat import find_audio
from features import augment
from features.frontend import FeatureParams, FrontEnd
from features.rhythm import RHYTHM_FIELDS, rhythm_statistics
from pipeline import extract, merge, store
from tests.conftest import make_corpus
from train.feed import Crops, FeatureFile

FEATURES = ("mel", "mfcc")
ARGS = ["--features", ",".join(FEATURES), "--quiet"]


def run(corpus, out, *extra, workers=0, batch=2):
    return extract.main([*ARGS, "--data", str(corpus), "--out", str(out), "--workers", str(workers),
                         "--batch", str(batch), *extra])


def read_all(path):
    """Every dataset of a features file, groups flattened (``augmented/mel``), and the root attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[:]) if isinstance(v, h5py.Dataset) else None)
        return out, dict(f.attrs)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One clip per folder: 7 clips in the gct634 split, 5 of them training clips, 2 versions each."""
    root = tmp_path_factory.mktemp("augment")
    make_corpus(root / "corpus", per_folder=1)
    assert run(root / "corpus", root / "a.h5", "--augment", "2", "--augment-seed", "5") == 0
    return root


def test_versions_only_for_train_clips_and_equal_the_frontend_on_their_chain(made):
    table, versions = store.read_table(made / "a.h5"), store.read_versions(made / "a.h5")
    train = np.flatnonzero(table["split"] == "train")
    assert len(train) == 5 and len(table) == 7
    np.testing.assert_array_equal(versions["row"], np.repeat(train, 2))
    np.testing.assert_array_equal(versions["version"], np.tile([1, 2], 5))
    assert (versions["status"] == 1).all() and (versions["n_frames"] <= versions["room"]).all()
    for r, v, chain in zip(versions["row"], versions["version"], versions["chain"]):
        assert json.loads(chain) == augment.draw(np.random.default_rng([5, int(table["clip_id"][r]), int(v)]))
    # One version recomputed: the front-end on apply(load_audio(clip), sr, chain), padding zeroed.
    k = 3
    row, chain = int(versions["row"][k]), json.loads(versions["chain"][k])
    y = augment.apply(load_audio(find_audio(made / "corpus").path(table["mp3_path"][row])), SR, chain)
    ref = FrontEnd(FEATURES, FeatureParams(stft="fft"))(torch.from_numpy(y)[None])
    n, start, room = (int(versions[c][k]) for c in ("n_frames", "frame_start", "room"))
    assert n == int(ref["n_frames"][0])
    with h5py.File(made / "a.h5", "r") as f:
        assert f.attrs["augment"] == 2 and f.attrs["augment_seed"] == 5
        for name in FEATURES:
            got = f["augmented"][name][start:start + room]
            np.testing.assert_allclose(got[:n], ref[name][0].numpy(), atol=1e-3)
            assert (got[n:] == 0).all()


def test_versions_do_not_depend_on_workers_or_batches(made, tmp_path):
    assert run(made / "corpus", tmp_path / "b.h5", "--augment", "2", "--augment-seed", "5", workers=2, batch=3) == 0
    a, attrs_a = read_all(made / "a.h5")
    b, attrs_b = read_all(tmp_path / "b.h5")
    assert a.keys() == b.keys() and attrs_a == attrs_b
    for k in a:
        if k.endswith(FEATURES) or k == "rhythm":  # batches pad differently: float rounding
            np.testing.assert_allclose(b[k], a[k], atol=1e-3, rtol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_resume_after_a_kill_mid_augmentation(made, tmp_path, monkeypatch, capsys):
    out, calls = tmp_path / "f.h5", {"n": 0}
    real = augment.apply

    def apply_then_die(*a, **k):
        if calls["n"] == 5:
            raise KeyboardInterrupt  # killed while rendering the third clip's versions
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(augment, "apply", apply_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(made / "corpus", out, "--augment", "2", "--augment-seed", "5")
    monkeypatch.undo()
    part = out.with_name("f.h5.part")
    v_status = store.read_versions(part)["status"].to_numpy()
    assert not out.exists() and 0 < (v_status == 1).sum() < len(v_status)
    assert run(made / "corpus", out, "--augment", "3", "--augment-seed", "5") == 2  # never mixed
    assert "augment 2 in the file, 3 asked" in capsys.readouterr().err
    assert run(made / "corpus", out, "--augment", "2", "--augment-seed", "5") == 0
    a, attrs_a = read_all(made / "a.h5")
    b, attrs_b = read_all(out)
    assert attrs_a == attrs_b and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_other_augment_settings_are_refused(made, capsys):
    before = (made / "a.h5").read_bytes()
    for extra, says in ((["--augment", "0"], "augment 2 in the file, 0 asked"),
                        (["--augment", "3", "--augment-seed", "5"], "augment 2 in the file, 3 asked"),
                        (["--augment", "2"], "augment_seed 5 in the file, 0 asked")):
        assert run(made / "corpus", made / "a.h5", *extra) == 2
        assert says in capsys.readouterr().err
    assert (made / "a.h5").read_bytes() == before
    assert run(made / "corpus", made / "a.h5", "--augment", "2", "--augment-seed", "5") == 0
    assert "already complete" in capsys.readouterr().out


def test_a_version_that_fails_to_render_is_reported_and_skipped(made, tmp_path, monkeypatch, capsys):
    real, calls = augment.apply, {"n": 0}

    def fail_once(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("broken effect")
        return real(*a, **k)

    monkeypatch.setattr(augment, "apply", fail_once)
    out = tmp_path / "f.h5"
    assert extract.main([*ARGS[:-1], "--data", str(made / "corpus"), "--out", str(out), "--workers", "0",
                         "--augment", "2", "--augment-seed", "5"]) == 0
    text = capsys.readouterr()
    assert "augmented version 2 failed to render (RuntimeError: broken effect); skipped" in text.err + text.out
    assert "versions   2 per train clip: 9 stored, 1 skipped" in text.out
    assert "version 2 failed" in out.with_suffix(".log").read_text()
    versions = store.read_versions(out)
    assert versions["status"].tolist() == [1, 1, 1, -1, 1, 1, 1, 1, 1, 1]
    ff = FeatureFile(out, FEATURES)
    i = int(np.searchsorted(ff.rows, versions["row"][3]))
    assert ff.version_frames[i, 2] == 0 and ff.version_frames[i, 1] > 0
    crops = Crops(ff, ff.indices("train"), 100, np.zeros(ff.bins, np.float32), np.ones(ff.bins, np.float32))
    assert crops.set_versions(np.full(5, 2))[list(ff.indices("train")).index(i)] == 0  # falls back


def test_merged_shards_carry_the_versions(made, tmp_path, capsys):
    for k in range(4):  # the last shard holds the validation and test clips alone: no versions
        assert run(made / "corpus", tmp_path / "part-{index}-of-{count}.h5", "--augment", "2", "--augment-seed", "5",
                   "--shard", f"{k}/4") == 0
    assert len(store.read_versions(tmp_path / "part-3-of-4.h5")) == 0
    out = tmp_path / "merged.h5"
    assert merge.main([str(out), *(str(tmp_path / f"part-{k}-of-4.h5") for k in (1, 0, 3, 2))]) == 0
    assert "versions   2 per train clip: 10 stored, 0 skipped" in capsys.readouterr().out
    a, attrs_a = read_all(made / "a.h5")
    b, attrs_b = read_all(out)
    attrs_b.pop("shards")
    assert a.keys() == b.keys() and attrs_a == attrs_b
    for k in a:
        if k.endswith(FEATURES) or k == "rhythm":  # the shards' batches differ from one run's
            np.testing.assert_allclose(b[k], a[k], atol=1e-3, rtol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    with h5py.File(out, "r") as f:
        assert f["augmented/mel"].is_virtual and not f["rhythm"].is_virtual
    fa, fb = FeatureFile(made / "a.h5", FEATURES), FeatureFile(out, FEATURES)
    assert len(fb.files) == 4 and fb.n_versions == 2
    np.testing.assert_array_equal(fb.version_frames, fa.version_frames)
    for i in fa.indices("train"):
        for v in (1, 2):
            n = int(fa.version_frames[i, v])
            np.testing.assert_allclose(fb.crop(i, 0, n, v), fa.crop(i, 0, n, v), atol=1e-3)
    # An unfinished shard (a version pending) is refused.
    with h5py.File(tmp_path / "part-1-of-4.h5", "r+") as f:
        f["augmented/status"][0] = 0
    assert merge.main([str(tmp_path / "m2.h5"), *(str(tmp_path / f"part-{k}-of-4.h5") for k in range(4))]) == 2
    assert "1 augmented versions) not yet extracted" in capsys.readouterr().err


def test_feed_reads_version_v_and_validation_and_test_never_do(made):
    ff = FeatureFile(made / "a.h5", FEATURES)
    versions = store.read_versions(made / "a.h5")
    assert ff.n_versions == 2 and ff.version_frames.shape == (7, 3)
    train = ff.indices("train")
    other = np.setdiff1d(np.arange(len(ff)), train)
    assert (ff.version_frames[train, 1:] > 0).all() and (ff.version_frames[other, 1:] == 0).all()
    np.testing.assert_array_equal(ff.version_frames[:, 0], ff.n_frames)
    with h5py.File(made / "a.h5", "r") as f:
        for k in (0, 5, 9):
            i, v = int(versions["row"][k]), int(versions["version"][k])  # every clip was extracted: rows = positions
            start, n = int(versions["frame_start"][k]), int(versions["n_frames"][k])
            ref = np.concatenate([f["augmented"][name][start:start + n] for name in FEATURES], axis=1).T
            np.testing.assert_array_equal(ff.crop(i, 0, n, v), ref)
            np.testing.assert_array_equal(ff.crop(i, 7, 50, v), ref[:, 7:57])
            assert ff.chain(i, v) == json.loads(versions["chain"][k])
    mean, std = np.zeros(ff.bins, np.float32), np.ones(ff.bins, np.float32)
    crops = Crops(ff, train, 100, mean, std, "random", versions=np.array([0, 1, 2, 1, 2]))
    torch.manual_seed(0)
    x, _ = crops.__getitems__(np.arange(5))
    torch.manual_seed(0)
    starts = crops._where(np.arange(5))[1]
    for j, (i, v) in enumerate(zip(train, [0, 1, 2, 1, 2])):
        np.testing.assert_array_equal(x[j].numpy(), ff.crop(i, int(starts[j]), 100, v))
        assert starts[j] <= ff.version_frames[i, v] - 100
    assert crops.set_versions(None) is None and crops.versions is None
    with pytest.raises(ValueError, match=r"need one version in 0\.\.2"):
        crops.set_versions([0, 3, 0, 0, 0])
    for mode in ("fixed", "chunks"):  # validation and test: originals only
        held = Crops(ff, other, 100, mean, std, mode)
        with pytest.raises(ValueError, match="validation and test read the original"):
            held.set_versions(np.zeros(len(other), np.int64))
        x, _ = held.__getitems__(np.arange(len(held)))
        i, t = held._where(np.arange(len(held)))[:2]
        np.testing.assert_array_equal(x[0].numpy(), ff.crop(i[0], int(t[0]), 100))


def test_rhythm_is_stored_for_every_clip_and_equals_the_statistics(made, tmp_path):
    ff = FeatureFile(made / "a.h5", ("mel",))
    assert ff.rhythm.shape == (7, len(RHYTHM_FIELDS)) and ff.rhythm_fields == RHYTHM_FIELDS
    assert np.isfinite(ff.rhythm).all()
    i = int(ff.indices("valid")[0])
    np.testing.assert_allclose(ff.rhythm[i], rhythm_statistics(ff.crop(i, 0, int(ff.n_frames[i])).T, ff.params),
                               rtol=1e-5, atol=1e-6)
    # A file without /rhythm (no mel, or older) reads fine.
    copy = tmp_path / "old.h5"
    shutil.copy(made / "a.h5", copy)
    with h5py.File(copy, "r+") as f:
        del f["rhythm"]
    assert FeatureFile(copy, FEATURES).rhythm is None
    assert store.read_rhythm(copy) is None


def test_a_skipped_clip_has_nan_rhythm_and_skipped_versions(made, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(made / "corpus", corpus)
    table = store.read_table(made / "a.h5")
    row = int(np.flatnonzero(table["split"] == "train")[1])
    find_audio(corpus).path(table["mp3_path"][row]).write_bytes(b"not audio")
    assert run(corpus, tmp_path / "f.h5", "--augment", "2", "--augment-seed", "5") == 0
    got, versions = store.read_rhythm(tmp_path / "f.h5")[0], store.read_versions(tmp_path / "f.h5")
    assert np.isnan(got[row]).all() and np.isfinite(np.delete(got, row, axis=0)).all()
    assert (versions["status"][versions["row"] == row] == -1).all() and (versions["status"] == 1).sum() == 8
    ff = FeatureFile(tmp_path / "f.h5", FEATURES)
    assert len(ff) == 6 and ff.version_frames.shape == (6, 3) and np.isfinite(ff.rhythm).all()


def test_disk_check_counts_the_versions():
    head = store.Header(features=FEATURES, augment=2)
    rooms = np.full(10, 400)
    assert store.nbytes(rooms, head, np.full(20, 480)) == store.nbytes(np.full(30, 445), head) > store.nbytes(rooms, head)
