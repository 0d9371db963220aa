"""The course's menu of published backbones in train.models: fcn, crnn and musicnn.

Their maps for 3-s crops and longer ones, the frame minimum, the contract (``forward == head(embed)``,
``embed_dim``, mel rows only), trainability, metric-learning wrappers, the parameter counts their
docstrings state, and a run of ``train/run.py --model NAME`` for each. Output shapes and gradients of
every network are in test_models.py.
"""
import json
import re

import pytest
import torch

from tests.conftest import tiny_features
from tests.test_models import assert_few_steps_lower_bce
from train import run
from train.models import CRNN, FCN, MODELS, EmbeddingNet, build_embedding_model, build_model, count_parameters
from features.musicnn import Musicnn

N_MELS = 96
ALL_BINS = 96 + 20 + 12
BACKBONES = ["fcn", "crnn", "musicnn"]
OURS = ["fcn", "crnn"]  # train.models' own; musicnn is features/musicnn.py's (its weights: test_pretrained.py)


def _x(b, f, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, t, generator=g)


def _model(name, n_bins=N_MELS, **kw):
    torch.manual_seed(0)
    return build_model(name, n_bins, **kw)


def _documented(cls, pattern):
    # A count written in a docstring, e.g. "this network 447,730", as an int.
    match = re.search(pattern + r" ([\d,]+)", " ".join(cls.__doc__.split()))
    assert match, (cls.__name__, pattern)
    return int(match.group(1).replace(",", ""))


def test_registered_by_name():
    assert MODELS["fcn"] is FCN and MODELS["crnn"] is CRNN and MODELS["musicnn"] is Musicnn


def _block_shapes(model, t):
    h, shapes = _x(2, N_MELS, t)[:, None], []
    with torch.no_grad():
        for block in model.eval().blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


def test_fcn_maps_collapse_96x188_to_1x1():
    model = _model("fcn")
    assert _block_shapes(model, 188) == [(64, 48, 47), (128, 24, 15), (128, 12, 5), (128, 4, 1), (64, 1, 1)]
    assert model.embed_dim == model.head.in_features == 64 and model.min_frames == 180
    # Longer inputs: the global max pool of test_models.test_global_max_pool_for_longer_input.


def test_crnn_maps_and_sequence_length():
    model = _model("crnn")
    assert _block_shapes(model, 188) == [(64, 48, 94), (128, 16, 31), (128, 4, 15), (128, 1, 15)]
    with torch.no_grad():
        assert model.sequence(_x(2, N_MELS, 188)).shape == (2, 15, 128)  # the paper's 15 steps
        assert model.sequence(_x(2, N_MELS, 400)).shape == (2, 33, 128)
        # The embedding is the last GRU output, which is the top layer's final hidden state.
        x = _x(2, N_MELS, 188)
        out, h_n = model.gru(model.sequence(x))
        assert torch.allclose(model.embed(x), h_n[-1], atol=1e-6) and torch.equal(model.embed(x), out[:, -1])
    assert model.embed_dim == model.head.in_features == 32 and model.min_frames == 12
    assert isinstance(model.blocks[0][2], torch.nn.ELU) and isinstance(model.blocks[0][4], torch.nn.Dropout)


@pytest.mark.parametrize("name", BACKBONES)
def test_min_frames_enforced(name):
    model = _model(name).eval()
    n = model.min_frames
    with torch.no_grad():
        assert model(_x(2, N_MELS, n)).shape == (2, 50)
        with pytest.raises(ValueError, match=f"needs at least {n} frames, got T={n - 1}"):
            model(_x(2, N_MELS, n - 1))
        net = build_embedding_model(name, N_MELS, dim=8).eval()
        assert net.min_frames == n
        with pytest.raises(ValueError, match=f"at least {n} frames"):
            net(_x(2, N_MELS, n - 1))


@pytest.mark.parametrize("name", BACKBONES)
def test_wrong_feature_rows_rejected(name):
    with pytest.raises(ValueError, match=rf"\(B, {ALL_BINS}, T"):
        _model(name, ALL_BINS)(_x(2, N_MELS, 188))


@pytest.mark.parametrize("cls", [FCN, CRNN])
def test_too_few_mel_rows_rejected(cls):
    with pytest.raises(ValueError, match="n_mels >= 96"):
        cls(80, n_mels=80)
    with pytest.raises(ValueError, match="n_mels"):
        cls(64, n_mels=96)


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_is_head_of_embed(name):
    model = _model(name, ALL_BINS).eval()
    x = _x(3, ALL_BINS, 188)
    with torch.no_grad():
        emb = model.embed(x)
        assert emb.shape == (3, model.embed_dim)
        assert torch.allclose(model(x), model.head(emb), atol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
def test_mel_rows_only(name):
    model = _model(name, ALL_BINS).eval()
    x = _x(2, ALL_BINS, 188)
    y = x.clone()
    y[:, N_MELS:] = 5.0
    z = x.clone()
    z[:, :N_MELS] += 1.0
    with torch.no_grad():
        assert torch.equal(model(x), model(y))
        assert not torch.allclose(model(x), model(z))


@pytest.mark.parametrize("name", OURS)
def test_dropout_only_in_training(name):
    model = _model(name)
    x = _x(4, N_MELS, 188)
    model.train()
    torch.manual_seed(0)
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# Narrow versions keep the training test at seconds on two cores; the layers are the defaults'.
NARROW = {"fcn": dict(widths=(16, 32, 32, 32, 16)), "crnn": dict(channels=(16, 32, 32, 32), hidden=16)}


@pytest.mark.parametrize("name", OURS)
def test_few_steps_lower_bce_on_fixed_batch(name):
    # A GRU of 16 units moves slower than a conv head at the course's 3e-3.
    assert_few_steps_lower_bce(_model(name, **NARROW[name]).train(), _x(8, N_MELS, 188, seed=1), lr=1e-2)


@pytest.mark.parametrize("name", BACKBONES)
def test_embedding_model_wraps_backbone(name):
    torch.manual_seed(0)
    net = build_embedding_model(name, ALL_BINS, dim=24, n_tags=50)
    assert isinstance(net, EmbeddingNet) and net.embed_dim == 24 and net.n_bins == ALL_BINS
    net.eval()
    x = _x(3, ALL_BINS, 188)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (3, 24)
        assert torch.allclose(out, net.proj(net.backbone.embed(x)))
        assert net.tag_head(out).shape == (3, 50)
    assert net.proj.in_features == net.backbone.embed_dim
    net.train()
    net.tag_head(net(_x(4, ALL_BINS, 188))).sum().backward()
    # Everything but the backbone's own tag layer, which the wrapper leaves unused, gets a gradient.
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing and all(n.startswith("backbone.head.") for n in missing), missing


def test_fcn_parameter_counts_as_documented():
    ours = count_parameters(build_model("fcn", N_MELS))
    conv = (1 * 64 + 64 * 128 + 128 * 128 + 128 * 128 + 128 * 64) * 9 + (64 + 128 + 128 + 128 + 64)
    bn = 2 * (64 + 128 + 128 + 128 + 64)
    assert ours == conv + bn + 64 * 50 + 50 == _documented(FCN, "this network")
    # Won et al.'s FCN: the same layers plus a BatchNorm2d(1) on the input.
    assert _documented(FCN, "Won et al.'s FCN") == ours + 2
    # The first author's Keras FCN-5: its summary lists 850,368 without the 50-tag output layer.
    keras = count_parameters(build_model("fcn", N_MELS, widths=(32, 128, 128, 192, 256)))
    assert keras == 850_368 + 256 * 50 + 50 == _documented(FCN, r"widths=\(32, 128, 128, 192, 256\)\`\`:")
    # Fully convolutional: the count does not depend on the input size, and extra rows add nothing.
    assert count_parameters(build_model("fcn", ALL_BINS)) == ours


def test_crnn_parameter_counts_as_documented():
    ours = count_parameters(build_model("crnn", N_MELS))
    conv = (1 * 64 + 64 * 128 + 128 * 128 + 128 * 128) * 9 + (64 + 128 + 128 + 128) + 2 * (64 + 128 + 128 + 128)
    gru = 3 * (128 * 32 + 32 * 32 + 2 * 32) + 3 * (32 * 32 + 32 * 32 + 2 * 32)  # PyTorch: two bias vectors
    assert ours == conv + gru + 32 * 50 + 50 == _documented(CRNN, "this network")
    # Keras 1 GRUs have one bias vector per gate: 3 x 32 fewer per layer.
    assert _documented(CRNN, "the Keras CRNN") == ours - 2 * 3 * 32


def test_musicnn_parameter_count_as_documented():
    assert count_parameters(build_model("musicnn", N_MELS)) == _documented(Musicnn, "it has")


@pytest.fixture(scope="module")
def mel_feats(tmp_path_factory):
    return tiny_features(tmp_path_factory.mktemp("backbones"), "mel", 2)


@pytest.mark.parametrize("name", OURS)
def test_run_trains_them_by_name(mel_feats, tmp_path, name):
    fast = ["--features", str(mel_feats), "--model", name, "--epochs", "1", "--crops-per-clip", "1",
            "--batch", "4", "--quiet"]
    assert run.main([*fast, "--out", str(tmp_path / "tag")]) == 0
    m = json.loads((tmp_path / "tag" / "metrics.json").read_text())
    assert 0 <= m["test_roc_auc"] <= 1
    assert run.main([*fast, "--task", "metric", "--out", str(tmp_path / "metric")]) == 0
    m = json.loads((tmp_path / "metric" / "metrics.json").read_text())
    assert 0 <= m["test_recall@1"] <= 1
