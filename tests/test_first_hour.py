"""What a new user meets in the first hour: the README's commands, chained as written, and the mistakes
anyone makes (a folder where a file goes, a features file made for another run)."""
import json
from pathlib import Path

import h5py
import pytest

from pipeline import extract
from tests.conftest import tiny_features
from train import run

FAST = ["--epochs", "1", "--crops-per-clip", "1", "--batch", "8", "--quiet"]


@pytest.fixture(scope="module")
def mel_mfcc(tmp_path_factory):
    # what `python pipeline/extract.py --features mel,mfcc` writes: no chroma
    return tiny_features(tmp_path_factory.mktemp("first"), "mel,mfcc", 3)


@pytest.fixture(scope="module")
def cnn2d_run(mel_mfcc, tmp_path_factory):
    # a finished tagging run that the tests below read and never change
    out = tmp_path_factory.mktemp("runs") / "tagging"
    assert run.main(["--features", str(mel_mfcc), "--model", "cnn2d", "--out", str(out), *FAST]) == 0
    return out


def test_the_default_model_trains_on_what_extract_mel_mfcc_wrote(mel_mfcc, tmp_path):
    # The README's headline pair, `extract --features mel,mfcc` then `train/run.py`: shortres takes
    # mel+MFCC+chroma when there is chroma, and the two the file holds when there is not.
    assert run.parse_args(["--features", str(mel_mfcc)]).inputs == ("mel", "mfcc")
    assert run.main(["--features", str(mel_mfcc), "--out", str(tmp_path / "r"), *FAST]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["inputs"] == ["mel", "mfcc"]
    # tags a tiny test split lacks are said in the log, not as a Python warning with its source line
    assert "note: on the test split, " in (tmp_path / "r" / "train.log").read_text()
    # asked for explicitly, a feature the file lacks is still an error naming it
    assert run.main(["--features", str(mel_mfcc), "--inputs", "mel,chroma", "--out", str(tmp_path / "c"), *FAST]) == 2
    assert not (tmp_path / "c").exists()
    # no file to read: the model's own defaults, and the run says the file is missing
    assert run.parse_args(["--features", str(tmp_path / "none.h5")]).inputs == ("mel", "mfcc", "chroma")


def test_a_folder_given_as_the_features_file_is_named(tmp_path, capsys):
    assert run.main(["--features", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "a folder, not a features file" in capsys.readouterr().err


def test_init_takes_the_model_and_inputs_of_its_run(mel_mfcc, cnn2d_run, tmp_path):
    tagging = cnn2d_run
    cfg = run.parse_args(["--task", "metric", "--init", str(tagging), "--features", str(mel_mfcc)])
    assert (cfg.model, cfg.inputs) == ("cnn2d", ("mel",))
    # given, they are the user's (and a mismatch is refused by the run, as before)
    cfg = run.parse_args(["--task", "metric", "--init", str(tagging), "--model", "shortres"])
    assert cfg.model == "shortres"
    assert run.main(["--task", "metric", "--init", str(tagging), "--features", str(mel_mfcc), "--out",
                     str(tmp_path / "m"), *FAST]) == 0


def test_init_refuses_features_made_with_other_settings(mel_mfcc, cnn2d_run, tmp_path, capsys):
    tagging = cnn2d_run
    other = tmp_path / "mel64.h5"
    source = Path(h5py.File(mel_mfcc, "r").attrs["source"])
    assert extract.main(["--data", str(source), "--out", str(other), "--features", "mel", "--n-mels", "64",
                         "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "m"
    assert run.main(["--task", "metric", "--init", str(tagging), "--features", str(other), "--out", str(out),
                     *FAST]) == 2
    err = capsys.readouterr().err
    assert "n_mels=64" in err and "the --init run" in err and "--n-mels 96" in err
    assert not out.exists()  # refused before anything was written


def test_a_checkpoint_saved_twice_is_the_same_bytes(tmp_path):
    # a library index knows its run by best.pt's SHA-256: saving the same weights again must not change it
    import torch

    from train import runfolder

    obj = {"model": torch.nn.Linear(4, 3).state_dict(), "config": {"model": "x"}}
    runfolder.save_checkpoint(obj, tmp_path / "a.pt")
    runfolder.save_checkpoint(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.load(tmp_path / "a.pt", weights_only=False)["config"] == {"model": "x"}


def test_pretrained_refuses_a_folder_that_holds_another_run(cnn2d_run, capsys):
    from train import pretrained

    ours = cnn2d_run
    before = (ours / "best.pt").read_bytes()
    capsys.readouterr()
    assert pretrained.main(["MTT_musicnn", "--out", str(ours)]) == 2
    assert "already holds a tagging run of 'cnn2d'; pass --force" in capsys.readouterr().err
    assert (ours / "best.pt").read_bytes() == before


def test_a_folder_where_a_file_is_to_be_written_is_refused_before_any_work(tmp_path, capsys, fixtures_dir):
    from data.files import atomic_path
    from pipeline import merge
    from train import library, tag

    folder = tmp_path / "pictures"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="a folder"), atomic_path(folder) as tmp:
        tmp.write_text("never")
    assert folder.is_dir() and not any(tmp_path.glob(".*tmp"))
    song = str(sorted(Path(fixtures_dir).glob("*.mp3"))[0])
    for argv, main in ((["tag", song, "--taggram", str(folder)], tag.main),
                       (["export", str(folder)], library.main), (["map", str(folder)], library.main)):
        with pytest.raises(SystemExit) as exc:
            main(argv[1:] if main is tag.main else argv)
        assert exc.value.code == 2 and f"{folder}: a folder; give the name of a file" in capsys.readouterr().err
    assert merge.main([str(folder), str(tmp_path / "s0.h5"), "--force"]) == 2
    assert f"{folder}: a folder" in capsys.readouterr().err


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    import os

    from data.files import Locked, atomic_path, held_lock, temporary_name
    from train import runfolder

    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.{2 ** 31 - 1}.tmp"  # no process has that id (above any pid_max)
    alive = tmp_path / f".last.pt.{os.getppid()}.tmp"  # a running process may still be writing it
    other = tmp_path / f".best.pt.{2 ** 31 - 1}.tmp"  # another file's: left to that file's next write
    for p in (dead, alive, other):
        p.write_bytes(b"part of a checkpoint")
    runfolder.save_checkpoint({"epoch": 1}, target)  # checkpoints sweep; small files leave the folder unread
    assert not dead.exists() and alive.exists() and other.exists() and target.is_file()
    with atomic_path(tmp_path / "best.pt") as tmp:
        assert tmp == temporary_name(tmp_path / "best.pt") and other.exists()
        tmp.write_bytes(b"new")
    # a lock file that is not one of ours (or was just released) is taken; one of a running process is not
    (tmp_path / ".f.h5.lock").write_text("garbage")
    with held_lock(tmp_path / "f.h5", "a test"):
        assert (tmp_path / ".f.h5.lock").read_text() == str(os.getpid())
    (tmp_path / ".f.h5.lock").write_text(str(os.getppid()))
    with pytest.raises(Locked, match=f"a test \\(process {os.getppid()}\\) is writing it"):
        with held_lock(tmp_path / "f.h5", "a test"):
            pass


def test_outputs_that_cannot_be_written_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    import os

    from pipeline import extract
    from train import embed, library, pretrained, run

    plain = tmp_path / "notes.txt"
    plain.write_text("a file where a folder is to be")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # a read-only disk or a folder without permission: access(2) says so even to root
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    cases = [(run.main, ["--out", str(plain)], f"--out {plain}: a file, not a folder"),
             (run.main, ["--out", str(plain / "run")], f"{plain} is a file, not a folder"),
             (run.main, ["--out", str(locked / "a" / "run")], f"cannot write in {locked}"),
             (embed.main, ["--run", str(tmp_path), "--out", str(plain)], "a file, not a folder"),
             (embed.main, ["--run", str(locked)],  # its default output, in the run folder
              f"the output folder (--out) {locked / 'embed-features-test'}: cannot write in {locked}"),
             (pretrained.main, ["MTT_musicnn", "--out", str(locked / "p")], f"cannot write in {locked}"),
             (extract.main, ["--out", str(locked / "f.h5")], f"--out {locked / 'f.h5'}: cannot write in {locked}"),
             (extract.main, ["--out", str(plain / "f.h5")], f"{plain} is a file, not a folder"),
             (library.main, ["index", str(tmp_path), "--out", str(locked / "l.h5")], f"cannot write in {locked}"),
             (library.main, ["export", str(locked / "t.csv")], f"cannot write in {locked}")]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "notes.txt"] and not any(locked.iterdir())


def test_extract_without_data_takes_the_demo_corpus_the_user_made(tmp_path, monkeypatch, capsys):
    # `python data/demo.py --clips N` (N not the default), then `python pipeline/extract.py --features mel,mfcc`
    from data import demo

    root = tmp_path / "demo"
    demo.generate(root, n_clips=16, seconds=3.5, seed=0, workers=1, progress=False)
    marker = (root / demo.MARKER).stat().st_mtime_ns
    monkeypatch.setattr(extract, "DEMO_ROOT", root)
    out = tmp_path / "f.h5"
    assert extract.main(["--features", "mel,mfcc", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert (root / demo.MARKER).stat().st_mtime_ns == marker
    assert Path(h5py.File(out, "r").attrs["source"]) == root.resolve()
    # something else in the demo's folder: one line naming it, no traceback
    monkeypatch.setattr(extract, "DEMO_ROOT", tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a corpus")
    capsys.readouterr()
    assert extract.main(["--features", "mel", "--out", str(tmp_path / "g.h5"), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no --data given" in err and "not an empty folder nor a demo corpus" in err and "Traceback" not in err


def test_a_missing_or_broken_file_reserves_next_to_nothing(tmp_path):
    # A partial MTAT download (thousands of MP3s missing) must not make a features file of 19 MB per
    # missing clip, nor be refused by the disk-space check.
    from tests.conftest import make_corpus

    names = make_corpus(tmp_path / "c", per_folder=2)
    mp3 = tmp_path / "c" / "mp3"
    (mp3 / names[1]).unlink()
    (mp3 / names[3]).write_bytes((mp3 / names[3]).read_bytes()[:300])  # truncated
    (mp3 / names[5]).write_text("not audio at all")
    out = tmp_path / "f.h5"
    assert extract.main(["--data", str(tmp_path / "c"), "--out", str(out), "--features", "mel", "--workers", "0",
                         "--quiet", "--split", "standard"]) == 0
    with h5py.File(out, "r") as f:
        ids = [p.decode() if isinstance(p, bytes) else p for p in f["mp3_path"][:]]
        room, status = f["room"][:], f["status"][:]
    rows = {n: ids.index(n) for n in (names[1], names[3], names[5]) if n in ids}
    assert rows, "the broken clips are rows of the file"
    for n, r in rows.items():
        assert status[r] != 1 and room[r] < 40, (n, room[r])  # 40 frames: 0.64 s
    good = status == 1
    assert good.any() and (room[good] >= 200).all()  # real clips keep their 3.5-5.5 s of room


def test_a_small_test_split_gets_intervals_in_range_and_the_recall_cut_offs_it_has(tmp_path, capsys):
    import numpy as np

    from eval import auc, recall

    # the basic bootstrap reflects the resamples around the estimate: on 10 clips it crossed 0
    r = np.random.default_rng(0)
    y, s = (r.random((10, 6)) < 0.15).astype(np.int8), r.random((10, 6))
    ci = auc.macro_ci(s, y, n_boot=200)
    assert all(0.0 <= lo <= hi <= 1.0 for lo, hi in (ci["roc_auc"], ci["pr_auc"]))
    assert ci["pr_auc"][0] == 0.0  # where the reflection fell below it
    diff = auc.macro_ci(s, y, other=r.random((10, 6)), n_boot=200)
    assert all(-1.0 <= lo <= hi <= 1.0 for lo, hi in (diff["roc_auc"], diff["pr_auc"]))
    # `python eval/recall.py RUN/embeddings.npy`, as the trainer's last line says, on a 6-clip test split
    np.save(tmp_path / "embeddings.npy", r.standard_normal((6, 4)).astype(np.float32))
    np.save(tmp_path / "labels.npy", (r.random((6, 50)) < 0.3).astype(np.int8))
    assert recall.main([str(tmp_path / "embeddings.npy"), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["recall"]) == ["1", "2", "4"]
    with pytest.raises(SystemExit):  # asked for, K=8 is still an error that names it
        recall.main([str(tmp_path / "embeddings.npy"), "--k", "1,8"])
    assert "K=8 is larger than N-1=5" in capsys.readouterr().err


def test_small_things_a_new_user_notices(cnn2d_run, tmp_path, capsys):
    import matplotlib.pyplot as plt

    from train import report
    from train.plots import save_figure

    # a picture is written in the format its name asks for
    for name, magic in (("t.jpg", b"\xff\xd8"), ("t.png", b"\x89PNG"), ("t.svg", b"<?xml"), ("t", b"\x89PNG")):
        save_figure(plt.figure(), tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(magic), name
    # report.py given one run folder reports that run
    capsys.readouterr()
    assert report.main([str(cnn2d_run), "--no-ci"]) == 0
    assert f"| {cnn2d_run.name} | tagging |" in capsys.readouterr().out


def test_against_refuses_embeddings_of_other_clips(tmp_path, capsys):
    import numpy as np

    from eval import auc, recall

    r = np.random.default_rng(1)
    for name, ids in (("a", [3, 1, 2, 5, 4, 6]), ("b", [1, 2, 3, 4, 5, 6]), ("c", [3, 1, 2, 5, 4, 6])):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "embeddings.npy", r.standard_normal((6, 4)).astype(np.float32))
        np.save(tmp_path / name / "predictions.npy", r.random((6, 50)).astype(np.float32))
        np.save(tmp_path / name / "labels.npy", (r.random((6, 50)) < 0.4).astype(np.int8))
        np.save(tmp_path / name / "clip_ids.npy", np.array(ids))
    a, b, c = (str(tmp_path / x / "embeddings.npy") for x in "abc")
    for main, f in ((recall.main, "embeddings.npy"), (auc.main, "predictions.npy")):
        with pytest.raises(SystemExit):  # the same clips in another order: the pairs would be wrong
            main([a.replace("embeddings.npy", f), "--against", b.replace("embeddings.npy", f), "--boot", "50"])
        assert "are not those of" in capsys.readouterr().err
        assert main([a.replace("embeddings.npy", f), "--against", c.replace("embeddings.npy", f), "--boot", "50"]) == 0


def test_a_rank_that_resolved_other_defaults_than_rank_0_is_refused(monkeypatch):
    from train import dist, loop
    from train.runfolder import RunError

    cfg = run.parse_args(["--model", "cnn2d", "--inputs", "mel"])
    loop.agree_with_rank0(cfg)  # alone, or agreeing: nothing to say
    monkeypatch.setattr(dist, "broadcast", lambda value: ("shortres", ("mel", "mfcc", "chroma")))
    with pytest.raises(RunError, match="rank 0 shortres on mel,mfcc,chroma"):
        loop.agree_with_rank0(cfg)


@pytest.mark.parametrize("argv, message", [
    (["--margin", "0.2"], "--margin: for --task metric"),
    (["--task", "metric", "--loss", "contrastive", "--mining", "hard"], "--mining: for the triplet loss"),
    (["--task", "metric", "--loss", "contrastive", "--negatives", "disjoint", "--margin", "0.1"],
     "--margin, --negatives: for the triplet loss"),
    (["--task", "metric", "--mining", "hard", "--temperature", "0.2"], "--temperature: for --loss contrastive"),
    (["--task", "metric", "--sampler", "tag"], "add --mining none, or use --sampler overlap"),
    (["--task", "metric", "--backbone-lr", "0.5", "--start", "random"],
     "--backbone-lr, --start: for a metric run started from a tagging run (--init RUN)"),
])
def test_an_option_that_would_change_nothing_is_refused(argv, message, capsys):
    # A sweep over --mining, --negatives or --margin under the contrastive loss gave byte-identical runs,
    # each recorded in config.json as if the option had taken effect.
    with pytest.raises(SystemExit):
        run.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_triplet_option_asks_for_the_triplet_loss():
    assert run.parse_args(["--task", "metric"]).loss == "contrastive"
    for extra in (["--mining", "hard"], ["--margin", "0.2"], ["--negatives", "disjoint"]):
        assert run.parse_args(["--task", "metric", *extra]).loss == "triplet", extra
    assert run.parse_args(["--task", "metric", "--sampler", "tag", "--mining", "none"]).sampler == "tag"


def test_a_one_clip_validation_split_picks_the_best_epoch_by_its_loss(tmp_path):
    """No validation tag has a positive and a negative clip: ROC-AUC is NaN, and the run still finishes."""
    import torch

    feats = tiny_features(tmp_path, "mel", 1)  # gct634: 5 training clips, 1 validation, 1 test
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--epochs", "2", "--batch", "4", "--quiet",
                     "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    losses = [h["val_loss"] for h in torch.load(out / "last.pt", weights_only=False)["history"]]
    assert m["best_epoch"] == 1 + losses.index(min(losses))


def test_a_crop_shorter_than_the_network_takes_is_refused_before_the_run_folder(mel_mfcc, tmp_path, capsys):
    out = tmp_path / "r"
    assert run.main(["--features", str(mel_mfcc), "--model", "cnn2d", "--seconds", "1", "--out", str(out),
                     *FAST]) == 2
    err = capsys.readouterr().err
    assert "a crop of 62 frames is shorter than the 180 --model cnn2d takes; give --seconds 2.88 or more" in err
    assert not out.exists()
    assert run.main(["--features", str(mel_mfcc), "--model", "cnn2d", "--seconds", "2.88", "--out", str(out),
                     *FAST]) == 0
    # and one longer than a network of fixed-length patches takes, or features it cannot take
    for task in ("tagging", "metric"):
        assert run.main(["--features", str(mel_mfcc), "--task", task, "--model", "musicnn_vgg", "--seconds", "3.3",
                         "--out", str(tmp_path / "v"), *FAST]) == 2
        err = capsys.readouterr().err
        assert "is longer than the 193 --model musicnn_vgg takes; give --seconds 3.08 or less" in err
    few_bands = tiny_features(tmp_path, "mel", 1, "--n-mels", "40", name="m40.h5")
    assert run.main(["--features", str(few_bands), "--model", "cnn2d", "--out", str(tmp_path / "m40"), *FAST]) == 2
    assert f"--model cnn2d on {few_bands}: " in capsys.readouterr().err
    assert not (tmp_path / "v").exists() and not (tmp_path / "m40").exists()


def test_feature_file_from_a_notebook(mel_mfcc):
    import numpy as np

    from train.feed import FeatureFile, FeedError

    ff = FeatureFile(mel_mfcc, "mel,mfcc")  # as --inputs spells it
    assert ff.features == ("mel", "mfcc") and ff.bins == 96 + 20
    with pytest.raises(FeedError, match="each at most once"):
        FeatureFile(mel_mfcc, ("mel", "mel"))
    n = int(ff.n_frames[0])
    np.testing.assert_array_equal(ff.crop(0, n - 4, 4), ff.crop(0, 0, n)[:, -4:])
    for start, length in ((n - 3, 4), (-2, 4), (0, n + 1)):  # past the end lie the next clip's frames
        with pytest.raises(IndexError, match=f"frames {start}:{start + length} of clip 0"):
            ff.crop(0, start, length)


def test_resume_takes_the_same_features_file_by_another_name(mel_mfcc, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "r"
    monkeypatch.chdir(mel_mfcc.parent)  # started with a relative name...
    assert run.main(["--features", mel_mfcc.name, "--model", "cnn2d", "--out", str(out), *FAST]) == 0
    monkeypatch.chdir(tmp_path)  # ...resumed from another folder, by another name: the same file
    more = ["--model", "cnn2d", "--out", str(out), *FAST[2:], "--epochs", "2", "--resume"]
    assert run.main(["--features", str(mel_mfcc), *more]) == 0
    other = tmp_path / "copy.h5"
    shutil.copy(mel_mfcc, other)  # another file with the same contents is another file
    capsys.readouterr()
    assert run.main(["--features", str(other), *more[:-3], "--epochs", "3", "--resume"]) == 2
    assert "other settings (features)" in capsys.readouterr().err


def test_the_front_end_takes_numpy_from_a_notebook():
    import numpy as np
    import torch

    from features.frontend import FrontEnd

    fe = FrontEnd(("mel", "mfcc"))
    y = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32)
    got, want = fe(y, [16000, 8000]), fe(torch.from_numpy(y), torch.tensor([16000, 8000]))
    assert all(torch.equal(got[k], want[k]) for k in want) and got["n_frames"].tolist() == [63, 32]


@pytest.mark.parametrize("argv, message", [
    (["--task", "metric", "--batch", "3"], "--batch 3: a metric batch holds groups of 4 clips"),
    (["--task", "metric", "--sampler", "instance", "--negatives", "disjoint"], "has negatives of its own"),
])
def test_metric_batches_and_negatives_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_run_resumes_without_the_options_it_never_used():
    # Runs made before options were refused where they change nothing recorded them; they resume without them.
    from train.config import RunConfig
    from train.runfolder import _differs

    def identity(*argv):
        return run.parse_args(["--features", "f.h5", *argv]).identity()

    old = dict(identity("--task", "metric"), margin=0.5, mining="hard")  # contrastive: never used them
    new = identity("--task", "metric")
    assert not [k for k in new if _differs(k, old, new)]
    old = dict(identity(), dim=64, sampler="tag")  # a tagging run: never used the metric options
    assert not [k for k in identity() if _differs(k, old, identity())]
    old = dict(identity("--task", "metric", "--mining", "hard"), sampler="tag")  # mined: tag was overlap
    assert not [k for k in old if _differs(k, old, identity("--task", "metric", "--mining", "hard"))]
    old = identity("--task", "metric", "--mining", "hard")  # overlap, mined; the course's sampled tag triplets:
    new = identity("--task", "metric", "--sampler", "tag", "--mining", "none")
    assert {"sampler", "mining"} <= set(k for k in new if _differs(k, old, new))
    old = identity("--task", "metric", "--margin", "0.3")  # a triplet run: its margin counts
    new = identity("--task", "metric", "--margin", "0.2")
    assert [k for k in new if _differs(k, old, new)] == ["margin"]
    assert RunConfig.from_dict(new).identity() == new


def test_init_reads_only_a_tagging_run_of_a_known_network(tmp_path):
    from features.params import FeatureParams
    from train import runfolder

    for cfg in ({"task": "metric", "model": "linear"}, {"task": "tagging", "model": "gone"}):
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        assert run.started_from(tmp_path) == {}
    # a run on musicnn's taggram beside the mel has no settings of its own to compare
    runfolder.check_params(tmp_path, {"feature_params": FeatureParams().as_dict(), "inputs": ["mel", "musicnn"]},
                           FeatureParams(), tmp_path / "f.h5")


def test_a_second_extraction_to_the_same_file_waits_its_turn(tmp_path, capsys):
    # Two at once: the second took the first's locked .part for a broken one and deleted it, and the first
    # renamed the second's half-written file to OUT, which then said it was complete.
    import subprocess
    import sys

    from tests.conftest import make_corpus

    make_corpus(tmp_path / "c", per_folder=1)
    out = tmp_path / "f.h5"
    argv = ["--data", str(tmp_path / "c"), "--out", str(out), "--features", "mel", "--workers", "0", "--quiet"]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".f.h5.lock").write_text(str(alive.pid))  # a running extraction holds it
        assert extract.main(argv) == 2
        assert f"another extraction (process {alive.pid}) is writing it" in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / "f.h5.part").exists()
    finally:
        alive.kill()
        alive.wait()
    assert extract.main(argv) == 0  # a lock left by a process that is gone is taken over
    assert out.is_file() and not (tmp_path / ".f.h5.lock").exists()


def test_tag_takes_a_long_file_a_batch_of_crops_at_a_time(cnn2d_run, monkeypatch, fixtures_dir):
    # All crops at once, a 12-minute file took 4.8 GB in train/tag.py; in batches, 1.0 GB (the same scores)
    import numpy as np

    from tests.conftest import MTAT_MP3
    from train import tag

    model, frontend, mean, std, frames, _ = tag.load_run(cnn2d_run)
    monkeypatch.setattr(tag, "CROPS", 10_000)
    whole, starts, n = tag.taggram(MTAT_MP3, model, frontend, mean, std, frames, tail=True)
    monkeypatch.setattr(tag, "CROPS", 2)
    batched, starts2, n2 = tag.taggram(MTAT_MP3, model, frontend, mean, std, frames, tail=True)
    assert len(whole) > 4 and n == n2 and np.array_equal(starts, starts2)
    np.testing.assert_allclose(batched, whole, atol=1e-6)


def test_an_annotation_file_with_a_clip_twice_or_a_row_short_is_named(tmp_path):
    from data.mtat import DatasetError, read_annotations
    from tests.conftest import TAGS, write_csv

    tags = ["1"] + ["0"] * (len(TAGS) - 1)
    good = [["1", *tags, "a/x-1.mp3"], ["2", *tags, "b/y-2.mp3"], ["3", *tags, "c/z-3.mp3"]]
    write_csv(tmp_path / "a.csv", good)
    assert len(read_annotations(tmp_path / "a.csv", "standard")) == 3
    cases = {"the same clip twice": (good + [good[1]], "clip_id 2 is on rows 3 and 5; each clip once"),
             "one path twice": (good + [["4", *tags, "a/x-1.mp3"]], "mp3_path 'a/x-1.mp3' is on rows 2 and 5"),
             "an empty path": (good + [["5", *tags, ""]], "row 5 has no mp3_path")}
    for name, (rows, message) in cases.items():
        write_csv(tmp_path / "b.csv", rows)
        with pytest.raises(DatasetError, match=message):
            read_annotations(tmp_path / "b.csv", "standard")
    (tmp_path / "c.csv").write_text((tmp_path / "a.csv").read_text().replace("\t", ","))
    with pytest.raises(DatasetError, match="one column only; the annotation file is tab-separated"):
        read_annotations(tmp_path / "c.csv")


def test_taggrams_of_several_songs_get_a_name_each():
    from train.tag import taggram_path

    taken, base = set(), Path("out/tg.jpg")
    names = [taggram_path(base, Path(p), 3, taken) for p in ("a/song.wav", "b/song.wav", "a/song.ogg")]
    assert [n.name for n in names] == ["tg_song.jpg", "tg_song_2.jpg", "tg_song_3.jpg"]
    long = taggram_path(base, Path("x" * 300 + ".mp3"), 2, taken)
    assert long.name == f"tg_{'x' * 100}.jpg"  # a name the file system takes
    assert taggram_path(base, Path("a/song.wav"), 1) == base


def test_tag_says_when_a_file_is_shorter_than_a_crop(cnn2d_run, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from train import tag

    sf.write(tmp_path / "short.wav", (0.3 * np.sin(np.arange(3200) * 0.17)).astype(np.float32), 16000)
    capsys.readouterr()
    assert tag.main([str(tmp_path / "short.wav"), "--run", str(cnn2d_run), "--taggram", str(tmp_path / "t.png")]) == 0
    assert "short.wav lasts 0.2 s, less than the 3.0 s the network hears at once" in capsys.readouterr().err
    assert (tmp_path / "t.png").is_file()
