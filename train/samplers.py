"""Samplers: which training clips count as positives and negatives of each other.

Every sampler offers one interface, :class:`PairSampler` (built by name with :func:`make_sampler`),
that serves both ways of training: a P x K batch plan with the ``(positive, negative)`` masks of a
batch for ``train.losses.batch_triplet_loss(..., masks=...)``, and sampled ``(anchor, positive,
negative)`` triplets. The samplers (``SAMPLERS``, from ``train.registry``); a new one belongs here:

============  ==================================================================================
``tag``       the course's: a shared tag (:class:`TagSampler` over ``train.tag_samplers``)
``overlap``   multi-label overlap (the same, ``overlap=True``)
``instance``  another crop of the same clip, no labels needed (:class:`InstanceSampler`)
``latent``    similar tags in a latent space from an SVD of the clip x tag matrix, so that
              synonyms count (:class:`LatentSampler`)
``timbre``    nearest clips by MFCC mean and spread (:class:`NeighbourSampler` on
              ``features.timbre.timbre_statistics`` per clip)
``beat``      nearest clips by tempo and rhythm statistics (:class:`NeighbourSampler` on
              ``features.rhythm.rhythm_statistics``)
============  ==================================================================================
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from train.losses import graded_negatives, triplet_masks
from train.registry import GROUP, SAMPLERS
from train.tag_samplers import TagTripletSampler, _as_labels, _generator, pk_sampler

__all__ = ["SAMPLERS", "PairSampler", "TagSampler", "InstanceSampler", "NeighbourSampler", "LatentSampler",
           "tag_embedding", "clip_latents", "make_sampler"]

class PairSampler:
    """What every sampler offers the trainer, in both ways of training.

    Items are training-set positions ``0 .. n_items - 1`` (row ``i`` of the labels or statistics
    given to the sampler); the feed turns an item into a crop of that clip, a new random one each
    time it appears, so the same item twice in a batch is two crops of one clip.

    - In-batch mining: :meth:`plan` lays out the batches of an epoch as groups of ``group``
      items meant as positives of each other (P groups x K items), and :meth:`masks` says which
      pairs of a batch are positive and negative; ``batch_triplet_loss(emb, masks=...)`` mines
      the triplets from them.
    - Sampled triplets (``--mining none``): :meth:`triplets` draws ``(anchor, positive,
      negative)`` items; :meth:`triplet_batches` cuts them into batches.

    Every method takes ``rng``, a ``numpy.random.Generator`` or a seed; ``None`` advances the
    sampler's own generator, seeded at construction, so a fixed ``rng`` (e.g. one per epoch)
    makes an epoch reproducible.

    Attributes
    ----------
    name : str
        One of ``SAMPLERS``.
    n_items : int
        Training items the sampler draws from.
    """

    name = ""

    def __init__(self, n_items: int, seed: int = 0):
        self.n_items = int(n_items)
        self._rng = np.random.default_rng(seed)

    def masks(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive and negative pairs of a batch of items.

        Parameters
        ----------
        items : array-like of int
            The batch's item indices, in batch order (repeats allowed).

        Returns
        -------
        positive : torch.Tensor
            ``(B, B)`` boolean, symmetric, ``False`` on the diagonal.
        negative : torch.Tensor
            ``(B, B)`` boolean ``[anchor, negative]``, or ``(B, B, B)`` ``[anchor, positive,
            negative]`` where negatives depend on the positive (graded tags). Never ``True``
            where ``positive`` is.
        """
        raise NotImplementedError

    def plan(self, n_batches: int, batch: int, group: int = GROUP, rng=None) -> list[list[int]]:
        """``n_batches`` batches of about ``batch`` items: ``batch // group`` groups of ``group``.

        Usable as the ``batch_sampler`` of a ``DataLoader``. A batch can come out a little
        smaller where groups would repeat an item (see each sampler).
        """
        raise NotImplementedError

    def triplets(self, n: int, rng=None) -> np.ndarray:
        """``(n, 3)`` int64 items ``(anchor, positive, negative)``."""
        raise NotImplementedError

    def triplet_batches(self, n: int, batch: int, rng=None) -> Iterator[np.ndarray]:
        """:meth:`triplets` of one epoch cut into ``(batch, 3)`` arrays (the last may be shorter)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        triplets = self.triplets(n, rng)
        for s in range(0, len(triplets), batch):
            yield triplets[s : s + batch]

    def _items(self, items) -> np.ndarray:
        it = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(it) and (it.min() < 0 or it.max() >= self.n_items):
            raise ValueError(f"items must be in 0..{self.n_items - 1}, got {it.min()}..{it.max()}")
        return it

    @staticmethod
    def _check_plan(n_batches: int, batch: int, group: int) -> int:
        if n_batches < 1 or group < 2 or batch < group:
            raise ValueError(f"need n_batches >= 1, group >= 2 and batch >= group; got n_batches={n_batches}, "
                             f"batch={batch}, group={group}")
        return batch // group


class TagSampler(PairSampler):
    """The tag samplers (``'tag'``, ``'overlap'``) behind the common interface.

    Masks are :func:`triplet_masks` of the batch's tags (with ``graded``, the negatives of
    :func:`graded_negatives`); plans are :func:`pk_sampler`'s P tags x K clips; triplets are
    :class:`TagTripletSampler`'s. For the same ``rng`` they give exactly what those give, so a
    trainer switched to this interface repeats its earlier epochs. The course's ``'tag'``
    triplets keep their own rule: the negative lacks the tag drawn for the triplet, so it may
    share another tag with the anchor and not be a negative by :meth:`masks`.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tags of the training clips.
    overlap : bool
        Triplets by multi-label overlap (``'overlap'``) or the course's (``'tag'``).
    graded : bool
        In-batch negatives graded by tag overlap (``--negatives graded``).
    min_jaccard : float or None
        See :func:`triplet_masks`.
    jaccard_power : float
        See :class:`TagTripletSampler`.
    seed : int

    Notes
    -----
    The tag samplers are built at the first :meth:`plan` or :meth:`triplets`, which raise
    their ``ValueError`` when the labels cannot feed them.
    """

    def __init__(self, labels, overlap: bool = False, graded: bool = False, min_jaccard: float | None = None,
                 jaccard_power: float = 1.0, seed: int = 0):
        self.labels = _as_labels(labels)
        super().__init__(len(self.labels), seed)
        self.name = "overlap" if overlap else "tag"
        self.overlap, self.graded, self.min_jaccard = bool(overlap), bool(graded), min_jaccard
        self.jaccard_power, self.seed = jaccard_power, seed
        self._triplet_sampler = None
        self._pk = {}

    def masks(self, items):
        y = torch.from_numpy(self.labels[self._items(items)])
        positive, negative = triplet_masks(y, self.min_jaccard)
        return positive, graded_negatives(y) if self.graded else negative

    def plan(self, n_batches, batch, group=GROUP, rng=None):
        self._check_plan(n_batches, batch, group)
        key = (n_batches, batch, group)
        if key not in self._pk:
            self._pk[key] = pk_sampler(self.labels, batch, n_batches, per_tag=group)
        return self._pk[key].epoch(_generator(rng, self._rng))

    def triplets(self, n, rng=None):
        if self._triplet_sampler is None:
            self._triplet_sampler = TagTripletSampler(self.labels, n_triplets=1, seed=self.seed, overlap=self.overlap,
                                                      jaccard_power=self.jaccard_power)
        return self._triplet_sampler.sample(n, _generator(rng, self._rng))


class InstanceSampler(PairSampler):
    """Instance discrimination: an item's positives are other crops of the same clip.

    No labels are needed. In a batch, two items are positive when they are the same clip (two
    crops, drawn independently by the feed) and negative when they are different clips. A plan
    holds ``batch // group`` distinct clips, each ``group`` times in a row; a triplet is
    ``(a, a, n)`` with ``n`` any other clip, uniformly.

    Parameters
    ----------
    n_items : int
        Training clips (>= 2).
    seed : int
    """

    name = "instance"

    def __init__(self, n_items: int, seed: int = 0):
        if n_items < 2:
            raise ValueError(f"n_items must be >= 2 for a negative, got {n_items}")
        super().__init__(n_items, seed)

    def masks(self, items):
        it = torch.from_numpy(self._items(items))
        same = it[:, None] == it[None, :]
        return same & ~torch.eye(len(it), dtype=torch.bool), ~same

    def plan(self, n_batches, batch, group=GROUP, rng=None):
        p = min(self._check_plan(n_batches, batch, group), self.n_items)
        rng = _generator(rng, self._rng)
        return [np.repeat(rng.choice(self.n_items, size=p, replace=False), group).tolist() for _ in range(n_batches)]

    def triplets(self, n, rng=None):
        rng = _generator(rng, self._rng)
        a = rng.integers(self.n_items, size=n)
        k = rng.integers(self.n_items - 1, size=n)
        return np.stack([a, a, k + (k >= a)], axis=1).astype(np.int64)


def _sq_distances(a: np.ndarray, b: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray) -> np.ndarray:
    # Squared Euclidean distances by the expansion, clamped at 0 against rounding.
    return np.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * (a @ b.T), 0.0)


class NeighbourSampler(PairSampler):
    """Positives among each clip's nearest clips by per-clip statistics; negatives far off.

    The ``timbre``, ``beat`` and (through :class:`LatentSampler`) ``latent`` samplers. With
    ``d`` the Euclidean distance between the (standardised or normalised) statistics of two
    clips, and for each clip ``i``:

    - ``r_pos(i)``: its distance to its ``k``-th nearest other clip, or ``pos_radius`` if
      larger. Items ``i`` and ``j`` are **positive** when ``d <= r_pos(i)`` or ``d <= r_pos(j)``
      (one is among the other's ``k`` nearest: symmetric, and ties at the ``k``-th distance
      count, so clips with equal statistics are always positives of each other).
    - ``r_neg(i)``: its distance to its ``m``-th nearest, ``m = max(k, ceil(near_fraction *
      (N - 1)))``, or ``neg_radius`` if larger. ``j`` is a **negative** of anchor ``i`` when
      ``d > r_neg(i)`` (outside ``i``'s nearest ``near_fraction`` of the clips) and the pair is
      not positive. Clips in between are neither, which leaves a margin of ignored clips.

    Rows with a non-finite value (statistics missing for that clip) have no position: they are
    never anchors, positives or negatives. A plan's group is an anchor and ``group - 1`` of its
    positives (so every member has the anchor as a positive; members are positives of each other
    only where their distances say so). Groups do not share clips: an anchor already in the
    batch, or without ``group - 1`` positives not yet in it, is passed over for the next of
    ``4 P`` drawn anchors (a batch comes out smaller only where those run out). A triplet
    takes a uniform anchor, a positive uniformly among (up to ``n_candidates`` of) its positives
    and a negative uniformly among its negatives (by rejection, exact after a few rounds).

    Memory stays bounded for any ``N``: the radii and the candidate positives come from one pass
    over blocks of ``block`` rows against all clips (``block x N`` distances at a time, no
    ``N x N`` matrix); kept are ``N x n_candidates`` indices and two radii per clip. At 20,000
    clips the pass holds a few ``block x N`` arrays of 20 MB (``block=128``) and takes about
    half a minute on two busy cores (mostly ``np.partition``); plans and triplets are then cheap
    (an epoch of 600 batches: 0.1 s).

    Parameters
    ----------
    points : np.ndarray
        ``(N, d)`` statistics, row ``i`` = item ``i``.
    k : int
        Nearest clips that count as positives (default 5: a tight neighbourhood, still a few
        distinct positives per anchor for P x K groups of 4).
    near_fraction : float
        Fraction of the nearest clips that are not negatives (default 0.1: negatives are the
        90 % farthest, so semi-hard mining still finds near ones).
    standardize : bool
        Scale each column to zero mean and unit variance over the clips first (statistics of
        different units: MFCC means and spreads, BPM and onset rates); constant columns are
        left at 0.
    normalize : bool
        Scale each row to unit length first (the distance then ranks by cosine similarity);
        rows of zero length have no position.
    pos_radius, neg_radius : float or None
        Lower bounds of ``r_pos`` and ``r_neg``, in the distance's units (see
        :class:`LatentSampler`).
    n_candidates : int
        Positives kept per clip for drawing (a random subset where more than this tie).
    block : int
        Rows per block of the neighbour pass.
    seed : int

    Attributes
    ----------
    valid : np.ndarray
        ``(N,)`` boolean, rows with a position.
    anchors : np.ndarray
        Items with at least one positive and one negative: those plans and triplets anchor on.

    Raises
    ------
    ValueError
        On bad parameters, too few clips with a position for ``k``, or no usable anchor.
    """

    name = "neighbour"

    def __init__(self, points, k: int = 5, near_fraction: float = 0.1, standardize: bool = True,
                 normalize: bool = False, pos_radius: float | None = None, neg_radius: float | None = None,
                 n_candidates: int = 32, block: int = 128, seed: int = 0):
        x = np.array(points, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"points must be (N, d) per-clip statistics, got shape {x.shape}")
        if k < 1 or n_candidates < 1 or block < 1:
            raise ValueError(f"k, n_candidates and block must be >= 1, got {k}, {n_candidates}, {block}")
        if not 0 < near_fraction < 1:
            raise ValueError(f"near_fraction must be in (0, 1), got {near_fraction}")
        super().__init__(len(x), seed)
        init_rng, self._rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        valid = np.isfinite(x).all(axis=1)
        if normalize:
            norm = np.linalg.norm(np.where(valid[:, None], x, 0.0), axis=1)
            valid &= norm > 0
            x[valid] /= norm[valid, None]
        if standardize and valid.any():
            mean, std = x[valid].mean(axis=0), x[valid].std(axis=0)
            x[valid] = (x[valid] - mean) / np.where(std > 0, std, 1.0)
        x[~valid] = np.nan
        rows = np.flatnonzero(valid)
        n = len(rows)
        if n < k + 2:
            raise ValueError(f"points: {n} clip(s) with finite statistics; k={k} needs at least {k + 2}")
        self.valid, self.k, self.near_fraction = valid, int(k), float(near_fraction)
        self._z, self._sq = x, np.einsum("ij,ij->i", x, x)
        # Rounding of the expansion is ~1e-16 of the squared norms; this absorbs it, nothing real.
        self._atol = 1e-9 * (1.0 + float(np.nanmax(self._sq)))
        m = max(self.k, int(np.ceil(self.near_fraction * (n - 1))))
        if m >= n - 1:
            raise ValueError(f"near_fraction={near_fraction} leaves no negative among {n} clips")
        self._r_pos2 = np.full(len(x), np.nan)
        self._r_neg2 = np.full(len(x), np.nan)
        n_cand = min(int(n_candidates), n - 1)
        self._cand = np.full((len(x), n_cand), -1, np.int64)
        self._n_cand = np.zeros(len(x), np.int64)
        n_neg = np.zeros(len(x), np.int64)
        z, sq = x[rows], self._sq[rows]
        lo2 = (pos_radius or 0.0) ** 2, (neg_radius or 0.0) ** 2
        for s in range(0, n, block):
            d2 = _sq_distances(z[s : s + block], z, sq[s : s + block], sq)
            b = np.arange(len(d2))
            d2[b, s + b] = np.inf  # not its own neighbour (nor its own negative, below)
            part = np.partition(d2, [self.k - 1, m - 1], axis=1)
            r_pos2 = np.maximum(part[:, self.k - 1], lo2[0])
            r_neg2 = np.maximum(np.maximum(part[:, m - 1], lo2[1]), r_pos2)
            del part
            at = rows[s : s + block]
            self._r_pos2[at], self._r_neg2[at] = r_pos2, r_neg2
            within = d2 <= r_pos2[:, None] + self._atol
            n_neg[at] = (d2 > r_neg2[:, None] + self._atol).sum(axis=1) - 1
            # A uniform subset of the positives: the n_cand smallest random keys among them; the
            # keys are drawn in row order, so the result does not depend on the block size.
            r, c = np.nonzero(within)
            del d2, within
            order = np.lexsort((init_rng.random(len(r)), r))
            r, c = r[order], c[order]
            rank = np.arange(len(r)) - np.searchsorted(r, r)  # place among its row's positives
            keep = rank < n_cand
            self._cand[at[r[keep]], rank[keep]] = rows[c[keep]]
            self._n_cand[at] = np.minimum(np.bincount(r, minlength=len(at)), n_cand)
        self._rows = rows
        self.anchors = np.flatnonzero(valid & (self._n_cand > 0) & (n_neg > 0))
        if len(self.anchors) == 0:
            raise ValueError("points: no clip has both a positive and a negative (are the statistics all equal?)")

    def _positive(self, i: np.ndarray, j: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return (d2 <= self._r_pos2[i] + self._atol) | (d2 <= self._r_pos2[j] + self._atol)

    def _pair_d2(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        # The expansion, as in the neighbour pass, so that radii compare like with like.
        return np.maximum(self._sq[i] + self._sq[j] - 2.0 * np.einsum("ij,ij->i", self._z[i], self._z[j]), 0.0)

    def _is_negative(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        d2 = self._pair_d2(a, c)
        return (d2 > self._r_neg2[a] + self._atol) & ~self._positive(a, c, d2) & self.valid[c]

    def masks(self, items):
        it = self._items(items)
        d2 = _sq_distances(self._z[it], self._z[it], self._sq[it], self._sq[it])
        both = self.valid[it][:, None] & self.valid[it][None, :] & ~np.eye(len(it), dtype=bool)
        positive = self._positive(it[:, None], it[None, :], d2) & both
        negative = (d2 > self._r_neg2[it][:, None] + self._atol) & ~positive & both
        return torch.from_numpy(positive), torch.from_numpy(negative)

    def neighbours(self, i: int) -> np.ndarray:
        """The positives item ``i`` draws from (up to ``n_candidates`` of them)."""
        return self._cand[i, : self._n_cand[i]].copy()

    def plan(self, n_batches, batch, group=GROUP, rng=None):
        p = self._check_plan(n_batches, batch, group)
        rng = _generator(rng, self._rng)
        out = []
        for _ in range(n_batches):
            chosen: list[int] = []
            taken: set[int] = set()
            groups = 0
            # Anchors in turn from a few times P drawn; one already in the batch, or with too few
            # positives not yet in it, is passed over, so that groups stay whole and distinct.
            for a in rng.choice(self.anchors, size=min(4 * p, len(self.anchors)), replace=False):
                if int(a) in taken:
                    continue
                cand = self.neighbours(a)
                fresh = [int(c) for c in rng.permutation(cand) if int(c) not in taken][: group - 1]
                if len(fresh) < min(group - 1, len(cand)):
                    continue
                chosen += [int(a), *fresh]
                taken.update([int(a), *fresh])
                groups += 1
                if groups == p:
                    break
            out.append(chosen)
        return out

    def triplets(self, n, rng=None, rounds: int = 8):
        rng = _generator(rng, self._rng)
        a = self.anchors[rng.integers(len(self.anchors), size=n)]
        p = self._cand[a, (rng.random(n) * self._n_cand[a]).astype(np.int64)]
        neg = np.full(n, -1, np.int64)
        todo = np.arange(n)
        for _ in range(rounds):  # rejection: most clips are negatives of a given anchor
            c = self._rows[rng.integers(len(self._rows), size=len(todo))]
            ok = self._is_negative(a[todo], c)
            neg[todo[ok]] = c[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        for t in todo:  # the rare anchor with few negatives: draw among all of them
            c = self._rows[self._is_negative(np.full(len(self._rows), a[t]), self._rows)]
            if len(c) == 0:  # its far clips all have it among their nearest: a degenerate set
                raise ValueError(f"points: clip {a[t]} has no negative; use a larger k or a smaller near_fraction")
            neg[t] = rng.choice(c)
        return np.stack([a, p, neg], axis=1)


def tag_embedding(labels, dim: int = 16) -> np.ndarray:
    """Tag vectors from a truncated SVD of the clip x tag matrix (latent semantic analysis).

    With ``Y = U S V^T`` the ``(N, n_tags)`` 0/1 matrix, tag ``t`` gets row ``t`` of
    ``V[:, :dim] S[:dim]``, computed from the eigen-decomposition of the tag co-occurrence
    ``Y^T Y = V S^2 V^T`` (``n_tags x n_tags``, whatever ``N``). Tags used on the same kinds
    of clips, synonyms such as *vocal* / *vocals* / *voice* above all, get nearly parallel
    vectors; on MTAT's 50 tags, ``dim=16`` gives cosines above 0.85 for those and for *no
    vocal* / *no vocals*, *classical* / *classic*, near 0 for unrelated tags.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tags of the training clips.
    dim : int
        Latent dimensions (at most ``n_tags``).

    Returns
    -------
    np.ndarray [shape=(n_tags, dim)]
        float64; a tag on no clip gets the zero vector.
    """
    y = _as_labels(labels).astype(np.float64)
    if not 1 <= dim <= y.shape[1]:
        raise ValueError(f"dim must be in 1..{y.shape[1]} (the number of tags), got {dim}")
    w, v = np.linalg.eigh(y.T @ y)
    top = np.argsort(w)[::-1][:dim]
    return v[:, top] * np.sqrt(np.maximum(w[top], 0.0))


def clip_latents(labels, tag_vectors: np.ndarray) -> np.ndarray:
    """Each clip's latent vector: the normalised sum of its tags' vectors.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tags.
    tag_vectors : np.ndarray
        ``(n_tags, dim)``, e.g. from :func:`tag_embedding`.

    Returns
    -------
    np.ndarray [shape=(N, dim)]
        Unit rows; NaN rows for clips without a tag (or whose vectors cancel): they have no
        latent position.
    """
    y = _as_labels(labels).astype(np.float64)
    if tag_vectors.ndim != 2 or len(tag_vectors) != y.shape[1]:
        raise ValueError(f"tag_vectors must be ({y.shape[1]}, dim), got shape {tag_vectors.shape}")
    z = y @ tag_vectors
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 1e-12, z / norm, np.nan)


class LatentSampler(NeighbourSampler):
    """Positives and negatives by similarity of the clips' tags in a latent space.

    Tags are embedded by :func:`tag_embedding` (truncated SVD of the training clip x tag
    matrix) and each clip by :func:`clip_latents`; with ``cos`` the cosine similarity of two
    clips' latent vectors, a pair is **positive** when ``cos >= pos_similarity`` or one is among
    the other's ``k`` nearest, and ``j`` is a **negative** of ``i`` when ``cos <
    neg_similarity`` and ``j`` is outside ``i``'s nearest ``near_fraction`` (the rules of
    :class:`NeighbourSampler` on unit vectors, where ``d^2 = 2 - 2 cos``). So a clip tagged
    *vocals, pop* is a positive of one tagged *vocal, pop*, which the tag samplers count as
    sharing only one of three tags. Clips without tags have no position.

    On MTAT's tags (``dim=16``) about 7 % of clip pairs reach cosine 0.8, mostly pairs sharing
    a tag, and 65 % stay below 0.3.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tags of the training clips.
    dim : int
        Latent dimensions.
    pos_similarity, neg_similarity : float
        Cosine thresholds, ``-1 <= neg_similarity < pos_similarity <= 1``.
    k, near_fraction, n_candidates, block, seed
        As in :class:`NeighbourSampler`.

    Attributes
    ----------
    tag_vectors : np.ndarray
        ``(n_tags, dim)``.
    latents : np.ndarray
        ``(N, dim)`` unit clip vectors (NaN rows for untagged clips).
    """

    name = "latent"

    def __init__(self, labels, dim: int = 16, pos_similarity: float = 0.8, neg_similarity: float = 0.3,
                 k: int = 5, near_fraction: float = 0.1, n_candidates: int = 32, block: int = 128, seed: int = 0):
        if not -1 <= neg_similarity < pos_similarity <= 1:
            raise ValueError(f"need -1 <= neg_similarity < pos_similarity <= 1, got {neg_similarity}, {pos_similarity}")
        self.tag_vectors = tag_embedding(labels, dim)
        self.latents = clip_latents(labels, self.tag_vectors)
        super().__init__(self.latents, k=k, near_fraction=near_fraction, standardize=False, normalize=True,
                         pos_radius=np.sqrt(2 - 2 * pos_similarity), neg_radius=np.sqrt(2 - 2 * neg_similarity),
                         n_candidates=n_candidates, block=block, seed=seed)


def make_sampler(name: str, labels, stats=None, *, seed: int = 0, graded: bool = False, **kw) -> PairSampler:
    """The sampler called ``name`` (one of ``SAMPLERS``) for the training clips.

    Parameters
    ----------
    name : {'tag', 'overlap', 'instance', 'latent', 'timbre', 'beat'}
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tags of the training clips (``instance`` uses only ``N``).
    stats : np.ndarray or None
        ``(N, d)`` per-clip statistics, for ``timbre`` (e.g. :func:`clip_statistics` of the
        MFCC) and ``beat`` (``features.rhythm.rhythm_statistics`` per clip).
    seed : int
    graded : bool
        Graded in-batch negatives; tag samplers only (the others' negatives are their own).
    **kw
        Passed to the sampler's class (``k``, ``near_fraction``, ``dim`` ...).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name in ("tag", "overlap"):
        return TagSampler(labels, overlap=name == "overlap", graded=graded, seed=seed, **kw)
    if name == "instance":
        return InstanceSampler(len(labels), seed=seed, **kw)
    if name == "latent":
        return LatentSampler(labels, seed=seed, **kw)
    if stats is None or len(stats) != len(labels):
        raise ValueError(f"stats: the {name} sampler needs one row of statistics per training clip "
                         f"({len(labels)}), got {'none' if stats is None else len(stats)}")
    sampler = NeighbourSampler(stats, seed=seed, **kw)
    sampler.name = name
    return sampler
