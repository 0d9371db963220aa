"""Triplet losses, in-batch mining and tag samplers of train.metric."""
import math

import numpy as np
import pytest
import torch

from train.metric import (
    BalancedTagBatchSampler,
    TagTripletSampler,
    batch_triplet_loss,
    pairwise_distances,
    triplet_loss,
    triplet_masks,
)

MININGS = ["hard", "semihard", "all"]


def _random_labels(n=400, n_tags=12, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_tags)) < rng.uniform(0.05, 0.3, n_tags)).astype(np.uint8)
    return y


# --- triplet_loss -----------------------------------------------------------------------------


def test_triplet_loss_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    n = torch.tensor([[1.0, -1.0], [3.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    # relu(0.4 - cos(a,p) + cos(a,n)) per row: 0.4 - r + r, 0.4 - 1 + 0 -> 0, 0.4 - 0 + r
    expected = (0.4 + 0.0 + (0.4 + r)) / 3
    assert triplet_loss(a, p, n).item() == pytest.approx(expected, abs=1e-6)
    assert triplet_loss(a, p, n, margin=1.0).item() == pytest.approx((1.0 + 0.0 + 1.0 + r) / 3, abs=1e-6)


def test_triplet_loss_euclidean_by_hand_and_against_torch():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    n = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # relu(5 - 1 + 0.4) = 4.4 and relu(1 - 2 + 0.4) = 0
    assert triplet_loss(a, p, n, distance="euclidean").item() == pytest.approx(2.2, abs=1e-6)
    torch.manual_seed(0)
    a, p, n = torch.randn(3, 16, 8).unbind(0)
    ref = torch.nn.TripletMarginLoss(margin=0.4, p=2)(a, p, n)
    assert triplet_loss(a, p, n, distance="euclidean").item() == pytest.approx(ref.item(), abs=1e-4)


def test_triplet_loss_gradient_finite_when_anchor_equals_positive():
    a = torch.randn(4, 5, requires_grad=True)
    n = torch.randn(4, 5)
    triplet_loss(a, a.detach().clone(), n, distance="euclidean").backward()
    assert torch.isfinite(a.grad).all()


def test_triplet_loss_rejects_bad_arguments():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="distance"):
        triplet_loss(x, x, x, distance="manhattan")
    with pytest.raises(ValueError, match="shape"):
        triplet_loss(x, x, torch.zeros(3, 3))


# --- masks and in-batch mining ----------------------------------------------------------------


def test_pairwise_distances():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    d = pairwise_distances(e, "euclidean")
    assert torch.allclose(d, torch.cdist(e, e), atol=1e-5)
    c = pairwise_distances(e, "cosine")
    assert c[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert c[0, 2].item() == pytest.approx(1 - 0.6, abs=1e-6)
    assert torch.allclose(c, c.T) and torch.allclose(c.diagonal(), torch.zeros(3), atol=1e-6)


def test_masks_respect_multilabel_overlap():
    #           A  B  C  D
    y = np.array([[1, 1, 0, 0],   # 0: A B
                  [0, 1, 1, 0],   # 1: B C   (shares B with 0)
                  [0, 0, 0, 1],   # 2: D     (shares nothing with 0, 1)
                  [1, 0, 0, 0],   # 3: A     (shares A with 0)
                  [0, 0, 0, 0]])  # 4: none
    pos, neg = triplet_masks(y)
    assert pos[0, 1] and pos[1, 0] and pos[0, 3]
    assert neg[0, 2] and neg[1, 2] and neg[1, 3] and neg[2, 3]
    assert not pos[1, 3] and not neg[0, 1]
    assert neg[4].sum() == 4 and not pos[4].any()  # a clip without tags is nobody's positive
    assert not pos.diagonal().any() and not neg.diagonal().any()
    assert not (pos & neg).any()
    # With a Jaccard threshold, 0-1 (1/3) is no longer positive but not negative either.
    pos_j, neg_j = triplet_masks(y, min_jaccard=0.5)
    assert not pos_j[0, 1] and not neg_j[0, 1]
    assert pos_j[0, 3]  # Jaccard 1/2
    assert torch.equal(neg_j, neg)


def test_batch_loss_multilabel_positive_by_hand():
    # 0 {A,B} and 1 {B,C} share B: positive; 2 {D} is a negative for both; 2 has no positive.
    y = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    e = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]], requires_grad=True)
    # anchor 0: relu(3 - 1 + 0.4) = 2.4; anchor 1: relu(3 - 2 + 0.4) = 1.4; anchor 2 skipped.
    for mining in MININGS:
        loss = batch_triplet_loss(e, y, distance="euclidean", mining=mining)
        assert loss.item() == pytest.approx(1.9, abs=1e-5), mining
    # A triplet in the batch scores as the explicit loss does.
    one = batch_triplet_loss(e, y, distance="cosine", mining="all", reduction="none")
    assert len(one) == 2
    # Jaccard 1/3 < 0.5: no positive pair left, loss 0 but still differentiable.
    zero = batch_triplet_loss(e, y, distance="euclidean", min_jaccard=0.5)
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_batch_loss_matches_explicit_triplet_loss():
    torch.manual_seed(1)
    e = torch.randn(3, 6)
    y = torch.tensor([[1, 0], [1, 0], [0, 1]])
    for distance in ["cosine", "euclidean"]:
        got = batch_triplet_loss(e, y, distance=distance, mining="all", reduction="none")
        # Valid triplets, row-major: (0, 1, 2) and (1, 0, 2).
        ref0 = triplet_loss(e[[0]], e[[1]], e[[2]], distance=distance)
        ref1 = triplet_loss(e[[1]], e[[0]], e[[2]], distance=distance)
        assert torch.allclose(got, torch.stack([ref0, ref1]), atol=1e-5), distance


def _separated_batch():
    # 4 tags x 3 clips, plus two clips with two tags each; embedding = normalised multi-hot.
    y = torch.zeros(14, 4)
    y[torch.arange(12), torch.arange(12) // 3] = 1
    y[12, [0, 1]] = 1
    y[13, [2, 3]] = 1
    return y, y / y.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_batch_loss_zero_when_separated_and_positive_otherwise(mining, distance):
    y, e = _separated_batch()
    assert batch_triplet_loss(e, y, mining=mining, distance=distance).item() == pytest.approx(0.0, abs=1e-6)
    # Same embeddings, shuffled among clips: tags and geometry no longer agree.
    shuffled = e[torch.tensor([3, 7, 12, 0, 10, 5, 1, 13, 9, 2, 6, 11, 4, 8])]
    assert batch_triplet_loss(shuffled, y, mining=mining, distance=distance).item() > 0.05


def test_semihard_picks_nearest_semihard_negative_else_hardest():
    y = torch.tensor([[1, 0]] * 2 + [[0, 1]] * 4)
    # anchor 0 at 0, positive at 1; negatives at 0.5 (hard), 1.2, 1.3 (semi-hard), 2.0 (easy)
    e = torch.tensor([[0.0], [1.0], [0.5], [1.2], [1.3], [2.0]])
    losses = batch_triplet_loss(e, y, distance="euclidean", mining="semihard", reduction="none")
    assert losses[0].item() == pytest.approx(1.0 - 1.2 + 0.4, abs=1e-5)  # pair (0, 1)
    # No semi-hard negative: negatives at 0.5 and 2.0 only -> the hardest, 0.5.
    e2 = torch.tensor([[0.0], [1.0], [0.5], [2.0], [2.5], [3.0]])
    losses2 = batch_triplet_loss(e2, y, distance="euclidean", mining="semihard", reduction="none")
    assert losses2[0].item() == pytest.approx(1.0 - 0.5 + 0.4, abs=1e-5)
    hard = batch_triplet_loss(e2, y, distance="euclidean", mining="hard", reduction="none")
    assert hard[0].item() == pytest.approx(1.0 - 0.5 + 0.4, abs=1e-5)


def _per_anchor_bound_holds(e, y, distance):
    """Every semi-hard / 'all' triplet of an anchor is bounded by that anchor's hard triplet."""
    pos, neg = triplet_masks(y)
    has_neg = neg.any(1)
    valid = pos.any(1) & has_neg
    hard = torch.full((len(y),), float("nan"))
    hard[valid] = batch_triplet_loss(e, y, distance=distance, mining="hard", reduction="none")
    semi = batch_triplet_loss(e, y, distance=distance, mining="semihard", reduction="none")
    semi_anchor = torch.nonzero(pos & has_neg[:, None])[:, 0]
    every = batch_triplet_loss(e, y, distance=distance, mining="all", reduction="none")
    all_anchor = torch.nonzero(pos[:, :, None] & neg[:, None, :])[:, 0]
    assert len(semi) > 0 and len(every) > 0
    assert (semi >= 0).all() and (every >= 0).all()
    assert (semi <= hard[semi_anchor] + 1e-6).all()
    assert (every <= hard[all_anchor] + 1e-6).all()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_hard_bounds_semihard_on_random_batches(distance):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        e = torch.randn(24, 8, generator=g)
        y = (torch.rand(24, 6, generator=g) < 0.3).int()
        _per_anchor_bound_holds(e, y, distance)
    # Single-label P x K batch: every anchor has K - 1 positives, so the means keep the order.
    y = torch.zeros(24, 6)
    y[torch.arange(24), torch.arange(24) // 4] = 1
    for _ in range(5):
        e = torch.randn(24, 8, generator=g)
        hard = batch_triplet_loss(e, y, distance=distance, mining="hard")
        semi = batch_triplet_loss(e, y, distance=distance, mining="semihard")
        every = batch_triplet_loss(e, y, distance=distance, mining="all")
        assert hard.item() >= semi.item() >= 0.0
        assert hard.item() >= every.item() >= 0.0
        assert hard.item() > 0.0


def test_semihard_mean_can_exceed_hard_mean_with_unequal_positives():
    # Why the random-case test compares per anchor: three 'A' clips on an equilateral triangle
    # (2 positives each, hard loss 0.2), two close 'B' clips (1 positive each, loss 0) 1.2 away.
    r, h = 1 / math.sqrt(3), math.sqrt(1.44 - 1 / 3)
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    tri = torch.stack([r * ang.cos(), r * ang.sin(), torch.zeros(3)], dim=1)
    e = torch.cat([tri, torch.tensor([[0.0, 0.0, h], [0.0, 0.0, h + 0.1]])])
    y = torch.tensor([[1, 0]] * 3 + [[0, 1]] * 2)
    hard = batch_triplet_loss(e, y, distance="euclidean", mining="hard")
    semi = batch_triplet_loss(e, y, distance="euclidean", mining="semihard")
    assert hard.item() == pytest.approx(3 * 0.2 / 5, abs=1e-4)
    assert semi.item() == pytest.approx(6 * 0.2 / 8, abs=1e-4)
    _per_anchor_bound_holds(e, y, "euclidean")


def test_batch_loss_without_valid_triplet_is_zero_with_grad():
    e = torch.randn(5, 4, requires_grad=True)
    same = torch.ones(5, 3)  # everybody positive, no negative
    for mining in MININGS:
        loss = batch_triplet_loss(e, same, mining=mining)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_batch_loss_gradients_finite_with_duplicate_embeddings():
    y, e = _separated_batch()
    e = torch.cat([e, e[:2]]).requires_grad_()
    y = torch.cat([y, y[:2]])
    for distance in ["cosine", "euclidean"]:
        for mining in MININGS:
            e.grad = None
            batch_triplet_loss(e, y, margin=2.0, distance=distance, mining=mining).backward()
            assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0, (distance, mining)


def test_batch_loss_rejects_bad_arguments():
    e, y = torch.zeros(3, 2), torch.eye(3)
    with pytest.raises(ValueError, match="mining"):
        batch_triplet_loss(e, y, mining="easy")
    with pytest.raises(ValueError, match="label rows"):
        batch_triplet_loss(e, torch.eye(4))


# --- TagTripletSampler ------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [False, True])
def test_triplet_sampler_is_deterministic_by_seed(overlap):
    y = _random_labels()
    s1 = TagTripletSampler(y, 300, seed=5, overlap=overlap)
    s2 = TagTripletSampler(y, 300, seed=5, overlap=overlap)
    e1, e2 = s1.epoch(), s2.epoch()
    assert e1.shape == (300, 3) and e1.dtype == np.int64
    assert np.array_equal(e1, e2)
    assert np.array_equal(s1.epoch(), s2.epoch())  # successive epochs stay in step...
    assert not np.array_equal(e1, s1.epoch())  # ...and differ from each other
    assert not np.array_equal(e1, TagTripletSampler(y, 300, seed=6, overlap=overlap).epoch())
    assert np.array_equal(s1.epoch(np.random.default_rng(9)), s2.epoch(9))
    assert [tuple(t) for t in TagTripletSampler(y, 300, seed=5, overlap=overlap)] == [tuple(t) for t in e1]


def test_triplet_sampler_anchor_positive_share_tag_negative_lacks_it():
    y = _random_labels()
    trip, tags = TagTripletSampler(y, 5000, seed=0).sample(5000, return_tags=True)
    a, p, n = trip.T
    assert (a != p).all()
    assert y[a, tags].all() and y[p, tags].all() and not y[n, tags].any()
    assert len(np.unique(tags)) == y.shape[1]  # every tag gets used
    # Plain sampling lets the negative share other tags with the anchor (what 'overlap' fixes).
    assert (y[a] & y[n]).any(axis=1).any()


def test_overlap_sampler_negative_shares_no_tag():
    y = _random_labels(seed=1)
    sampler = TagTripletSampler(y, 5000, seed=0, overlap=True)
    trip, tags = sampler.sample(5000, return_tags=True)
    a, p, n = trip.T
    assert (a != p).all()
    assert y[a, tags].all() and y[p, tags].all()
    assert not (y[a] & y[n]).any()


def test_overlap_sampler_prefers_high_jaccard_positives():
    #               A  B  C  D
    y = np.array([[1, 1, 1, 0],   # 0
                  [1, 1, 1, 0],   # 1: Jaccard 1 with 0
                  [1, 0, 0, 0],   # 2: Jaccard 1/3 with 0
                  [0, 0, 0, 1],   # 3
                  [0, 0, 0, 1],   # 4
                  [1, 1, 1, 1]])  # 5: shares a tag with everybody -> never an anchor
    trip, tags = TagTripletSampler(y, 1, seed=0, overlap=True).sample(20000, return_tags=True)
    a, p, n = trip.T
    assert not (a == 5).any()
    assert (a[tags == 3] != 5).all() and set(n[a < 3]) <= {3, 4}
    # Anchor 0, tag A: candidates 1 (J=1), 2 (J=1/3), 5 (J=3/4): probabilities 12/25, 4/25, 9/25.
    sel = p[(a == 0) & (tags == 0)]
    freq = np.bincount(sel, minlength=6)[[1, 2, 5]] / len(sel)
    assert len(sel) > 1000
    assert np.allclose(freq, [12 / 25, 4 / 25, 9 / 25], atol=0.04)
    # The plain sampler draws them uniformly.
    trip, tags = TagTripletSampler(y, 1, seed=0).sample(20000, return_tags=True)
    sel = trip[(trip[:, 0] == 0) & (tags == 0), 1]
    assert np.allclose(np.bincount(sel, minlength=6)[[1, 2, 5]] / len(sel), 1 / 3, atol=0.04)


def test_triplet_sampler_skips_unusable_tags():
    y = _random_labels()
    y[:, 0] = 0
    y[7, 0] = 1  # a single positive
    # Overlap mode: clip 7 still anchors its other tags, never tag 0.
    sampler = TagTripletSampler(y, 2000, seed=0, overlap=True)
    assert 0 not in sampler.tags and len(sampler.tags) == y.shape[1] - 1
    trip, tags = sampler.sample(2000, return_tags=True)
    assert not (tags == 0).any() and not (y[trip[:, 0]] & y[trip[:, 2]]).any()
    # Plain mode; a tag on every clip has no negative (and would leave overlap mode no anchor).
    y[:, 1] = 1
    sampler = TagTripletSampler(y, 2000, seed=0)
    assert 0 not in sampler.tags and 1 not in sampler.tags and len(sampler.tags) == y.shape[1] - 2
    _, tags = sampler.sample(2000, return_tags=True)
    assert not np.isin(tags, [0, 1]).any()


def test_triplet_sampler_errors():
    with pytest.raises(ValueError, match="no usable tag"):
        TagTripletSampler(np.eye(5, dtype=int), 10)  # one positive per tag
    with pytest.raises(ValueError, match="no usable tag"):
        TagTripletSampler(np.ones((5, 3), dtype=int), 10)  # no negatives
    # Usable for plain sampling, but every clip shares a tag with every other one.
    y = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]])
    assert len(TagTripletSampler(y, 10).tags) == 3
    with pytest.raises(ValueError, match="no usable tag"):
        TagTripletSampler(y, 10, overlap=True)
    with pytest.raises(ValueError, match="0 and 1"):
        TagTripletSampler(np.full((4, 2), 2), 10)
    with pytest.raises(ValueError, match="matrix"):
        TagTripletSampler(np.ones(4), 10)


def test_triplet_sampler_batches():
    sampler = TagTripletSampler(_random_labels(), 100, seed=3)
    batches = list(sampler.batches(32))
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert [len(b) for b in sampler.batches(32, drop_last=True)] == [32, 32, 32]
    assert np.array_equal(np.concatenate(batches), TagTripletSampler(_random_labels(), 100, seed=3).epoch())


# --- BalancedTagBatchSampler ------------------------------------------------------------------


def test_balanced_sampler_batches():
    y = _random_labels(n=600)
    s1 = BalancedTagBatchSampler(y, n_tags=4, n_per_tag=5, n_batches=30, seed=1)
    s2 = BalancedTagBatchSampler(y, n_tags=4, n_per_tag=5, n_batches=30, seed=1)
    e1 = list(s1)
    assert len(s1) == len(e1) == 30
    assert e1 == list(s2)
    assert e1 != list(s1)  # next epoch
    assert e1 != BalancedTagBatchSampler(y, 4, 5, 30, seed=2).epoch()
    assert sum(len(batch) == 20 for batch in e1) > 20
    for batch in e1:
        assert len(batch) == len(set(batch)) and 15 <= len(batch) <= 20
        # At least 4 tags hold >= 5 clips of the batch, and every clip has a positive in it.
        assert (y[batch].sum(axis=0) >= 5).sum() >= 4
        pos, _ = triplet_masks(y[batch])
        assert pos.any(dim=1).all()


def test_balanced_sampler_as_dataloader_batch_sampler():
    y = _random_labels(n=200)
    data = torch.utils.data.TensorDataset(torch.arange(200))
    sampler = BalancedTagBatchSampler(y, n_tags=3, n_per_tag=4, n_batches=5, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    got = [b[0].tolist() for b in loader]
    assert got == BalancedTagBatchSampler(y, 3, 4, 5, seed=0).epoch()


def test_balanced_sampler_skips_small_tags_and_errors():
    y = _random_labels(n=300)
    y[:, 0] = 0
    y[:3, 0] = 1  # 3 positives < n_per_tag
    sampler = BalancedTagBatchSampler(y, n_tags=2, n_per_tag=4, n_batches=50, seed=0)
    assert 0 not in sampler.tags
    with pytest.raises(ValueError, match="need n_tags=20"):
        BalancedTagBatchSampler(y, n_tags=20, n_per_tag=4)
    with pytest.raises(ValueError, match="n_per_tag >= 2"):
        BalancedTagBatchSampler(y, n_tags=2, n_per_tag=1)


def _graded_reference(e, y, margin, distance, mining):
    """Plain loops over (a, p, n) with graded negatives: J(a, n) < J(a, p)."""
    d = pairwise_distances(e, distance).tolist()
    sets = [set(np.flatnonzero(r)) for r in np.asarray(y)]
    jac = [[len(s & t) / max(len(s | t), 1) for t in sets] for s in sets]
    n = len(sets)
    per_pair, per_anchor = [], []
    for a in range(n):
        worst = None
        for p in range(n):
            negs = [m for m in range(n) if m != a and jac[a][m] < jac[a][p]]
            if p == a or jac[a][p] == 0 or not negs:
                continue
            semi = [d[a][m] for m in negs if d[a][p] < d[a][m] < d[a][p] + margin]
            chosen = min(semi) if semi else min(d[a][m] for m in negs)
            per_pair.append(max(d[a][p] - chosen + margin, 0.0))
            hardest = d[a][p] - min(d[a][m] for m in negs)
            worst = hardest if worst is None else max(worst, hardest)
        if worst is not None:
            per_anchor.append(max(worst + margin, 0.0))
    return per_pair if mining == "semihard" else per_anchor


@pytest.mark.parametrize("mining", ["semihard", "hard"])
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_graded_mining_matches_brute_force(mining, distance):
    g = torch.Generator().manual_seed(1)
    e = torch.randn(14, 5, generator=g)
    y = (torch.rand(14, 5, generator=g) < 0.4).int()
    y[0] = 0  # a clip without tags is never a positive, only a negative
    got = batch_triplet_loss(e, y, distance=distance, mining=mining, graded=True, reduction="none")
    ref = _graded_reference(e, y.numpy(), 0.4, distance, mining)
    assert len(ref) > 10
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_graded_negatives_rank_by_overlap():
    """A clip sharing two of three tags must sit closer than one sharing one, though both are
    positives under the shared-tag rule (which then has nothing to say)."""
    y = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    e = torch.tensor([[0.0], [2.0], [1.0], [10.0]])  # the one-tag clip sits nearer the anchor
    graded = batch_triplet_loss(e, y, distance="euclidean", mining="hard", graded=True, reduction="none")
    assert graded[0].item() == pytest.approx(2.0 - 1.0 + 0.4, abs=1e-6)
    plain = batch_triplet_loss(e, y, distance="euclidean", mining="hard", reduction="none")
    assert plain[0].item() == pytest.approx(0.0, abs=1e-6)


def test_blockwise_loss_bounds_memory_and_keeps_the_small_case():
    from train.metric import blockwise_triplet_loss
    rng = np.random.default_rng(0)
    emb = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    labels = (rng.random((300, 10)) < 0.2).astype(np.uint8)
    kw = dict(margin=0.4, distance="cosine", mining="semihard", graded=True)
    # One block: the loss of the whole split as one batch.
    whole = float(batch_triplet_loss(emb, labels, **kw))
    assert blockwise_triplet_loss(emb, labels, block=300, **kw) == pytest.approx(whole, rel=1e-6)
    # Blocks of 64: the mean over the triplets mined inside each block of the fixed shuffle.
    order = np.random.default_rng(5).permutation(300)
    parts = [batch_triplet_loss(emb[idx], labels[idx], reduction="none", **kw)
             for idx in np.array_split(order, range(64, 300, 64))]
    expect = float(torch.cat(parts).mean())
    assert blockwise_triplet_loss(emb, labels, block=64, seed=5, **kw) == pytest.approx(expect, rel=1e-6)
    assert blockwise_triplet_loss(emb, labels, block=64, seed=5, **kw) != pytest.approx(whole, rel=1e-6)


# --- the multi-label contrastive loss -------------------------------------------------------------

def _contrastive_by_loops(x, w, tau):
    """The loss written out anchor by anchor, pair by pair, in float64."""
    x = torch.nn.functional.normalize(x.double(), dim=1)
    total, anchors = 0.0, 0
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        wsum = sum(float(w[i, j]) for j in others)
        if wsum == 0:
            continue
        logits = [float(x[i] @ x[j]) / tau for j in others]
        log_z = math.log(sum(math.exp(v) for v in logits))
        total += -sum(float(w[i, j]) / wsum * (v - log_z) for j, v in zip(others, logits))
        anchors += 1
    return total / anchors


def test_jaccard_weights_by_hand():
    from train.losses import jaccard_weights

    y = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
    w = jaccard_weights(y)
    assert w[0, 1] == pytest.approx(0.5) and w[1, 0] == pytest.approx(0.5)
    assert w[0, 2] == 0 and w[3].sum() == 0 and torch.all(w.diagonal() == 0)


@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
def test_contrastive_loss_equals_the_loops(tau):
    from train.losses import contrastive_loss, jaccard_weights

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g)
    y = (torch.rand(12, 6, generator=g) < 0.3).int()
    y[0] = 0  # an anchor without any positive is skipped
    w = jaccard_weights(y)
    assert float(contrastive_loss(x, w, tau)) == pytest.approx(_contrastive_by_loops(x, w, tau), rel=1e-5)
    per_anchor = contrastive_loss(x, w, tau, reduction="none")
    assert len(per_anchor) == int((w.sum(dim=1) > 0).sum()) < 12 and float(per_anchor.mean()) == pytest.approx(float(contrastive_loss(x, w, tau)))


def test_contrastive_loss_rewards_the_tag_order():
    """An embedding ordered by tag overlap scores lower than the same points shuffled, and gradients are finite."""
    from train.losses import contrastive_loss, jaccard_weights

    y = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 1]]).float()
    w = jaccard_weights(y)
    good = y + 0.01 * torch.arange(6.0)[:, None]  # tag vectors as embeddings
    bad = good[torch.tensor([3, 0, 5, 1, 2, 4])]
    assert float(contrastive_loss(good, w)) < float(contrastive_loss(bad, w))
    x = torch.cat([good[:1], good[:1], good[2:]]).requires_grad_()  # duplicate rows
    contrastive_loss(x, w).backward()
    assert torch.isfinite(x.grad).all()


def test_contrastive_loss_without_positives_is_zero_with_grad_and_checks_arguments():
    from train.losses import contrastive_loss

    x = torch.randn(4, 3, requires_grad=True)
    loss = contrastive_loss(x, torch.zeros(4, 4))
    assert float(loss) == 0 and loss.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(x, torch.ones(4, 4), temperature=0)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        contrastive_loss(x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="non-negative"):
        contrastive_loss(x, -torch.ones(4, 4))


def test_blockwise_contrastive_loss_is_the_whole_loss_in_one_block():
    from train.losses import blockwise_contrastive_loss, contrastive_loss, jaccard_weights

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 4, generator=g), (torch.rand(20, 5, generator=g) < 0.4).int()
    whole = float(contrastive_loss(x, jaccard_weights(y), 0.2))
    assert blockwise_contrastive_loss(x, y, block=256, temperature=0.2) == pytest.approx(whole, rel=1e-6)
    assert blockwise_contrastive_loss(x, y, block=7, seed=3) == blockwise_contrastive_loss(x, y, block=7, seed=3)


@pytest.mark.parametrize("block", [1, 4, 64])
def test_disjoint_negatives_are_those_of_the_weight_matrix(block):
    """The compiled draw of a negative picks what ``_sample_rows`` picks from the (anchors, N) 0/1
    matrix 'shares no tag with the anchor, is not the anchor', for the same uniform numbers."""
    from train.tag_samplers import _disjoint_counts, _draw_disjoint, _sample_rows, _tag_bits

    rng = np.random.default_rng(3)
    y = rng.random((97, 70)) < 0.04  # two 64-bit words per tag set
    y[:5] = False  # empty tag sets: disjoint from every clip, themselves included
    bits = _tag_bits(y)
    patterns, inverse = np.unique(bits, axis=0, return_inverse=True)
    counts = _disjoint_counts(patterns, bits, block)
    anchors = rng.integers(len(y), size=400)
    u = rng.random(len(anchors))
    weights = ~(y[anchors].astype(np.float32) @ y.T.astype(np.float32)).astype(bool)
    weights[np.arange(len(anchors)), anchors] = False
    class Replay:  # hands _sample_rows our uniform numbers
        def random(self, n):
            assert n == len(u)
            return u

    want = _sample_rows(weights.astype(np.float32), Replay())
    got = _draw_disjoint(bits, inverse.ravel(), counts, block, anchors, u)
    np.testing.assert_array_equal(got, want)
    assert not (y[anchors] & y[got]).any() and (got != anchors).all()


def test_a_loss_named_in_the_registry_only_is_refused_not_trained_as_the_triplet_loss():
    from train.config import RunConfig
    from train.modes import LOSSES, make_mode
    from train.registry import METRIC_LOSSES

    assert set(LOSSES) == set(METRIC_LOSSES)  # every loss the command line offers is called
    with pytest.raises(ValueError, match="--loss mynew: train/modes.py calls triplet and contrastive only"):
        make_mode(RunConfig(task="metric", loss="mynew"))
