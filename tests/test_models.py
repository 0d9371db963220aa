"""Shapes, sizes, gradients and basic trainability of the networks in train.models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.models import (
    MODELS,
    CNN2D,
    EmbeddingNet,
    ShortChunkResNet,
    SpecAugment,
    build_embedding_model,
    build_model,
    count_parameters,
)

N_MELS = 96
ALL_BINS = 96 + 20 + 12
TAGGERS = ["baseline", "cnn2d", "shortres"]
# Every network that takes any crop of at least its min_frames (musicnn_vgg takes 187 frames only).
NETS = ["baseline", "cnn2d", "fcn", "crnn", "musicnn", "shortres", "linear"]


def _x(b, f, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, t, generator=g)


def _small(name, n_bins, **kw):
    # A narrow shortres keeps the tests fast; the default width is covered by the shape tests.
    if name == "shortres":
        kw.setdefault("width", 8)
    torch.manual_seed(0)
    return build_model(name, n_bins, **kw)


def test_registry_names():
    assert set(MODELS) == {"baseline", "cnn2d", "fcn", "crnn", "musicnn", "musicnn_vgg", "shortres", "linear"}
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet50", N_MELS)


def test_cnn2d_block_shapes_are_exact():
    model = build_model("cnn2d", N_MELS).eval()
    h = _x(2, N_MELS, 188)[:, None]
    shapes = []
    for block in model.blocks:
        h = block(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(64, 24, 47), (128, 8, 15), (128, 2, 5), (64, 1, 1)]
    assert isinstance(model.head, torch.nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (64, 50)


def test_cnn2d_global_pool_is_noop_at_96x188():
    model = build_model("cnn2d", N_MELS).eval()
    x = _x(3, N_MELS, 188)
    with torch.no_grad():
        direct = model.blocks(x[:, None]).flatten(1)
        assert torch.equal(model.embed(x), direct)


@pytest.mark.parametrize("name", ["cnn2d", "fcn"])
def test_global_max_pool_for_longer_input(name):
    model = build_model(name, N_MELS).eval()
    x = _x(2, N_MELS, 400)
    with torch.no_grad():
        last = model.blocks(x[:, None])
        assert last.shape[1:] == (64, 1, 2)
        assert torch.equal(model.embed(x), last.amax(dim=(2, 3)))
        assert not torch.equal(model.embed(x), last[..., 0].flatten(1))


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("t", [188, 250])
@pytest.mark.parametrize("bins", [N_MELS, ALL_BINS], ids=["mel", "mel+mfcc+chroma"])
def test_logits_and_embedding_shapes(name, t, bins):
    model = build_model(name, bins).eval()
    x = _x(2, bins, t)
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, 50)
    assert emb.shape == (2, model.embed_dim)
    assert torch.isfinite(logits).all()


def test_forward_is_head_of_embed_in_eval():
    for name in TAGGERS:
        model = _small(name, ALL_BINS).eval()
        x = _x(3, ALL_BINS, 188)
        with torch.no_grad():
            assert torch.allclose(model(x), model.head(model.embed(x)), atol=1e-6), name


def test_linear_forward_is_embed_and_uses_all_bins():
    model = build_model("linear", ALL_BINS, dim=16)
    assert model.embed_dim == 16
    x = _x(4, ALL_BINS, 188)
    assert torch.equal(model(x), model.embed(x))
    assert torch.allclose(model(x), model.proj(x.mean(dim=2)))
    # Changing only the chroma rows changes the embedding.
    y = x.clone()
    y[:, -12:] += 1.0
    assert not torch.allclose(model(x), model(y))


def test_mel_only_models_ignore_extra_rows():
    for name in ["baseline", "cnn2d"]:
        model = _small(name, ALL_BINS).eval()
        x = _x(2, ALL_BINS, 188)
        y = x.clone()
        y[:, N_MELS:] = 5.0
        with torch.no_grad():
            assert torch.equal(model(x), model(y)), name


def test_shortres_uses_extra_rows():
    model = _small("shortres", ALL_BINS).eval()
    assert model.extra is not None and model.extra[0].in_channels == ALL_BINS - N_MELS
    x = _x(2, ALL_BINS, 188)
    y = x.clone()
    y[:, N_MELS:] += 3.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(y))
    assert _small("shortres", N_MELS).extra is None


def test_parameter_counts():
    # Hand counts: conv weights + biases, BN scale + shift, linear weights + biases.
    baseline = 96 * 32 * 3 + 32 + 2 * (32 * 32 * 3 + 32) + 3 * 64 + 32 * 50 + 50
    assert count_parameters(build_model("baseline", N_MELS)) == baseline == 17_298
    cnn2d = (
        (1 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + (128 * 64 * 9 + 64)
        + 2 * (64 + 128 + 128 + 64) + 64 * 50 + 50
    )
    assert count_parameters(build_model("cnn2d", N_MELS)) == cnn2d == 299_890
    assert count_parameters(build_model("linear", ALL_BINS, dim=64)) == ALL_BINS * 64 + 64
    small = count_parameters(build_model("shortres", N_MELS, width=16))
    default = count_parameters(build_model("shortres", N_MELS))
    extra = count_parameters(build_model("shortres", ALL_BINS))
    assert 100_000 < small < default < extra < 1_000_000
    # Residual blocks have no conv bias and a shortcut only where channels change.
    model = build_model("shortres", N_MELS, width=16)
    assert [type(b[0].shortcut).__name__ for b in model.blocks] == [
        "Sequential", "Identity", "Sequential", "Identity", "Identity", "Sequential"
    ]


@pytest.mark.parametrize("name", NETS)
def test_backward_reaches_every_parameter(name):
    model = _small(name, ALL_BINS).train()
    out = model(_x(4, ALL_BINS, 188))
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def assert_few_steps_lower_bce(model, x, lr=3e-3, steps=10):
    """Train ``model`` on the fixed batch ``x`` with fixed random tags; the BCE must fall by 10 %."""
    y = (torch.rand(len(x), 50, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_now():
        # Same seed -> same SpecAugment masks and dropout, so before/after are comparable.
        torch.manual_seed(123)
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(model(x), y).item()

    before = loss_now()
    torch.manual_seed(7)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()
    after = loss_now()
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("name", TAGGERS)
def test_few_steps_lower_bce_on_fixed_batch(name):
    assert_few_steps_lower_bce(_small(name, ALL_BINS).train(), _x(8, ALL_BINS, 188, seed=1))


def test_specaugment_only_in_training():
    model = _small("shortres", ALL_BINS)
    x = _x(4, ALL_BINS, 188)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        c, d = model.augment(x), model.augment(x)
    assert not torch.equal(c, d)
    assert not torch.equal(c, x)
    # Reproducible from torch's RNG.
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(model.augment(x), c)
    assert model.augment.training and not model.eval().augment.training


def test_specaugment_masks_bands_with_zero():
    aug = SpecAugment(n_mels=N_MELS, n_freq_masks=1, freq_width=10, n_time_masks=1, time_width=15).train()
    x = _x(64, ALL_BINS, 188) + 10.0  # no natural zeros
    torch.manual_seed(3)
    m = aug(x) == 0
    time_masked = m.all(dim=1)  # (B, T): frames masked in every row
    freq_masked = m.all(dim=2)  # (B, F): rows masked in every frame
    assert time_masked.sum(1).max() <= 15 and time_masked.sum(1).max() > 0
    assert freq_masked.sum(1).max() <= 10 and freq_masked.sum(1).max() > 0
    # Frequency masks stay inside the mel rows.
    assert not freq_masked[:, N_MELS:].any()
    # Masked frames form one contiguous span per example.
    for row in time_masked:
        idx = torch.nonzero(row).flatten()
        if len(idx):
            assert idx[-1] - idx[0] + 1 == len(idx)
    # Nothing outside the masks changes.
    outside = ~(time_masked[:, None, :] | freq_masked[:, :, None])
    torch.manual_seed(3)
    y = aug(x)
    assert torch.equal(y[outside], x[outside])


def test_specaugment_off_switch():
    model = _small("shortres", N_MELS, specaugment=False)
    assert model.augment is None


def test_shortres_dropout_changes_train_forward_only():
    model = _small("shortres", N_MELS, specaugment=False).train()
    x = _x(4, N_MELS, 188)
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert not torch.allclose(a, b)  # dropout


def test_embedding_net_wraps_backbones():
    for name in TAGGERS:
        torch.manual_seed(0)
        net = build_embedding_model(name, ALL_BINS, dim=24, **({"width": 8} if name == "shortres" else {}))
        assert isinstance(net, EmbeddingNet)
        net.eval()
        x = _x(3, ALL_BINS, 188)
        with torch.no_grad():
            out = net(x)
            assert out.shape == (3, 24) and net.embed_dim == 24
            assert torch.allclose(out, net.proj(net.backbone.embed(x)))
            # Not normalised: that is the loss's business.
            assert not torch.allclose(out.norm(dim=1), torch.ones(3))
    lin = build_embedding_model("linear", ALL_BINS, dim=24)
    assert lin(_x(3, ALL_BINS, 188)).shape == (3, 24) and lin.tag_head is None


def test_embedding_tag_head():
    for name in ("linear", "cnn2d"):
        net = build_embedding_model(name, ALL_BINS, dim=24, n_tags=50).eval()
        with torch.no_grad():
            emb = net(_x(3, ALL_BINS, 188))
            assert net.tag_head(emb).shape == (3, 50)
        # The head is a registered submodule, so it trains and is checkpointed with the net.
        assert "tag_head.weight" in net.state_dict()
    with pytest.raises(ValueError, match="n_tags"):
        build_embedding_model("linear", ALL_BINS, n_tags=-1)


def test_input_checks():
    model = build_model("baseline", ALL_BINS)
    with pytest.raises(ValueError, match=r"\(B, 128, T\)"):
        model(_x(2, N_MELS, 188))
    with pytest.raises(ValueError, match="at least 180 frames"):
        build_model("cnn2d", N_MELS)(_x(2, N_MELS, 100))
    with pytest.raises(ValueError, match="n_mels"):
        CNN2D(64, n_mels=64)
    with pytest.raises(ValueError, match="n_mels"):
        ShortChunkResNet(80, n_mels=96)


@pytest.mark.parametrize("name", ["crnn", "musicnn", "shortres"])  # a Linear head, a Sequential one, a wide one
def test_tag_prior_init_starts_every_tag_at_its_base_rate(name):
    from train.models import init_tag_prior

    labels = np.zeros((9, 50), dtype=np.uint8)
    labels[:3, 0] = 1  # 3 of 9 clips
    labels[:, 1] = 1  # every clip: a finite bias all the same
    model = build_model(name, N_MELS)
    assert init_tag_prior(model, labels)
    layer = model.head if isinstance(model.head, torch.nn.Linear) else model.head[-1]
    rate = torch.sigmoid(layer.bias.double())
    torch.testing.assert_close(rate[:3], torch.tensor([3.5 / 10, 9.5 / 10, 0.5 / 10], dtype=torch.float64))
    assert torch.isfinite(layer.bias).all()
    # With its features at zero, the network predicts the base rates.
    torch.testing.assert_close(torch.sigmoid(layer(torch.zeros(1, layer.in_features)))[0].double(), rate)


def test_tag_prior_init_of_embedding_networks():
    from train.models import init_tag_prior

    labels = np.eye(50, dtype=np.uint8)[np.arange(20) % 50]
    net = build_embedding_model("cnn2d", N_MELS, dim=8, n_tags=50)
    assert init_tag_prior(net, labels)
    torch.testing.assert_close(torch.sigmoid(net.tag_head.bias[0].double()), torch.tensor(1.5 / 21, dtype=torch.float64))
    assert not init_tag_prior(build_embedding_model("cnn2d", N_MELS, dim=8), labels)  # no tag layer
    with pytest.raises(ValueError, match="labels have 49 tags, the tag layer 50"):
        init_tag_prior(net, labels[:, :49])


@pytest.mark.parametrize("name, bins, dim", [("shortres", 128, 128), ("baseline", 96, 64), ("musicnn", 96, 128)])
def test_metric_network_starts_at_the_backbones_embedding(name, bins, dim):
    from train.models import build_embedding_model

    torch.manual_seed(0)
    net = build_embedding_model(name, bins, dim=dim, n_tags=50).eval()
    x = torch.randn(12, bins, 188)
    feats = net.backbone.embed(x)
    net.start_at_backbone(feats if feats.shape[1] > dim else None)
    cos = lambda e: torch.nn.functional.normalize(e, dim=1) @ torch.nn.functional.normalize(e, dim=1).T
    if feats.shape[1] <= dim:  # the same cosine geometry, and the tagging head's scores
        torch.testing.assert_close(cos(net(x)), cos(feats), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.tag_head(net(x)), net.backbone(x), atol=1e-5, rtol=1e-5)
    else:  # 12 clips span at most 12 directions: a 128-wide projection keeps them all
        torch.testing.assert_close(cos(net(x)), cos(feats), atol=1e-4, rtol=1e-4)


def test_start_at_backbone_projects_many_clips_on_their_top_singular_directions():
    """More clips than the backbone is wide (MTAT: 15k): the reduced SVD, the same directions."""
    from train.models import build_embedding_model

    torch.manual_seed(0)
    net = build_embedding_model("musicnn", 96, dim=16, n_tags=50)
    w_in = net.proj.in_features
    feats = (torch.randn(3 * w_in, w_in) * torch.linspace(3, 0.1, w_in)).float()
    net.start_at_backbone(feats)
    ref = np.linalg.svd(feats.double().numpy())[2][:16]  # numpy's own, full matrices
    np.testing.assert_allclose(np.abs(net.proj.weight.detach().double().numpy() @ ref.T), np.eye(16), atol=1e-4)
