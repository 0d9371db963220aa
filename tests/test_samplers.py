"""The common sampler interface of train.metric (tag, overlap, instance, latent, timbre, beat),
explicit masks in the in-batch loss, and the rhythm statistics of features.rhythm."""
import tracemalloc

import numpy as np
import pytest
import torch

from features.params import FeatureParams
from train.metric import (
    SAMPLERS,
    InstanceSampler,
    LatentSampler,
    NeighbourSampler,
    TagSampler,
    TagTripletSampler,
    batch_triplet_loss,
    clip_latents,
    clip_statistics,
    make_sampler,
    pk_sampler,
    tag_embedding,
    timbre_statistics,
)


def _random_labels(n=200, n_tags=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, n_tags)) < rng.uniform(0.1, 0.4, n_tags)).astype(np.uint8)


def _clusters(n_clusters=5, size=6, seed=0):
    # Tight clusters far apart: each point's 5 nearest are exactly its cluster mates.
    rng = np.random.default_rng(seed)
    centres = np.arange(n_clusters)[:, None] * np.array([10.0, -7.0, 3.0])
    x = np.repeat(centres, size, axis=0) + rng.uniform(-0.1, 0.1, (n_clusters * size, 3))
    return x, np.repeat(np.arange(n_clusters), size)


def _negative_of(neg: torch.Tensor, a: int, p: int, n: int) -> bool:
    return bool(neg[a, p, n] if neg.dim() == 3 else neg[a, n])


def _check_both_modes(sampler, n_batches=5, batch=16, group=4, n_triplets=300):
    """Plans give positives within batches, masks are consistent, every triplet obeys the masks
    (the course's 'tag' triplets only in their positive: their negative lacks one tag of the
    anchor, not all)."""
    for plan in sampler.plan(n_batches, batch, group, rng=0):
        assert 0 < len(plan) <= batch
        pos, neg = sampler.masks(plan)
        assert torch.equal(pos, pos.T) and not pos.diagonal().any()
        # Never both; graded negatives may be positives of the anchor, but not the pair's own positive.
        assert not (pos & (neg if neg.dim() == 2 else neg.diagonal(dim1=1, dim2=2))).any()
        assert pos.any(dim=1).sum() >= len(plan) // 2  # most items have a positive in the batch
    t = sampler.triplets(n_triplets, rng=0)
    assert t.shape == (n_triplets, 3) and t.dtype == np.int64
    for a, p, n in t[:100]:
        pos, neg = sampler.masks([a, p, n])
        assert pos[0, 1] and (sampler.name == "tag" or _negative_of(neg, 0, 1, 2)), (a, p, n)
    return t


# --- explicit masks in batch_triplet_loss -----------------------------------------------------------


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("mining", ["hard", "semihard", "all"])
def test_tag_sampler_masks_reproduce_label_mining(graded, mining):
    labels = _random_labels()
    sampler = TagSampler(labels, graded=graded)
    items = np.random.default_rng(1).choice(len(labels), 24, replace=False)
    e = torch.randn(24, 8, generator=torch.Generator().manual_seed(0))
    ref = batch_triplet_loss(e, labels[items], mining=mining, graded=graded)
    got = batch_triplet_loss(e, mining=mining, masks=sampler.masks(items))
    assert got.item() == pytest.approx(ref.item(), abs=1e-7)


def test_masks_two_and_three_dimensional_negatives_agree_and_by_hand():
    e = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    neg = torch.zeros(4, 4, dtype=torch.bool)
    neg[0, 2] = neg[1, 2] = True
    # anchor 0: relu(3 - 1 + 0.4) = 2.4; anchor 1: relu(3 - 2 + 0.4) = 1.4; 2 and 3 have no positive.
    for mining in ["hard", "semihard", "all"]:
        two = batch_triplet_loss(e, distance="euclidean", mining=mining, masks=(pos, neg))
        three = batch_triplet_loss(e, distance="euclidean", mining=mining,
                                   masks=(pos, neg[:, None, :].expand(-1, 4, -1)))
        assert two.item() == pytest.approx(1.9, abs=1e-5) and three.item() == pytest.approx(1.9, abs=1e-5)
    # The diagonal is ignored: marking it changes nothing.
    got = batch_triplet_loss(e, distance="euclidean", masks=(pos | torch.eye(4, dtype=torch.bool), neg))
    assert got.item() == pytest.approx(1.9, abs=1e-5)


def test_masks_errors():
    e = torch.zeros(3, 2)
    ok = (np.eye(3, dtype=bool), ~np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match="not both"):
        batch_triplet_loss(e, torch.zeros(3, 2), masks=ok)
    with pytest.raises(ValueError, match="not both"):
        batch_triplet_loss(e, graded=True, masks=ok)
    with pytest.raises(ValueError, match="labels"):
        batch_triplet_loss(e)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        batch_triplet_loss(e, masks=(np.zeros((2, 2), bool), np.zeros((3, 3), bool)))
    clash = np.zeros((3, 3), bool)
    clash[0, 1] = True
    with pytest.raises(ValueError, match=r"pair \(0, 1\) is both"):
        batch_triplet_loss(e, masks=(clash, clash))


# --- tag samplers behind the interface --------------------------------------------------------------


@pytest.mark.parametrize("overlap", [False, True])
def test_tag_sampler_repeats_the_tag_samplers(overlap):
    labels = _random_labels()
    s = make_sampler("overlap" if overlap else "tag", labels, graded=True)
    assert s.name == ("overlap" if overlap else "tag")
    assert s.plan(4, 32, rng=7) == pk_sampler(labels, 32, 4).epoch(np.random.default_rng(7))
    ref = TagTripletSampler(labels, n_triplets=50, overlap=overlap).sample(50, np.random.default_rng(3))
    assert np.array_equal(s.triplets(50, rng=3), ref)
    batches = list(s.triplet_batches(50, 16, rng=3))
    assert [len(b) for b in batches] == [16, 16, 16, 2] and np.array_equal(np.concatenate(batches), ref)
    _check_both_modes(s)


# --- instance -----------------------------------------------------------------------------------------


def test_instance_masks_same_clip_positive_other_clips_negative():
    pos, neg = InstanceSampler(10).masks([3, 3, 5, 7, 5, 3])
    same = np.array([[a == b for b in [3, 3, 5, 7, 5, 3]] for a in [3, 3, 5, 7, 5, 3]])
    assert np.array_equal(pos.numpy(), same & ~np.eye(6, dtype=bool))
    assert np.array_equal(neg.numpy(), ~same)
    assert not pos[3].any() and neg[3].sum() == 5  # clip 7 alone: no positive, every other a negative


def test_instance_plan_and_triplets():
    s = InstanceSampler(50, seed=0)
    plans = s.plan(6, 32, group=4, rng=1)
    for plan in plans:
        groups = np.array(plan).reshape(8, 4)
        assert (groups == groups[:, :1]).all()  # four crops of one clip per group
        assert len(np.unique(groups[:, 0])) == 8  # distinct clips across groups
    t = _check_both_modes(s, n_triplets=2000)
    assert (t[:, 0] == t[:, 1]).all() and (t[:, 2] != t[:, 0]).all()
    assert len(np.unique(t[:, 2])) == 50  # negatives range over all clips
    assert s.plan(6, 32, group=4, rng=1) == plans and np.array_equal(InstanceSampler(50).triplets(99, rng=5),
                                                                     s.triplets(99, rng=5))
    with pytest.raises(ValueError, match="n_items"):
        InstanceSampler(1)
    with pytest.raises(ValueError, match="group"):
        s.plan(1, 32, group=1)


class _FakeFile:
    """The parts of train.feed.FeatureFile that Crops and clip_statistics read; frame t of clip i is
    the value 1000 * i + t in every bin, so a crop tells its clip and start."""

    def __init__(self, n_frames, features=("mel", "mfcc"), widths=(3, 2)):
        self.n_frames = np.asarray(n_frames, np.int64)
        self.features, self.widths, self.bins = tuple(features), list(widths), sum(widths)
        self.labels = np.zeros((len(n_frames), 2), np.uint8)
        self.mp3_path = np.array([f"{i}.mp3" for i in range(len(n_frames))])

    def crop(self, i, start, length):
        t = np.arange(start, start + length, dtype=np.float32)
        out = np.repeat((1000.0 * i + t)[None], self.bins, axis=0)
        out[self.widths[0]:] *= -1.0  # the second feature: negated, to tell the rows apart
        return out

    def pieces(self, i, start, length, version=0):
        """As FeatureFile.pieces: per feature, its frames x bins in two pieces (as if across a chunk)."""
        full, row, half = self.crop(i, start, length), 0, length // 2
        for w in self.widths:
            yield row, w, 0, full[row:row + w, :half].T
            yield row, w, half, full[row:row + w, half:].T
            row += w


def test_random_crops_of_one_clip_twice_are_two_different_crops():
    from train.feed import Crops

    ff = _FakeFile([600, 600, 600])
    crops = Crops(ff, np.arange(3), 100, np.zeros(5, np.float32), np.ones(5, np.float32), "random")
    torch.manual_seed(0)
    x, _ = crops.__getitems__([1, 1, 1, 1, 2])  # an instance plan: one clip four times
    starts = x[:, 0, 0].numpy() - 1000 * np.array([1, 1, 1, 1, 2])
    assert len(np.unique(starts[:4])) == 4 and (starts >= 0).all() and (starts <= 500).all()


# --- latent -------------------------------------------------------------------------------------------

_TAGS = ["vocal", "vocals", "voice", "pop", "female", "classical", "classic", "violin", "no vocal",
         "no vocals", "rock", "guitar"]


def _synonym_labels():
    """A tiny labelled set where synonyms co-occur with the same tags (and sometimes each other)."""
    rows = []
    for voc in (["vocal"], ["vocals"], ["voice"], ["vocal", "vocals"], ["vocals", "voice"]):
        rows += [voc + ["pop"], voc + ["pop", "female"], voc + ["female"]]
    for cla in (["classical"], ["classic"], ["classical", "classic"]):
        for nov in (["no vocal"], ["no vocals"]):
            rows += [cla + ["violin"] + nov, cla + nov]
    rows += [["rock", "guitar"], ["rock"], ["guitar", "rock"], ["rock", "guitar"]]
    rows += [["female", "voice", "classical", "violin"], ["rock", "vocals", "guitar"], []]  # bridges; no tag
    y = np.zeros((len(rows), len(_TAGS)), np.uint8)
    for r, tags in enumerate(rows):
        y[r, [_TAGS.index(t) for t in tags]] = 1
    return y, rows


def test_latent_tag_embedding_makes_synonyms_close():
    y, _ = _synonym_labels()
    v = tag_embedding(y, dim=3)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = dict(((a, b), float(v[_TAGS.index(a)] @ v[_TAGS.index(b)])) for a in _TAGS for b in _TAGS)
    for a, b in [("vocal", "vocals"), ("vocal", "voice"), ("classical", "classic"), ("no vocal", "no vocals")]:
        assert cos[a, b] > 0.9, (a, b, cos[a, b])
    for a, b in [("vocal", "classical"), ("pop", "violin"), ("rock", "female"), ("vocals", "no vocals")]:
        assert abs(cos[a, b]) < 0.3, (a, b, cos[a, b])
    z = clip_latents(y, tag_embedding(y, dim=3))
    assert np.isnan(z[-1]).all() and np.allclose(np.linalg.norm(z[:-1], axis=1), 1)


def test_latent_sampler_pairs_by_meaning_not_by_shared_tags():
    y, rows = _synonym_labels()
    s = make_sampler("latent", y, dim=3, k=2)
    which = {" ".join(r): i for i, r in reversed(list(enumerate(rows)))}
    items = [which[t] for t in ("vocal pop", "vocals pop", "voice female", "classical violin no vocal",
                                "classic no vocals", "rock guitar", "")]
    pos, neg = s.masks(items)
    # Synonyms: no tag in common with the first but "pop", or none at all, still positives,
    # where the tag sampler's masks call the last two pairs negatives.
    assert pos[0, 1] and pos[0, 2] and pos[3, 4]
    tag_neg = TagSampler(y).masks(items)[1]
    assert tag_neg[0, 2] and tag_neg[3, 4]
    # Vocal pop, instrumental classical, rock: negatives of each other.
    for a, b in [(0, 3), (0, 4), (1, 5), (3, 5), (4, 2)]:
        assert neg[a, b] and neg[b, a] and not pos[a, b], (a, b)
    assert not pos[6].any() and not neg[6].any() and not neg[:, 6].any()  # no tags: no position
    assert not s.valid[which[""]] and which[""] not in s.anchors
    t = _check_both_modes(s)
    assert not np.isin(t, which[""]).any()
    lat = s.latents
    assert (np.einsum("ij,ij->i", lat[t[:, 0]], lat[t[:, 2]]) < 0.3).all()
    with pytest.raises(ValueError, match="similarity"):
        LatentSampler(y, pos_similarity=0.2, neg_similarity=0.5)
    with pytest.raises(ValueError, match="dim"):
        tag_embedding(y, dim=13)


# --- neighbour samplers: timbre, beat -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["timbre", "beat"])
def test_neighbour_sampler_positives_are_nearest_negatives_far(name):
    x, cluster = _clusters()
    labels = np.zeros((len(x), 3), np.uint8)
    s = make_sampler(name, labels, stats=x, k=5)
    assert s.name == name and len(s.anchors) == len(x)
    for i in range(len(x)):
        assert set(s.neighbours(i)) == set(np.flatnonzero(cluster == cluster[i])) - {i}
    perm = np.random.default_rng(0).permutation(len(x))
    pos, neg = s.masks(perm)
    same = cluster[perm][:, None] == cluster[perm][None, :]
    assert np.array_equal(pos.numpy(), same & ~np.eye(len(x), dtype=bool))
    assert np.array_equal(neg.numpy(), ~same)
    for plan in s.plan(10, 16, group=4, rng=0):  # four anchors with three of their cluster mates each
        groups = cluster[np.array(plan)].reshape(4, 4)
        assert (groups == groups[:, :1]).all() and len(np.unique(groups[:, 0])) == 4
    t = _check_both_modes(s, n_triplets=1000)
    assert (cluster[t[:, 0]] == cluster[t[:, 1]]).all() and (cluster[t[:, 0]] != cluster[t[:, 2]]).all()
    assert (t[:, 0] != t[:, 1]).all()
    # Reproducible for a seed, and a new draw for another generator.
    again = make_sampler(name, labels, stats=x, k=5)
    assert again.plan(3, 16, rng=4) == s.plan(3, 16, rng=4)
    assert np.array_equal(again.triplets(200, rng=9), s.triplets(200, rng=9))
    assert not np.array_equal(s.triplets(200, rng=9), s.triplets(200, rng=10))


def test_neighbour_sampler_matches_brute_force_blockwise_and_in_bounded_memory():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)) * rng.uniform(0.1, 10, 6)  # columns of different scales
    x[[5, 77]] = np.nan  # two clips without statistics
    k, frac = 7, 0.2
    tracemalloc.start()
    s = NeighbourSampler(x, k=k, near_fraction=frac, block=16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.3 * 400 * 400 * 8  # far below one N x N float64 matrix
    ok = np.flatnonzero(np.isfinite(x).all(axis=1))
    z = (x[ok] - x[ok].mean(axis=0)) / x[ok].std(axis=0)
    m = int(np.ceil(frac * (len(ok) - 1)))
    d, nn = NearestNeighbors(n_neighbors=m + 1).fit(z).kneighbors(z)
    for r, i in enumerate(ok):
        assert set(s.neighbours(i)) == set(ok[nn[r, 1:k + 1]])
    # Negatives of anchor i: exactly the clips beyond its m nearest (less the positive pairs).
    pos, neg = s.masks(ok)
    far = np.ones((len(ok), len(ok)), bool)
    far[np.arange(len(ok))[:, None], nn[:, : m + 1]] = False
    assert np.array_equal(neg.numpy(), far & ~pos.numpy())
    knn = np.zeros_like(far)
    knn[np.arange(len(ok))[:, None], nn[:, 1:k + 1]] = True
    assert np.array_equal(pos.numpy(), knn | knn.T)
    one_block = NeighbourSampler(x, k=k, near_fraction=frac, block=1000)
    assert np.array_equal(one_block._cand, s._cand) and np.allclose(one_block._r_neg2, s._r_neg2, equal_nan=True)
    p_nan, n_nan = s.masks([5, 0, 1, 77])
    assert not p_nan[0].any() and not n_nan[:, 0].any() and not n_nan[3].any()
    t = _check_both_modes(s, n_triplets=500)
    assert not np.isin(t, [5, 77]).any()


def test_neighbour_sampler_ties_and_errors():
    # 12 clips with the same statistics and 12 with other ones: all 11 twins are positives.
    x = np.repeat([[0.0, 0.0], [1.0, 1.0]], 12, axis=0)
    s = NeighbourSampler(x, k=3, n_candidates=20)
    pos, neg = s.masks(np.arange(24))
    block = np.kron(np.eye(2, dtype=bool), np.ones((12, 12), bool))
    assert np.array_equal(pos.numpy(), block & ~np.eye(24, dtype=bool)) and np.array_equal(neg.numpy(), ~block)
    assert all(len(s.neighbours(i)) == 11 for i in range(24))
    with pytest.raises(ValueError, match="points"):
        NeighbourSampler(np.zeros(5))
    with pytest.raises(ValueError, match="k=5 needs"):
        NeighbourSampler(np.random.default_rng(0).random((6, 2)), k=5)
    with pytest.raises(ValueError, match="near_fraction"):
        NeighbourSampler(x, near_fraction=1.0)
    with pytest.raises(ValueError, match="no clip has both"):
        NeighbourSampler(np.ones((10, 3)), k=2)
    with pytest.raises(ValueError, match="items"):
        s.masks([0, 24])
    with pytest.raises(ValueError, match="stats"):
        make_sampler("timbre", np.zeros((24, 2)))
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("genre", np.zeros((24, 2)))


def test_every_sampler_name_builds_and_feeds_both_modes():
    y, _ = _synonym_labels()
    stats = np.random.default_rng(0).standard_normal((len(y), 4))
    for name in SAMPLERS:
        s = make_sampler(name, y, stats=stats, seed=1, **({"dim": 3} if name == "latent" else {}))
        assert s.name == name and s.n_items == len(y)
        _check_both_modes(s, batch=8, group=2)


# --- timbre statistics ----------------------------------------------------------------------------------


def test_timbre_statistics_streamed_from_the_file():
    ff = _FakeFile([50, 80, 65])
    got = clip_statistics(ff, [2, 0])
    for r, i in enumerate([2, 0]):
        mfcc = -(1000.0 * i + np.arange(ff.n_frames[i]))[:, None].repeat(2, axis=1)
        assert np.allclose(got[r], np.r_[mfcc.mean(axis=0), mfcc.std(axis=0)])
    assert np.allclose(timbre_statistics(np.array([[1.0, 2.0], [3.0, 6.0]])), [2, 4, 1, 2])
    with pytest.raises(ValueError, match="chroma"):
        clip_statistics(ff, [0], feature="chroma")


# --- rhythm statistics ----------------------------------------------------------------------------------


def _click_mel(bpm: float, seconds: float = 10.0, params=FeatureParams()):
    import librosa

    from features.frontend import FrontEnd

    y = librosa.clicks(times=np.arange(0.05, seconds, 60.0 / bpm), sr=params.sr, length=int(seconds * params.sr))
    return FrontEnd(("mel",), params)(torch.from_numpy(y.astype(np.float32))[None])["mel"][0].numpy()


def _octave_error(estimate: float, truth: float) -> float:
    """Relative error of a tempo estimate, forgiving a factor of 2 either way."""
    return min(abs(estimate * f - truth) / truth for f in (0.5, 1.0, 2.0))


def test_rhythm_tempo_of_click_tracks():
    from features.rhythm import RHYTHM_FIELDS, rhythm_statistics

    got = {bpm: dict(zip(RHYTHM_FIELDS, rhythm_statistics(_click_mel(bpm)))) for bpm in (120, 90)}
    for bpm, st in got.items():
        assert _octave_error(st["tempo"], bpm) < 0.03, (bpm, st["tempo"])
        assert st["onset_rate"] == pytest.approx(bpm / 60, rel=0.1)  # one onset per click
        assert st["ioi_cv"] < 0.05 and st["pulse_clarity"] > 0.5  # a metronome
    # librosa's prior (120 BPM, one octave) takes both at their own octave.
    assert got[120]["tempo"] == pytest.approx(120, rel=0.03) and got[90]["tempo"] == pytest.approx(90, rel=0.03)
    assert got[120]["tempogram_120"] > got[120]["tempogram_85"] and got[90]["tempogram_85"] > got[90]["tempogram_120"]


def test_rhythm_tempogram_batch_silence_and_errors():
    import librosa

    from features.rhythm import RHYTHM_FIELDS, onset_envelope, rhythm_batch, rhythm_statistics, tempogram

    p = FeatureParams()
    mel = _click_mel(120, seconds=6.0)
    env = onset_envelope(mel, p)
    full = librosa.feature.tempogram(onset_envelope=env, sr=p.sr, hop_length=p.hop_length, win_length=500)
    assert np.allclose(tempogram(env, p, step=1), full, atol=1e-6)
    assert np.allclose(tempogram(env, p, step=31), full[:, ::31], atol=1e-6)
    # A batch as the front-end gives it: zero padding past each clip's frames is left out.
    short = mel[:250]
    padded = np.zeros((2, len(mel), p.n_mels), np.float32)
    padded[0], padded[1, :250] = mel, short
    batch = rhythm_batch(padded, [len(mel), 250], p)
    assert batch.shape == (2, len(RHYTHM_FIELDS))
    assert np.allclose(batch[0], rhythm_statistics(mel, p)) and np.allclose(batch[1], rhythm_statistics(short, p))
    assert np.isfinite(batch).all()
    assert not rhythm_statistics(np.full((300, p.n_mels), -80.0), p).any()  # silence: all zeros
    with pytest.raises(ValueError, match="n_mels"):
        rhythm_statistics(np.zeros((300, 40)), p)
    with pytest.raises(ValueError, match="n_frames"):
        rhythm_batch(padded, [10], p)


def test_beat_sampler_on_rhythm_statistics_groups_by_tempo():
    from features.rhythm import rhythm_statistics

    tempi = np.repeat([72.0, 100.0, 140.0], 4) * np.tile([1.0, 1.01, 0.99, 1.02], 3)
    stats = np.stack([rhythm_statistics(_click_mel(t, seconds=6.0)) for t in tempi])
    s = make_sampler("beat", np.zeros((12, 1)), stats=stats[:, :1], k=3)  # the tempo alone
    group = np.repeat(np.arange(3), 4)
    for i in range(12):
        assert set(group[s.neighbours(i)]) == {group[i]}, (i, tempi[i], stats[s.neighbours(i), 0])
