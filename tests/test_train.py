import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import extract, store
from tests.conftest import MSD_MP3, MTAT_MP3, tiny_features
from train import loop, run, runfolder, tag
from train.feed import Crops, FeatureFile, FeedError, standardizer

REPO = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "2", "--crops-per-clip", "1", "--batch", "8", "--quiet"]


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return tiny_features(tmp_path_factory.mktemp("train"), "mel,mfcc,chroma", 4)


def test_memmap_crops_equal_h5py(feats):
    ff = FeatureFile(feats, ("mel", "chroma"))
    with h5py.File(feats, "r") as f:
        for i in (0, 5, len(ff) - 1):
            row = ff.rows[i]
            ref = np.concatenate([store.read_clip(f, "mel", row)[7:107], store.read_clip(f, "chroma", row)[7:107]],
                                 axis=1).T
            np.testing.assert_array_equal(ff.crop(i, 7, 100), ref)
        # Whole clips, some of which cross a chunk boundary (read in two pieces).
        crossing = 0
        for i in range(len(ff)):
            n, start = int(ff.n_frames[i]), int(ff.frame_start[i])
            crossing += start // store.CHUNK_FRAMES != (start + n - 1) // store.CHUNK_FRAMES
            np.testing.assert_array_equal(ff.crop(i, 0, n)[:96], store.read_clip(f, "mel", ff.rows[i]).T)
        assert crossing > 0
    assert ff.bins == 96 + 12 and set(ff.split) == {"train", "valid", "test"}


def test_crop_modes(feats):
    ff = FeatureFile(feats, ("mel",))
    idx = ff.indices("train")
    mean, std = standardizer(ff, idx)
    assert mean.shape == (96,) and (std > 0).all()
    length = 100
    fixed = Crops(ff, idx, length, mean, std, "fixed")
    i = idx[0]
    mid = (ff.n_frames[i] - length) // 2
    np.testing.assert_allclose(fixed[0][0].numpy(), (ff.crop(i, mid, length) - mean[:, None]) / std[:, None])
    np.testing.assert_array_equal(fixed[0][1].numpy(), ff.labels[i])
    rand = Crops(ff, idx, length, mean, std, "random")
    torch.manual_seed(1)
    a = [rand[k][0] for k in range(len(idx))]
    torch.manual_seed(1)
    b = [rand[k][0] for k in range(len(idx))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # reproducible from torch's seed
    assert not all(torch.equal(rand[0][0], rand[0][0]) for _ in range(5))  # but random
    chunks = Crops(ff, idx, length, mean, std, "chunks")
    assert len(chunks) == int((ff.n_frames[idx] // length).sum())
    assert np.array_equal(np.bincount(chunks.clip_of), ff.n_frames[idx] // length)
    k = int(np.flatnonzero(chunks.clip_of == 2)[1])  # second crop of the third clip
    np.testing.assert_allclose(chunks[k][0].numpy(),
                               (ff.crop(idx[2], length, length) - mean[:, None]) / std[:, None])
    values = np.random.default_rng(0).standard_normal((len(chunks), 3)).astype(np.float32)
    ref = np.stack([values[chunks.clip_of == c].mean(axis=0) for c in range(len(idx))])
    np.testing.assert_allclose(chunks.per_clip(values), ref, rtol=1e-5, atol=1e-6)
    assert fixed.per_clip(values) is values  # items are clips already


def test_workers_read_the_memmap(feats):
    ff = FeatureFile(feats, ("mel",))
    idx = ff.indices("train")
    mean, std = standardizer(ff, idx)
    ds = Crops(ff, idx, 100, mean, std, "fixed")
    ff.crop(0, 0, 10)  # the parent has mapped the file already; workers must map their own
    got = torch.cat([x for x, _ in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=Crops.collate)])
    ref = torch.stack([ds[k][0] for k in range(len(ds))])
    assert torch.equal(got, ref)


def test_crop_longer_than_clip(feats):
    ff = FeatureFile(feats, ("mel",))
    with pytest.raises(FeedError, match=r"a crop of 1000 frames is longer than .* clip\(s\)"):
        Crops(ff, ff.indices("train"), 1000, np.zeros(96, np.float32), np.ones(96, np.float32))


def test_training_lowers_the_loss_and_writes_the_run(feats, tmp_path):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(out), "--epochs", "4",
                     "--crops-per-clip", "2", "--batch", "8", "--quiet"]) == 0
    hist = torch.load(out / "last.pt", weights_only=False)["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] < 0.75
    for name in ("config.json", "metrics.json", "best.pt", "train.log", "predictions.npy", "embeddings.npy",
                 "labels.npy", "clip_ids.npy", "tags.json", "curves.png", "tag_roc_auc.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    pred, labels = np.load(out / "predictions.npy"), np.load(out / "labels.npy")
    assert pred.shape == labels.shape == (len(np.load(out / "clip_ids.npy")), 50)
    assert ((pred > 0) & (pred < 1)).all() and 0 <= m["test_roc_auc"] <= 1 and 0 <= m["data_wait_mean"] < 1
    assert len(m["test_per_tag"]) == 50 and "test_recall@1" in m
    res = subprocess.run([sys.executable, "eval/recall.py", str(out / "embeddings.npy"), "--k", "1,2"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_resume_equals_uninterrupted(feats, tmp_path):
    base = ["--features", str(feats), "--model", "baseline", *FAST]
    assert run.main([*base, "--out", str(tmp_path / "full"), "--epochs", "3"]) == 0
    assert run.main([*base, "--out", str(tmp_path / "cut"), "--epochs", "2"]) == 0
    assert run.main([*base, "--out", str(tmp_path / "cut"), "--epochs", "3", "--resume"]) == 0
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert [h["epoch"] for h in cut["history"]] == [1, 2, 3]
    for a, b in zip(full["history"], cut["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    for k in full["model"]:
        torch.testing.assert_close(full["model"][k], cut["model"][k])


def test_metric_learning_runs(feats, tmp_path, capsys):
    from eval.bootstrap import mean_ci
    from eval.recall import recall_at_k
    from train import embed, report

    for model, mining, distance in (("linear", "none", "euclidean"), ("cnn2d", "semihard", "cosine")):
        out = tmp_path / model
        assert run.main(["--features", str(feats), "--task", "metric", "--model", model, "--mining", mining,
                         "--distance", distance, "--out", str(out), *FAST]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert 0 <= m["test_recall@1"] <= m["test_recall@2"] <= 1
        # the scores, report.py's intervals and both "evaluate again" hints use the run's distance
        emb, y = np.load(out / "embeddings.npy"), np.load(out / "labels.npy")
        ks = [k for k in (1, 2, 4, 8) if k < len(emb)]
        ref = recall_at_k(emb, y, ks=ks, metric=distance)
        assert m["test_recall@1"] == pytest.approx(ref["recall"][1], abs=1e-12)
        got = report.intervals(out, n_boot=100)
        for k, c in zip(ks, mean_ci(ref["per_query"], 100)):
            assert got[f"test_recall@{k}"] == pytest.approx((c["low"], c["high"]), abs=1e-12)
        assert embed.main(["--run", str(out), "--features", str(feats), "--out", str(out / "e")]) == 0
        hints = [line for line in capsys.readouterr().out.splitlines() if "python eval/recall.py" in line]
        assert len(hints) == 2 and all(h.endswith("--metric euclidean") == (distance == "euclidean") for h in hints)
        assert np.load(out / "embeddings.npy").shape[1] == 128 and not (out / "predictions.npy").exists()
        assert "tag_head.weight" in torch.load(out / "best.pt", weights_only=False)["model"]


@pytest.mark.parametrize("sampler", ["overlap", "instance"])
def test_contrastive_metric_run(feats, tmp_path, sampler):
    out = tmp_path / "c"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "cnn2d", "--loss", "contrastive",
                     "--sampler", sampler, "--temperature", "0.2", "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["test_recall@1"] <= m["test_recall@2"] <= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["loss"] == "contrastive" and cfg["temperature"] == 0.2


def test_backbone_lr_is_a_second_parameter_group(feats, tmp_path):
    from train.loop import optimiser
    from train.models import build_embedding_model

    model = build_embedding_model("cnn2d", 128, n_tags=50)
    base = ["--features", str(feats), "--task", "metric", "--model", "cnn2d", "--lr", "0.002"]
    cfg = run.parse_args([*base, "--init", "x", "--backbone-lr", "0.1"])
    opt, _ = optimiser(cfg, model)
    head, backbone = opt.param_groups
    assert backbone["lr"] == pytest.approx(2e-4) and head["lr"] == pytest.approx(2e-3)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))
    import dataclasses

    opt, _ = optimiser(dataclasses.replace(cfg, init=None), model)  # no --init (run.py refuses the option): one group
    assert len(opt.param_groups) == 1


def test_backbone_lr_0_freezes_the_backbone(feats, tmp_path):
    """--backbone-lr 0: the backbone (weights, batch-norm statistics) stays the tagging run's; the projection trains."""
    tagging = tmp_path / "tagging"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(tagging), *FAST]) == 0
    out = tmp_path / "m"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "cnn2d", *FAST, "--init", str(tagging),
                     "--backbone-lr", "0", "--loss", "contrastive", "--out", str(out)]) == 0
    src = torch.load(tagging / "best.pt", weights_only=False)["model"]
    dst = torch.load(out / "last.pt", weights_only=False)["model"]
    for k, v in src.items():
        if not k.startswith("head"):
            torch.testing.assert_close(dst["backbone." + k], v, rtol=0, atol=0)  # running stats included
    start = torch.eye(dst["proj.weight"].shape[0], dst["proj.weight"].shape[1])
    assert not torch.equal(dst["proj.weight"], start)

def test_metric_tag_loss_is_added(feats, tmp_path, monkeypatch):
    """--tag-weight adds w * BCE of the embedding's tag head; 0 leaves the triplet loss alone."""
    seen = []
    real = torch.nn.functional.binary_cross_entropy_with_logits
    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", lambda *a, **k: seen.append(1) or real(*a, **k))
    base = ["--features", str(feats), "--task", "metric", "--model", "linear", *FAST, "--epochs", "1"]
    assert run.main([*base, "--tag-weight", "0", "--out", str(tmp_path / "w0")]) == 0
    assert not seen and "tag_head.weight" not in torch.load(tmp_path / "w0" / "best.pt", weights_only=False)["model"]
    assert run.main([*base, "--tag-weight", "0.5", "--out", str(tmp_path / "w1")]) == 0
    assert seen


def test_metric_init_from_a_tagging_run(feats, tmp_path, capsys):
    tagging = tmp_path / "tagging"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(tagging), *FAST]) == 0
    metric = ["--features", str(feats), "--task", "metric", "--model", "cnn2d", *FAST, "--epochs", "1"]
    # A learning rate of ~0 keeps the started weights: they must be the tagging run's, and so its scaling.
    assert run.main([*metric, "--init", str(tagging), "--lr", "1e-12", "--out", str(tmp_path / "m")]) == 0
    src = torch.load(tagging / "best.pt", weights_only=False)
    dst = torch.load(tmp_path / "m" / "best.pt", weights_only=False)
    conv = [k for k in src["model"] if k.endswith("weight") and src["model"][k].dim() == 4]
    assert conv and all(torch.allclose(src["model"][k], dst["model"]["backbone." + k], atol=1e-6) for k in conv)
    np.testing.assert_array_equal(src["mean"], dst["mean"])
    capsys.readouterr()
    baseline = tmp_path / "baseline"
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(baseline), *FAST]) == 0
    assert run.main([*metric, "--init", str(baseline), "--out", str(tmp_path / "m2")]) == 2
    assert "needs a tagging run of 'cnn2d'" in capsys.readouterr().err
    assert run.main([*metric, "--init", str(tmp_path / "none"), "--out", str(tmp_path / "m3")]) == 2
    assert "no best.pt there" in capsys.readouterr().err


def test_auto_crops_cover_the_training_audio(feats, tmp_path):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), "--epochs", "1",
                     "--batch", "8", "--quiet", "--seconds", "1"]) == 0
    ff = FeatureFile(feats, ("mel",))
    frames = int(json.loads((out / "config.json").read_text())["frames"])
    expected = round(np.median(ff.n_frames[ff.indices("train")]) / frames)
    assert expected >= 2 and json.loads((out / "config.json").read_text())["crops_per_clip_used"] == expected


@pytest.mark.parametrize("every", [1, 4])  # the CPU's look at every step; a GPU's every few (here on the CPU)
def test_nan_loss_stops_and_keeps_last_checkpoint(feats, tmp_path, monkeypatch, capsys, every):
    monkeypatch.setattr(loop, "CHECK_EVERY", {"cpu": every})
    out = tmp_path / "run"
    real = torch.nn.functional.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def nan_later(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", nan_later)
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), "--epochs", "3",
                     "--crops-per-clip", "1", "--batch", "8", "--quiet"]) == 1
    assert "loss is nan at epoch 2" in capsys.readouterr().out
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("argv,message", [
    (["--model", "linear"], "use it with --task metric"),
    (["--inputs", "mel,pitch"], "--inputs: unknown feature"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--crops-per-clip", "many"], "--crops-per-clip must be a whole number or auto"),
    (["--crops-per-clip", "0"], "--crops-per-clip must be at least 1"),
    (["--tag-weight", "-1"], "--tag-weight"),
    (["--init", "x"], "use it with --task metric"),
    (["--task", "metric", "--model", "linear", "--init", "x"], "no backbone"),
    (["--task", "metric", "--loss", "contrastive", "--mining", "none"], "does not take --mining none"),
    (["--task", "metric", "--loss", "contrastive", "--distance", "euclidean"], "--distance cosine"),
    (["--temperature", "0"], "--temperature must be positive"),
    (["--backbone-lr", "-1"], "--backbone-lr must not be negative"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bad_inputs_exit_2(feats, tmp_path, capsys):
    def fails(argv, message):
        assert run.main(argv) == 2
        assert message in capsys.readouterr().err

    fails(["--features", str(tmp_path / "none.h5")], "features file not found")
    (tmp_path / "text.h5").write_text("hello")
    fails(["--features", str(tmp_path / "text.h5")], "not a readable HDF5 file")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    fails(["--features", str(tmp_path / "other.h5")], "not a features file written by pipeline/extract.py")
    mel_only = tmp_path / "mel.h5"
    assert extract.main(["--data", str(Path(h5py.File(feats, "r").attrs["source"])), "--out", str(mel_only),
                         "--features", "mel", "--workers", "0", "--quiet"]) == 0
    fails(["--features", str(mel_only), "--inputs", "mel,mfcc,chroma", "--out", str(tmp_path / "r")],
          "holds mel but not mfcc, chroma; extract them with")
    fails(["--features", str(feats), "--model", "cnn2d", "--seconds", "30", "--out", str(tmp_path / "r2")],
          "is longer than")
    fails(["--features", str(feats), "--resume", "--out", str(tmp_path / "r3")], "last.pt not found")


def test_resume_with_other_settings_exit_2(feats, tmp_path, capsys):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), *FAST]) == 0
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), *FAST]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(out), *FAST, "--resume"]) == 2
    assert "other settings (model" in capsys.readouterr().err


def test_tag_command_on_real_fixtures(feats, tmp_path, fixtures_dir, capsys):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert tag.main([str(MTAT_MP3), str(MSD_MP3), "--run", str(out), "--top-k", "3"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == str(MTAT_MP3) and len(text) == 8  # two files, three tags each
    assert tag.main([str(MSD_MP3), "--run", str(out), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)[str(MSD_MP3)]
    assert len(scores) == 50 and all(0 < s < 1 for s in scores.values())
    # Same numbers as the run's own front-end path: a stereo 22 kHz file goes through decoding as in extraction.
    model, fe, mean, std, frames, tags = tag.load_run(out)
    np.testing.assert_allclose([scores[t] for t in tags], tag.tag_file(MSD_MP3, model, fe, mean, std, frames),
                               atol=1e-6)


def test_tag_command_bad_inputs(feats, tmp_path, capsys, fixtures_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(a), *FAST]) == 0
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(b), *FAST]) == 0
    capsys.readouterr()
    assert tag.main([str(MTAT_MP3), "--run", str(tmp_path / "nope")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
    ckpt = torch.load(b / "best.pt", weights_only=False)
    ckpt["config"]["model"] = "cnn2d"  # a baseline checkpoint dropped into the cnn2d run
    torch.save(ckpt, a / "best.pt")
    assert tag.main([str(MTAT_MP3), "--run", str(a)]) == 2
    assert "does not fit a 'cnn2d' model" in capsys.readouterr().err
    assert tag.main([str(tmp_path / "missing.mp3"), "--run", str(b)]) == 2
    assert "missing.mp3: file not found" in capsys.readouterr().err


def test_report_lists_finished_runs(feats, tmp_path, capsys):
    from train import report

    assert report.main([str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(tmp_path / "b1"), *FAST]) == 0
    capsys.readouterr()
    assert report.main([str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| b1 ")]
    m = json.loads((tmp_path / "b1" / "metrics.json").read_text())
    assert len(rows) == 1 and f"{m['test_roc_auc']:.3f}" in rows[0] and "| tagging | 2 |" in rows[0]


def test_steps_per_epoch_caps_training_not_validation(feats, tmp_path):
    out = tmp_path / "capped"
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), "--epochs", "2",
                     "--batch", "4", "--steps-per-epoch", "2", "--quiet"]) == 0
    history = torch.load(out / "last.pt", weights_only=False)["history"]
    assert [h["steps"] for h in history] == [2, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    ff = FeatureFile(feats)
    assert len(np.load(out / "predictions.npy")) == len(ff.indices("test"))  # test in full
    assert json.loads((out / "config.json").read_text())["steps_per_epoch"] == 2
    assert "valid" in metrics


def test_training_on_float16_features(tmp_path):
    f16 = tiny_features(tmp_path, "mel", 2, "--dtype", "float16", name="f16.h5")
    out = tmp_path / "run"
    assert run.main(["--features", str(f16), "--model", "baseline", "--out", str(out), *FAST]) == 0
    scores = np.load(out / "predictions.npy")
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    assert len(scores) == len(FeatureFile(f16).indices("test"))


def test_sampler_names_known_without_torch():
    from train.metric import SAMPLERS
    assert run.SAMPLERS == SAMPLERS


@pytest.mark.parametrize("sampler,mining", [("tag", "none"), ("overlap", "semihard"), ("instance", "semihard"),
                                            ("instance", "none"), ("latent", "hard"), ("latent", None),
                                            ("timbre", "semihard"), ("timbre", None), ("beat", None),
                                            ("beat", "none")])
def test_every_sampler_trains_a_metric_run(feats, tmp_path, sampler, mining):
    # mining None: the default, the contrastive loss over P x K batches with the sampler's positives
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "linear", "--sampler", sampler,
                     *(["--mining", mining] if mining else []), "--out", str(out), "--epochs", "1", "--batch", "8",
                     "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_loss"]) and json.loads((out / "config.json").read_text())["sampler"] == sampler
    hist = torch.load(out / "last.pt", weights_only=False)["history"]
    assert hist[0]["steps"] >= 1 and np.isfinite(hist[0]["train_loss"])


def test_timbre_sampler_needs_the_mfcc(feats, tmp_path, capsys):
    mel_only = tiny_features(tmp_path, "mel", 2, name="mel.h5")
    assert run.main(["--features", str(mel_only), "--task", "metric", "--model", "linear", "--sampler", "timbre",
                     "--out", str(tmp_path / "r"), "--epochs", "1", "--batch", "8", "--quiet"]) == 2
    assert "mfcc" in capsys.readouterr().err


def test_augmented_versions_drawn_per_epoch(tmp_path, monkeypatch, capsys, feats):
    aug = tiny_features(tmp_path, "mel", 2, "--augment", "2", name="aug.h5")
    drawn = []
    real = Crops.set_versions
    monkeypatch.setattr(Crops, "set_versions", lambda self, v: drawn.append(np.asarray(v)) or real(self, v))
    assert run.main(["--features", str(aug), "--model", "baseline", "--out", str(tmp_path / "on"), *FAST]) == 0
    assert len(drawn) == 2 and all(((d >= 0) & (d <= 2)).all() for d in drawn)
    assert any((d > 0).any() for d in drawn) and not np.array_equal(drawn[0], drawn[1])
    assert "augmented versions per clip" in (tmp_path / "on" / "train.log").read_text()
    drawn.clear()
    assert run.main(["--features", str(aug), "--model", "baseline", "--out", str(tmp_path / "off"), *FAST,
                     "--no-augmented"]) == 0
    assert drawn == []
    capsys.readouterr()
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(tmp_path / "x"), *FAST,
                     "--augmented"]) == 2
    assert "holds no augmented versions" in capsys.readouterr().err


def test_inputs_are_checked_before_outputs(feats, tmp_path, capsys):
    # The default --out (cache/runs/tagging-shortres, relative) already holds a run: a missing
    # features file is still what is reported, and nothing is written.
    held = Path("cache/runs/tagging-shortres")
    held.mkdir(parents=True)
    (held / "last.pt").write_bytes(b"a run")
    assert run.main(["--features", str(tmp_path / "nothere.h5")]) == 2
    assert "nothere.h5: features file not found" in capsys.readouterr().err
    # A run that cannot start leaves no run folder behind.
    mel_only = tmp_path / "mel.h5"
    assert extract.main(["--data", str(Path(h5py.File(feats, "r").attrs["source"])), "--out", str(mel_only),
                         "--features", "mel", "--workers", "0", "--quiet"]) == 0
    assert run.main(["--features", str(mel_only), "--inputs", "mel,mfcc", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("arg, value, message", [
    ("--lr", "0", "--lr must be positive, got 0.0"), ("--seconds", "-1", "--seconds must be positive, got -1.0"),
    ("--margin", "-0.1", "--margin must not be negative, got -0.1"),
    ("--lr-factor", "1.5", "--lr-factor must be below 1")])
def test_each_bad_number_is_named(arg, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.parse_args([arg, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_resume_leaves_a_finished_run_alone_unless_asked_for_more_epochs(feats, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--features", str(feats), "--model", "baseline", "--out", str(out), *FAST]
    assert run.main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    seconds = json.loads((out / "metrics.json").read_text())["seconds"]
    capsys.readouterr()
    assert run.main([*args, "--resume"]) == 2  # FAST asks for 2 epochs: the run has them
    assert "is a finished run (2 epochs, tested)" in capsys.readouterr().err
    assert run.main([*args[:-len(FAST)], "--crops-per-clip", "1", "--batch", "8", "--quiet", "--resume"]) == 2
    assert "pass --epochs with more than 2" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing changed
    # Asked for more: it trains on and every output describes the longer run.
    more = [a if a != "2" else "3" for a in args]
    assert run.main([*more, "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 3 and m["seconds"] > seconds
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 3
    assert "resumed from" in (out / "train.log").read_text()


def test_a_run_stopped_by_stop_lr_and_killed_in_its_test_resumes_to_the_test(feats, tmp_path):
    out = tmp_path / "run"
    args = ["--features", str(feats), "--model", "baseline", "--out", str(out), "--stop-lr", "2e-3", *FAST]
    assert run.main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 1  # lr 1e-3 is below --stop-lr after the first epoch
    (out / "metrics.json").unlink()  # as if killed during its test
    assert run.main([*args, "--resume"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["epochs_run"] == 1 and torch.load(out / "last.pt", weights_only=False)["epoch"] == 1
    assert {k: v for k, v in again.items() if k.startswith("test_")} == \
        {k: v for k, v in m.items() if k.startswith("test_")}
    assert "no more epochs; testing the best" in (out / "train.log").read_text()


def test_interrupted_training_says_how_to_continue(feats, tmp_path, capsys, monkeypatch):
    from train import runfolder

    out = tmp_path / "run"
    real, calls = runfolder.save_checkpoint, {"n": 0}

    def save_then_die(obj, path):  # killed after epoch 1's two checkpoints
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        real(obj, path)

    monkeypatch.setattr(runfolder, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert f"interrupted: {out / 'last.pt'} keeps the last finished epoch" in err and err.rstrip().endswith("--resume")
    monkeypatch.undo()
    # its best.pt is an epoch's, not the run's: the commands that take a finished run say so
    from train import embed
    assert embed.main(["--run", str(out), "--features", str(feats)]) == 2
    assert tag.main([str(MTAT_MP3), "--run", str(out)]) == 2
    assert capsys.readouterr().err.count(f"--run {out}: an unfinished run (no metrics.json") == 2
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), *FAST, "--resume"]) == 0


def test_tag_command_reports_failures_and_names_the_tagger(feats, tmp_path, capsys, fixtures_dir):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    (tmp_path / "text.mp3").write_text("not audio\n" * 50)
    # One bad file among good ones: the good one is tagged, and the exit status says something failed.
    assert tag.main([str(tmp_path / "text.mp3"), str(MTAT_MP3), "--run", str(out), "--top-k", "2"]) == 2
    res = capsys.readouterr()
    assert res.out.splitlines()[0] == str(MTAT_MP3)
    assert "text.mp3: not an audio file the decoder can read" in res.err and "1 of 2 files" in res.err
    assert f"tagger: cnn2d trained by train/run.py on {feats}" in res.err
    with pytest.raises(SystemExit) as exc:
        tag.main([str(MTAT_MP3), "--run", str(out), "--taggram", str(tmp_path / "missing" / "t.png")])
    assert exc.value.code == 2 and "missing does not exist" in capsys.readouterr().err
    # The taggram covers the file's tail and names the model; the clip score still ignores the tail.
    png = tmp_path / "t.png"
    assert tag.main([str(MTAT_MP3), "--run", str(out), "--taggram", str(png), "--json"]) == 0
    assert png.stat().st_size > 0
    model, frontend, mean, std, frames, tags = tag.load_run(out)
    crops, starts, n = tag.taggram(MTAT_MP3, model, frontend, mean, std, frames, tail=True)
    assert n % frames and len(crops) == n // frames + 1 and starts[-1] == n - frames
    np.testing.assert_allclose(crops[:-1], tag.taggram(MTAT_MP3, model, frontend, mean, std, frames), atol=1e-6)


def test_default_tagger_is_musicnn_or_says_it_is_the_demo(monkeypatch, capsys):
    from train import pretrained

    monkeypatch.setattr(pretrained, "package_dir", lambda: (_ for _ in ()).throw(run.RunError("none")))
    assert tag.default_run() == tag.DEMO_RUN
    assert "trained on synthetic audio" in capsys.readouterr().err
    import importlib.util

    if importlib.util.find_spec("musicnn") is None:
        return
    monkeypatch.undo()
    assert tag.default_run() == tag.PRETRAINED and (tag.PRETRAINED / "best.pt").is_file()  # made on first use
    assert tag.describe(tag.PRETRAINED)[0] == "MTT_musicnn"


def test_no_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from train import embed

    for main in (tag.main, embed.main):
        with pytest.raises(SystemExit) as exc:
            main(["x.mp3", "--device", "cuda"] if main is tag.main else ["--run", "r", "--device", "cuda"])
        assert exc.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_run_config_round_trips_through_config_json(feats, tmp_path):
    from train.config import IDENTITY, RunConfig

    out = tmp_path / "run"
    cfg = run.parse_args(["--features", str(feats), "--task", "metric", "--model", "baseline", "--out", str(out),
                          "--margin", "0.3", *FAST])
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "baseline", "--out", str(out),
                     "--margin", "0.3", *FAST]) == 0
    back = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert back.identity() == cfg.identity() and set(cfg.identity()) == set(IDENTITY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_resident_feed_draws_the_memmap_feeds_crops(tmp_path, dtype):
    from train.feed import Resident, ResidentCrops

    f = tiny_features(tmp_path, "mel,chroma", 2, "--dtype", dtype, name=f"{dtype}.h5")
    ff = FeatureFile(f, ("mel", "chroma"))
    idx = ff.indices("train")
    mean, std = standardizer(ff, idx)
    resident = Resident(ff, np.arange(len(ff)), torch.device("cpu"))
    assert resident.data.dtype == (torch.float16 if dtype == "float16" else torch.float32)
    assert resident.data.nbytes == Resident.nbytes(ff, np.arange(len(ff)))
    for mode, items in (("random", idx), ("fixed", ff.indices("valid")), ("chunks", ff.indices("test"))):
        mem, res = Crops(ff, items, 50, mean, std, mode), ResidentCrops(ff, items, 50, mean, std, mode, resident)
        plan = [list(range(i, min(i + 3, len(mem)))) for i in range(0, len(mem), 3)]
        torch.manual_seed(7)
        a = list(DataLoader(mem, batch_sampler=plan, collate_fn=Crops.collate))
        torch.manual_seed(7)
        b = list(DataLoader(res, batch_sampler=plan, collate_fn=Crops.collate))
        for (xa, ya), (xb, yb) in zip(a, b):  # the same crops, to the bit
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resident_blocks_are_runs_of_at_most_the_frames_asked():
    from train.feed import Resident

    def blocks(lengths, frames):
        return [b.tolist() for b in Resident.blocks(np.array(lengths, np.int64), frames)]

    assert blocks([], 5) == []
    assert blocks([3, 3, 3], 6) == [[0, 1], [2]] and blocks([3, 3, 3], 5) == [[0], [1], [2]]
    assert blocks([1, 1, 10, 1], 4) == [[0, 1], [2], [3]]  # a longer clip alone
    assert blocks([2, 2], 0) == [[0], [1]]


def test_a_resident_run_equals_a_memmap_run(feats, tmp_path):
    outs = {}
    for feed in ("memmap", "resident"):
        out = tmp_path / feed
        assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), "--feed", feed,
                         *FAST]) == 0
        outs[feed] = out
        assert feed in (out / "train.log").read_text().splitlines()[0]
    for name in ("predictions.npy", "embeddings.npy"):
        np.testing.assert_array_equal(np.load(outs["memmap"] / name), np.load(outs["resident"] / name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", ["tagging", "metric"])
def test_training_steps_on_cuda(feats, tmp_path, task):
    out = tmp_path / task
    assert run.main(["--features", str(feats), "--task", task, "--model", "baseline", "--out", str(out),
                     "--device", "cuda", *FAST]) == 0
    line = (out / "train.log").read_text().splitlines()[0]
    assert "cuda" in line and "resident on cuda" in line  # the default feed on a GPU
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_loss"]) and 0 <= m["test_recall@1"] <= 1


@pytest.mark.parametrize("task", ["tagging", "metric"])
def test_compiled_training_pass_equals_eager(feats, tmp_path, monkeypatch, task):
    # Inductor's C++ build takes a minute on a fresh machine; aot_eager traces forward and backward
    # the same way, so this checks what --compile wraps, trains and saves, quickly.
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    outs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        outs[name] = tmp_path / name
        assert run.main(["--features", str(feats), "--task", task, "--model", "baseline", "--out", str(outs[name]),
                         "--precision", "fp32", *FAST, *extra]) == 0
    a, b = (torch.load(outs[n] / "last.pt", weights_only=False) for n in ("eager", "compiled"))
    assert a["model"].keys() == b["model"].keys()  # the plain network's weights, not the compiled wrapper's
    for x, y in zip(a["history"], b["history"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
    np.testing.assert_allclose(np.load(outs["eager"] / "embeddings.npy"), np.load(outs["compiled"] / "embeddings.npy"),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_training_on_cuda(feats, tmp_path):
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--model", "baseline", "--out", str(out), "--device", "cuda",
                     "--compile", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_loss"]) and 0 <= m["test_roc_auc"] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resident_crops_on_cuda_equal_the_memmap_crops(feats):
    from train.feed import Resident, ResidentCrops

    ff = FeatureFile(feats, ("mel", "mfcc", "chroma"))
    idx = ff.indices("train")
    mean, std = standardizer(ff, idx)
    per_clip = int(ff.n_frames.mean()) * ff.bins * ff.dtype.itemsize  # blocks of 2-3 clips: the buffers alternate
    resident = Resident(ff, idx, torch.device("cuda"), block_bytes=int(2.5 * per_clip))
    res = ResidentCrops(ff, idx, 100, mean, std, "random", resident)
    mem = Crops(ff, idx, 100, mean, std, "random")
    torch.manual_seed(3)
    a = mem.__getitems__(list(range(len(idx))))
    torch.manual_seed(3)
    b = res.__getitems__(list(range(len(idx))))
    assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())


@pytest.mark.parametrize("extra,loss", [([], "contrastive"), (["--mining", "none"], "triplet"),
                                        (["--distance", "euclidean"], "triplet"),
                                        (["--loss", "triplet"], "triplet")])
def test_metric_loss_default(extra, loss):
    assert run.parse_args(["--task", "metric", *extra]).loss == loss


def test_a_run_made_before_the_new_settings_resumes_only_as_it_was():
    """A checkpoint without loss/temperature/backbone_lr was a triplet run at one learning rate."""
    new = run.parse_args(["--task", "metric"]).identity()
    old = {k: v for k, v in new.items() if k not in ("loss", "temperature", "backbone_lr")}
    assert runfolder._differs("loss", old, new)  # the new default, contrastive, is not what it ran
    assert not runfolder._differs("loss", old, run.parse_args(["--task", "metric", "--loss", "triplet"]).identity())
    assert not runfolder._differs("backbone_lr", old, new)
    tagging = run.parse_args([]).identity()
    assert not any(runfolder._differs(k, old, tagging) for k in ("loss", "temperature", "backbone_lr"))


def test_the_start_is_epoch_0_and_kept_unless_an_epoch_beats_it(feats, tmp_path):
    """A stage started from a tagging run scores its start on validation first; nothing learnt: the start is tested."""
    tagging = tmp_path / "tagging"
    assert run.main(["--features", str(feats), "--model", "cnn2d", "--out", str(tagging), *FAST]) == 0
    out = tmp_path / "m"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "cnn2d", *FAST, "--init", str(tagging),
                     "--backbone-lr", "0", "--lr", "1e-12", "--weight-decay", "0", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["best_epoch"] == 0 and m["epochs_run"] == 2 and "recall@1" in m["valid"]
    assert "epoch   0  (the start)" in (out / "train.log").read_text()
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == 0
