"""Sharded extraction (extract.py --shard / torchrun's RANK, WORLD_SIZE) and merging (merge.py)."""
import shutil

import h5py
import numpy as np
import pytest

from pipeline import extract, merge, store
from tests.conftest import die_after_writes, make_corpus
from train.feed import FeatureFile, FeedError

FEATURES = ("mel", "mfcc", "chroma")
ARGS = ["--features", ",".join(FEATURES), "--workers", "0", "--batch", "3", "--quiet"]


def run(corpus, out, *extra):
    return extract.main([*ARGS, "--data", str(corpus), "--out", str(out), *extra])


def read_all(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A corpus, its unsharded features and its two shards (every row of 0/2 and 1/2)."""
    root = tmp_path_factory.mktemp("shard")
    make_corpus(root / "corpus", per_folder=2)
    assert run(root / "corpus", root / "full.h5") == 0
    for k in range(2):
        assert run(root / "corpus", root / "shards" / "part-{index}-of-{count}.h5", "--shard", f"{k}/2") == 0
    return root


def shards(made):
    return [made / "shards" / f"part-{k}-of-2.h5" for k in range(2)]


def test_two_shards_merged_equal_one_run(made, tmp_path, capsys):
    s0, s1 = shards(made)
    out = tmp_path / "merged.h5"
    assert merge.main([str(out), str(s1), str(s0)]) == 0  # any order
    text = capsys.readouterr().out
    assert "beside merged.h5" in text and "total 14 of 14" in text
    full, attrs_full = read_all(made / "full.h5")
    got, attrs_got = read_all(out)
    assert full.keys() == got.keys()
    for k in full:  # clips, labels, splits, tables and every feature value, through h5py
        np.testing.assert_array_equal(got[k], full[k], err_msg=k)
    names = [str(n) for n in attrs_got.pop("shards")]  # relative to the merged file's folder
    assert not any(n.startswith("/") for n in names)
    assert [(out.parent / n).resolve() for n in names] == [s0.resolve(), s1.resolve()]
    assert attrs_got == attrs_full
    with h5py.File(out, "r") as f:
        assert all(f[name].is_virtual for name in FEATURES)
    # Each shard holds its contiguous block, starting at frame 0 of its own file.
    t0, t1 = store.read_table(s0), store.read_table(s1)
    np.testing.assert_array_equal(np.concatenate([t0["clip_id"], t1["clip_id"]]), full["clip_id"])
    assert t1["frame_start"][0] == 0 and store.header(s1).shard == "1/2" and store.header(out).shard == ""
    assert store.read_part(s1) == store.Part(store.read_part(s1).annotations, store.read_part(out).sha256, 14, 7, 14)
    # The feed reads the merged file from the shards' own maps, crossing their chunk boundaries.
    fa, fb = FeatureFile(made / "full.h5", FEATURES), FeatureFile(out, FEATURES)
    assert [p.resolve() for p in fb.files] == [s0.resolve(), s1.resolve()] and fa.files == [made / "full.h5"]
    crossing = 0
    for i in range(len(fa)):
        n = int(fa.n_frames[i])
        np.testing.assert_array_equal(fb.crop(i, 0, n), fa.crop(i, 0, n))
        which, first, table = fb._reads[0]
        C = table[which[i]][2]
        crossing += first[i] // C != (first[i] + n - 1) // C
    assert crossing > 0
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(fa), 20):
        t = int(rng.integers(0, fa.n_frames[i] - 50))
        np.testing.assert_array_equal(fb.crop(i, t, 50), fa.crop(i, t, 50))
    for k in ("clip_id", "split", "labels", "n_frames", "frame_start"):
        np.testing.assert_array_equal(getattr(fb, k), getattr(fa, k))


def test_merged_file_moves_with_its_shards_and_is_refused_without_them(made, tmp_path):
    folder = tmp_path / "a"
    shutil.copytree(made / "shards", folder)
    assert merge.main([str(folder / "merged.h5"), *map(str, sorted(folder.glob("part-*.h5"))), "--quiet"]) == 0
    moved = tmp_path / "b"
    folder.rename(moved)  # the folder as a whole: relative names still hold
    ref = FeatureFile(made / "full.h5", ("mel",))
    ff = FeatureFile(moved / "merged.h5", ("mel",))
    np.testing.assert_array_equal(ff.crop(3, 10, 40), ref.crop(3, 10, 40))
    (moved / "part-1-of-2.h5").unlink()
    with pytest.raises(store.StoreError, match="part-1-of-2.h5 is missing"):
        store.header(moved / "merged.h5")
    with pytest.raises(FeedError, match="shard .*part-1-of-2.h5 is missing"):
        FeatureFile(moved / "merged.h5", ("mel",))


@pytest.mark.parametrize("spec", ["3/2", "0/0", "x", "1", "-1/2", "2/2", "1/two"])
def test_bad_shard_argument_exit_2(spec, capsys):
    with pytest.raises(SystemExit) as exc:
        extract.main(["--shard", spec])
    assert exc.value.code == 2 and "argument --shard" in capsys.readouterr().err


def test_rank_and_world_size_pick_the_shard(made, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    args = extract.parse_args(["--out", str(tmp_path / "f.h5")])
    assert args.shard == (1, 2) and args.out == tmp_path / "f-1-of-2.h5"  # every rank has the same --out
    assert args.workers == max(1, (extract.os.cpu_count() or 1) // 2)
    assert extract.parse_args(["--shard", "0/3"]).shard == (0, 3)  # the argument wins
    assert extract.parse_args(["--out", "x-{index}.h5"]).out.name == "x-1.h5"
    assert run(made / "corpus", tmp_path / "f.h5") == 0
    a, attrs_a = read_all(shards(made)[1])
    b, attrs_b = read_all(tmp_path / "f-1-of-2.h5")
    assert attrs_a == attrs_b
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert extract.parse_args([]).shard is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(SystemExit) as exc:
        extract.parse_args([])
    assert exc.value.code == 2 and "RANK and WORLD_SIZE" in capsys.readouterr().err


def test_killed_shard_resumes_and_is_never_another_shard(made, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s1.h5"
    die_after_writes(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run(made / "corpus", out, "--shard", "1/2")
    monkeypatch.undo()
    part = tmp_path / "s1.h5.part"
    assert part.exists() and not out.exists()
    assert merge.main([str(tmp_path / "m.h5"), str(shards(made)[0]), str(out)]) == 2
    assert "s1.h5: not finished" in capsys.readouterr().err
    for other in (["--shard", "0/2"], []):  # never resumed as another shard, nor as the whole list
        assert run(made / "corpus", out, *other) == 2
        assert "partial run with other settings (shard)" in capsys.readouterr().err
    assert run(made / "corpus", out, "--shard", "1/2") == 0
    assert "resumed    3 clips were already done" in capsys.readouterr().out
    a, b = read_all(shards(made)[1]), read_all(out)
    assert a[1] == b[1]
    for k in a[0]:
        np.testing.assert_array_equal(b[0][k], a[0][k], err_msg=k)
    assert run(made / "corpus", out, "--shard", "0/2") == 2  # a finished shard is not redone as another
    assert "other settings (shard)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def odd(made, tmp_path_factory):
    """Shard files that do not fit ``made``'s: other settings, another count, a changed annotation file."""
    root = tmp_path_factory.mktemp("odd")
    assert run(made / "corpus", root / "f16-1.h5", "--shard", "1/2", "--dtype", "float16") == 0
    assert run(made / "corpus", root / "third-1.h5", "--shard", "1/3") == 0
    # Same root and settings, but a label changed in the annotation file between the two shards.
    corpus = root / "corpus"
    shutil.copytree(made / "corpus", corpus)
    assert run(corpus, root / "ann-0.h5", "--shard", "0/2") == 0
    csv = corpus / "annotations_final.csv"
    csv.write_text(csv.read_text().replace('"1000","0"', '"1000","1"', 1))
    assert run(corpus, root / "ann-1.h5", "--shard", "1/2") == 0
    return root


@pytest.mark.parametrize("case,message", [
    ("missing", "missing 1/2 (clips 7-13 of 14)"),
    ("overlap", "part-0-of-2.h5: shard 0/2 overlaps"),
    ("settings", "f16-1.h5: made with other settings than"),
    ("count", "third-1.h5: shard 1/3, one of 3 parts"),
    ("annotations", "ann-1.h5: made from another annotation file"),
    ("unsharded", "full.h5: not a shard"),
    ("exists", "merged.h5: already exists; pass --force"),
    ("into a shard", "OUT is one of the shards"),
])
def test_bad_shard_lists_exit_2(made, odd, tmp_path, case, message, capsys):
    s0, s1 = map(str, shards(made))
    out = tmp_path / "merged.h5"
    given = {"missing": [s0], "overlap": [s0, s1, s0], "settings": [s0, str(odd / "f16-1.h5")],
             "count": [s0, str(odd / "third-1.h5")],
             "annotations": [str(odd / "ann-0.h5"), str(odd / "ann-1.h5")],
             "unsharded": [str(made / "full.h5"), s1], "exists": [s0, s1], "into a shard": [s0, s1]}[case]
    if case == "exists":
        out.write_text("keep me")
    target = s1 if case == "into a shard" else str(out)
    assert merge.main([target, *given]) == 2
    assert message in capsys.readouterr().err
    assert (out.read_text() == "keep me") if case == "exists" else not out.exists()
    if case == "exists":
        assert merge.main([str(out), *given, "--force", "--quiet"]) == 0
        assert store.header(out).shard == ""


def test_more_shards_than_clips_exit_2(made, tmp_path, capsys):
    assert run(made / "corpus", tmp_path / "f.h5", "--shard", "0/15") == 2
    assert "has only 14 clips" in capsys.readouterr().err
