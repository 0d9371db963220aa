"""musicnn's published networks in our pipeline: checkpoint reader, port, run folder, tag, taggram, embed.

The weights come from the ``musicnn`` package, which ``make setup`` installs with ``--no-deps``;
these tests skip, saying so, where it is absent. TensorFlow is only needed by the parity test,
which skips without it.
"""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import MSD_MP3, MTAT_MP3, tiny_features
from train import embed, pretrained, run, tag
from train.models import build_model, count_parameters
from features.musicnn import Musicnn, MusicnnVGG, db_to_logc, load_musicnn_weights
from features.tfcheckpoint import CheckpointError, list_variables, read_checkpoint

try:
    PKG = pretrained.package_dir()
except pretrained.RunError:
    PKG = None
needs_pkg = pytest.mark.skipif(PKG is None, reason="the musicnn package is not installed "
                                                   "(pip install --no-deps musicnn==0.1.0, as make setup does)")
# musicnn's README: top_tags('joram-moments_of_clarity-08-solipsism-59-88.mp3', model='MTT', topN=10)
# and top_tags('TRWJAZW128F42760DD_test.mp3', model='MTT', topN=3).
DOCUMENTED_MTAT = ['techno', 'electronic', 'synth', 'fast', 'beat', 'drums', 'no vocals', 'no vocal', 'dance',
                   'ambient']
DOCUMENTED_MSD = ['guitar', 'piano', 'fast']


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if PKG is None:
        pytest.skip("the musicnn package is not installed")
    root = tmp_path_factory.mktemp("pretrained")
    for name in ("MTT_musicnn", "MTT_vgg"):
        assert pretrained.main([name, "--out", str(root / name)]) == 0
    return root


def _trainable(variables) -> int:
    return sum(int(np.prod(s)) for k, (s, _) in variables.items()
               if not any(w in k for w in ("moving_", "Adam", "_power")))


@needs_pkg
@pytest.mark.parametrize("name", pretrained.NAMES)
def test_port_has_exactly_the_checkpoint_parameters(name):
    variables = list_variables(PKG / name)
    arch, kwargs = __import__("features.musicnn", fromlist=["VARIANTS"]).VARIANTS[name]
    model = build_model(arch, 96, n_out=50, **kwargs)
    assert count_parameters(model) == _trainable(variables)
    load_musicnn_weights(model, read_checkpoint(PKG / name))  # every shape fits, or it raises
    assert bool(model.logc_input)
    w = read_checkpoint(PKG / name)["dense/kernel" if arch == "musicnn" else "1CNN/kernel"]
    got = model.dense.weight.T if arch == "musicnn" else model.blocks[0][0].weight.permute(2, 3, 1, 0)
    np.testing.assert_array_equal(got.detach().numpy(), w)


@needs_pkg
def test_reader_refuses_broken_checkpoints(tmp_path):
    src = PKG / "MTT_musicnn"
    for f in (".index", ".data-00000-of-00001"):
        shutil.copy(src / f, tmp_path / f)
    assert len(read_checkpoint(tmp_path)) == len(list_variables(src))
    data = tmp_path / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="past the end of its data file"):
        read_checkpoint(tmp_path)
    data.unlink()
    with pytest.raises(CheckpointError, match="missing checkpoint data file"):
        read_checkpoint(tmp_path)
    (tmp_path / ".index").write_bytes(b"not a table at all, but long enough to hold a footer........")
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint index"):
        list_variables(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint index"):
        list_variables(tmp_path / "nothing")


def test_db_to_logc_inverts_the_decibels():
    power = torch.tensor([0.0, 1e-9, 1e-4, 0.5, 7.0, 300.0])
    db = 10 * torch.log10(torch.clamp(power, min=1e-10))
    expected = torch.log10(1 + 10000 * torch.clamp(power, min=1e-10))
    torch.testing.assert_close(db_to_logc(db), expected, rtol=1e-5, atol=1e-6)  # no float16 overflow at 7.0


def test_vgg_takes_the_lengths_its_dense_layer_fits():
    m = MusicnnVGG(96).eval()
    assert m.min_frames <= 187 <= 188 <= m.max_frames and m.embed_dim == 256
    assert m(torch.zeros(2, 96, 188)).shape == (2, 50)
    with pytest.raises(ValueError, match="takes patches of"):
        m(torch.zeros(1, 96, m.max_frames + 1))
    assert Musicnn(96 + 20, n_mels=96)(torch.zeros(2, 116, 40)).shape == (2, 50)  # extra rows ignored


@needs_pkg
def test_tags_of_the_real_fixtures_are_musicnns_documented_ones(runs, fixtures_dir, tmp_path, capsys):
    png = tmp_path / "tg.png"
    assert tag.main([str(MTAT_MP3), "--run", str(runs / "MTT_musicnn"), "--top-k", "10", "--taggram", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(str(MTAT_MP3)) + 1
    assert [ln.split(None, 1)[1] for ln in lines[start:start + 10]] == DOCUMENTED_MTAT
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert tag.main([str(MSD_MP3), str(MTAT_MP3), "--run", str(runs / "MTT_vgg"), "--json",
                     "--taggram", str(png)]) == 0
    scores = json.loads(capsys.readouterr().out)
    top = sorted(scores[str(MTAT_MP3)], key=scores[str(MTAT_MP3)].get, reverse=True)
    assert top[:2] == ["techno", "electronic"]
    assert (tmp_path / f"tg_{MSD_MP3.stem}.png").is_file() and (tmp_path / f"tg_{MTAT_MP3.stem}.png").is_file()
    model, fe, mean, std, frames, tags = tag.load_run(runs / "MTT_musicnn")
    assert frames == 187 and fe.params.top_db is None
    top3 = np.argsort(-tag.tag_file(MSD_MP3, model, fe, mean, std, frames))[:3]
    assert [tags[i] for i in top3] == DOCUMENTED_MSD


def test_missing_package_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert pretrained.main(["MTT_musicnn", "--out", str(tmp_path / "x")]) == 2
    assert "pip install --no-deps musicnn==0.1.0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return tiny_features(tmp_path_factory.mktemp("embed"), "mel,mfcc", 3)


@needs_pkg
def test_embed_a_pretrained_run_then_score_it(runs, feats, tmp_path, capsys):
    from eval import recall

    out = tmp_path / "emb"
    assert embed.main(["--run", str(runs / "MTT_musicnn"), "--features", str(feats), "--out", str(out),
                       "--split", "all"]) == 0
    emb, labels, ids = (np.load(out / f"{n}.npy") for n in ("embeddings", "labels", "clip_ids"))
    assert emb.shape[1] == 200 and len(emb) == len(labels) == len(ids) > 0 and np.isfinite(emb).all()
    assert (out / "predictions.npy").is_file()  # MTT tags are the file's tags
    capsys.readouterr()
    assert recall.main([str(out / "embeddings.npy")]) == 0
    assert "Recall@K" in capsys.readouterr().out
    # The embedding is the port's penultimate layer, averaged over the clip's 187-frame crops.
    model, *_ = tag.load_run(runs / "MTT_musicnn")
    from train.feed import Crops, FeatureFile
    ff = FeatureFile(feats, ("mel",))
    crops = Crops(ff, [0], 187, np.zeros(96), np.ones(96), "chunks")
    x = torch.stack([crops[k][0] for k in range(len(crops))]).float()
    with torch.no_grad():
        np.testing.assert_allclose(model.embed(x).mean(0).numpy(), emb[0], rtol=1e-4, atol=1e-5)


@needs_pkg
def test_embed_refuses_features_of_other_settings(runs, tmp_path, capsys):
    other = tiny_features(tmp_path, "mel", 1, "--n-mels", "64")
    capsys.readouterr()
    assert embed.main(["--run", str(runs / "MTT_musicnn"), "--features", str(other)]) == 2
    err = capsys.readouterr().err
    assert "n_mels=64" in err and "--n-mels 96" in err


@needs_pkg
def test_metric_run_starts_from_the_pretrained_backbone(runs, feats, tmp_path):
    out = tmp_path / "metric"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "musicnn", "--inputs", "mel",
                     "--init", str(runs / "MTT_musicnn"), "--epochs", "1", "--batch", "8", "--crops-per-clip", "1",
                     "--out", str(out), "--quiet"]) == 0
    ckpt = torch.load(out / "best.pt", weights_only=False)
    assert bool(ckpt["model"]["backbone.logc_input"])  # the scaling the weights were trained with travels
    np.testing.assert_array_equal(ckpt["mean"], 0) and np.testing.assert_array_equal(ckpt["std"], 1)
    assert embed.main(["--run", str(out), "--features", str(feats), "--out", str(tmp_path / "e")]) == 0
    assert np.load(tmp_path / "e" / "embeddings.npy").shape[1] == 128


@needs_pkg
def test_port_equals_tensorflow_musicnn(fixtures_dir):
    """Parity with musicnn's own TensorFlow graph; skips where TensorFlow is not installed (CI).

    musicnn's tf.compat.v1.layers need Keras 2: TensorFlow >= 2.16 takes it from tf_keras when
    TF_USE_LEGACY_KERAS is set, before TensorFlow loads.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    from musicnn import models as tf_models

    tf.compat.v1.disable_eager_execution()
    x_np = np.random.default_rng(0).uniform(0, 4, size=(3, 187, 96)).astype(np.float32)  # logC values
    for name in ("MTT_musicnn", "MTT_vgg"):
        tf.compat.v1.reset_default_graph()
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
        logits = tf_models.define_model(x, False, name, 50)[0]
        with tf.compat.v1.Session() as sess:
            tf.compat.v1.train.Saver().restore(sess, str(PKG / name) + "/")
            want = sess.run(tf.nn.sigmoid(logits), {x: x_np})
        arch = "musicnn" if "musicnn" in name else "musicnn_vgg"
        model = build_model(arch, 96, n_out=50)
        load_musicnn_weights(model, read_checkpoint(PKG / name))
        model.logc_input.fill_(False)
        model.eval()
        with torch.no_grad():
            got = torch.sigmoid(model(torch.from_numpy(x_np).transpose(1, 2))).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


@needs_pkg
def test_making_the_folder_again_keeps_it_and_another_network_needs_force(tmp_path, capsys):
    # `make demo` runs `pretrained.py MTT_musicnn` every time: a library indexed with the folder must still
    # match it (its identity is best.pt's SHA-256), and another network must not silently take its place.
    from train.library_store import run_sha256

    out = tmp_path / "MTT_musicnn"
    assert pretrained.main(["MTT_musicnn", "--out", str(out)]) == 0
    sha = run_sha256(out)
    assert pretrained.main(["MTT_musicnn", "--out", str(out)]) == 0
    assert "kept as it is" in capsys.readouterr().out and run_sha256(out) == sha
    assert pretrained.main(["MTT_vgg", "--out", str(out)]) == 2
    assert "already holds MTT_musicnn; pass --force" in capsys.readouterr().err and run_sha256(out) == sha
    (out / "embed-old").mkdir()
    assert pretrained.main(["MTT_vgg", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["pretrained"]["name"] == "MTT_vgg"
    assert not (out / "embed-old").exists() and run_sha256(out) != sha
    assert pretrained.main(["MTT_musicnn", "--out", str(out), "--force"]) == 0 and run_sha256(out) == sha


@needs_pkg
def test_force_replaces_only_a_run_folder(tmp_path):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep me")
    assert pretrained.main(["MTT_musicnn", "--out", str(mine), "--force"]) == 0
    assert (mine / "important.txt").read_text() == "keep me" and (mine / "sub").is_dir()
    assert (mine / "best.pt").is_file()
