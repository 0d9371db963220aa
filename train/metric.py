"""Metric learning on tags: triplet losses, in-batch mining and tag-based samplers.

Two ways to train an embedding so that clips sharing tags end up close:

- explicit triplets: :class:`TagTripletSampler` draws ``(anchor, positive, negative)`` clip
  indices from the label matrix and :func:`triplet_loss` scores the three embeddings;
- in-batch mining: :class:`BalancedTagBatchSampler` draws batches holding several clips per
  tag and :func:`batch_triplet_loss` forms the triplets inside each batch from the labels.

Labels are the ``(N, n_tags)`` 0/1 matrix of the tagging task. Two clips are *positive*
for each other when they share at least one tag (or, with ``min_jaccard``, when their tag
sets are similar enough), *negative* when they share none; with ``graded=True`` the in-batch
loss instead takes as negatives of a pair every clip overlapping the anchor less than the
positive does. Distances are either cosine (``1 - cos``, so a margin means the same thing as
in the course's cosine loss) or Euclidean.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "triplet_loss",
    "pairwise_distances",
    "triplet_masks",
    "batch_triplet_loss",
    "TagTripletSampler",
    "BalancedTagBatchSampler",
]

_DISTANCES = ("cosine", "euclidean")
_MININGS = ("semihard", "hard", "all")


def _check_distance(distance: str) -> None:
    if distance not in _DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {', '.join(_DISTANCES)}")


def _euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Clamped before the square root: sqrt has an infinite gradient at 0 (identical clips).
    return (a - b).pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 0.4,
    distance: str = "cosine",
) -> torch.Tensor:
    """Mean triplet loss of explicit ``(anchor, positive, negative)`` embeddings.

    With ``distance='cosine'`` (the course's loss)::

        mean(relu(margin - cos(a, p) + cos(a, n)))

    with ``distance='euclidean'``::

        mean(relu(||a - p|| - ||a - n|| + margin))

    Parameters
    ----------
    anchor, positive, negative : torch.Tensor
        Embeddings of shape ``(B, D)``, not necessarily normalised.
    margin : float
        Required gap between the positive and the negative similarity (distance).
    distance : {'cosine', 'euclidean'}

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Examples
    --------
    >>> a = torch.tensor([[1.0, 0.0]]); p = torch.tensor([[1.0, 1.0]]); n = torch.tensor([[0.0, 1.0]])
    >>> triplet_loss(a, p, n, margin=0.4)  # relu(0.4 - 0.7071 + 0)
    tensor(0.)
    """
    _check_distance(distance)
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() != 2:
        raise ValueError(
            f"anchor, positive, negative must have the same (B, D) shape, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    if distance == "cosine":
        gap = margin - F.cosine_similarity(anchor, positive, dim=1) + F.cosine_similarity(anchor, negative, dim=1)
    else:
        gap = _euclidean(anchor, positive) - _euclidean(anchor, negative) + margin
    return F.relu(gap).mean()


def pairwise_distances(embeddings: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """All pairwise distances of a batch of embeddings.

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(B, D)``.
    distance : {'cosine', 'euclidean'}
        ``1 - cos(x_i, x_j)`` or ``||x_i - x_j||``.

    Returns
    -------
    torch.Tensor
        ``(B, B)``, symmetric, 0 on the diagonal up to rounding.
    """
    _check_distance(distance)
    if distance == "cosine":
        z = F.normalize(embeddings, dim=1)
        return 1.0 - z @ z.T
    sq = embeddings.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * embeddings @ embeddings.T
    return d2.clamp_min(1e-12).sqrt()


def _overlap(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tag-set intersection and union sizes of every pair of rows of a 0/1 float matrix."""
    inter = y @ y.T
    size = y.sum(dim=1)
    return inter, size[:, None] + size[None, :] - inter


def triplet_masks(labels, min_jaccard: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks of a batch from its multi-label vectors.

    Parameters
    ----------
    labels : array-like or torch.Tensor
        ``(B, n_tags)`` 0/1 (or boolean) tag matrix.
    min_jaccard : float or None
        ``None``: ``i`` and ``j`` are positive when they share at least one tag. A number:
        positive when the Jaccard index of their tag sets is at least this (and > 0). Pairs
        sharing some tags but below the threshold are then neither positive nor negative.

    Returns
    -------
    positive, negative : torch.Tensor
        ``(B, B)`` boolean masks, ``False`` on the diagonal. Negative means no shared tag.
    """
    y = torch.as_tensor(labels).float()
    if y.dim() != 2:
        raise ValueError(f"labels must be (B, n_tags), got shape {tuple(y.shape)}")
    inter, union = _overlap(y)
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    if min_jaccard is None:
        positive = inter > 0
    else:
        positive = (inter > 0) & (inter >= min_jaccard * union)
    negative = inter == 0
    return positive & ~eye, negative & ~eye


def batch_triplet_loss(
    embeddings: torch.Tensor,
    labels,
    margin: float = 0.4,
    distance: str = "cosine",
    mining: str = "semihard",
    min_jaccard: float | None = None,
    graded: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Triplet loss with triplets mined inside a batch from multi-label tags.

    Positive and negative pairs come from :func:`triplet_masks`. With ``d`` the distance of
    :func:`pairwise_distances`, a triplet ``(a, p, n)`` costs ``relu(d(a,p) - d(a,n) + margin)``
    (for cosine this equals the course's ``relu(margin - cos(a,p) + cos(a,n))``). Mining:

    ``'hard'``
        One triplet per anchor: its farthest positive and its nearest negative
        (batch-hard, Hermans et al. 2017).
    ``'semihard'``
        One triplet per anchor-positive pair: the nearest *semi-hard* negative, i.e. with
        ``d(a,p) < d(a,n) < d(a,p) + margin`` (Schroff et al. 2015); when the pair has none,
        the anchor's hardest (nearest) negative.
    ``'all'``
        Every valid ``(a, p, n)``; memory is ``O(B^3)``.

    With ``graded=True`` the negatives of a pair ``(a, p)`` are all clips whose tag set
    overlaps the anchor's less than the positive's does (Jaccard index ``J(a, n) < J(a, p)``),
    not only the clips sharing no tag: a clip sharing three of the anchor's tags is then
    pulled closer than one sharing one, the order multi-label Recall@K rewards.

    Anchors without any positive or any negative in the batch are skipped. The mean is over
    all mined triplets, including those already satisfied (loss 0).

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(B, D)``.
    labels : array-like or torch.Tensor
        ``(B, n_tags)`` 0/1 tags of the same clips.
    margin : float
    distance : {'cosine', 'euclidean'}
    mining : {'semihard', 'hard', 'all'}
    min_jaccard : float or None
        See :func:`triplet_masks`.
    graded : bool
        Negatives by lower tag overlap than the positive's, as above.
    reduction : {'mean', 'none'}
        ``'none'`` returns the 1-D tensor of per-triplet losses (possibly empty).

    Returns
    -------
    torch.Tensor
        Scalar mean loss; ``0`` still attached to the graph when there is no valid triplet.

    Notes
    -----
    Since each anchor's hard triplet bounds every semi-hard or 'all' triplet of that anchor,
    ``hard >= semihard`` holds per anchor, and for the means whenever every valid anchor has
    the same number of positives (e.g. single-label P x K batches). With unequal positive
    counts the semi-hard mean weights anchors with many positives more and can exceed the
    hard mean.
    """
    _check_distance(distance)
    if mining not in _MININGS:
        raise ValueError(f"unknown mining {mining!r}; choose one of {', '.join(_MININGS)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    labels = torch.as_tensor(labels, device=embeddings.device)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} label rows")

    positive, negative = triplet_masks(labels, min_jaccard)
    if graded:
        inter, union = _overlap(labels.float())
        jac = inter / union.clamp_min(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        neg = (jac[:, None, :] < jac[:, :, None]) & ~eye[:, None, :]  # (a, p, n)
    else:
        neg = negative[:, None, :].expand(-1, len(labels), -1)  # (a, p, n), the same for every p
    d = pairwise_distances(embeddings, distance)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    d_ap = d[:, :, None]  # (a, p, 1)
    d_an = d[:, None, :]  # (a, 1, n)
    pairs = positive & neg.any(dim=2)  # (a, p) pairs with at least one negative
    # Nearest negative per pair (inf where none); masked entries carry no gradient.
    nearest_neg = torch.where(neg, d_an, inf).amin(dim=2)  # (a, p)

    if mining == "hard":
        # The anchor's hardest triplet; without grading, its farthest positive and nearest negative.
        valid = pairs.any(dim=1)
        worst = torch.where(pairs, d - nearest_neg, -inf).amax(dim=1)
        losses = F.relu(worst[valid] + margin)
    elif mining == "semihard":
        semi = neg & (d_an > d_ap) & (d_an < d_ap + margin)
        nearest_semi = torch.where(semi, d_an, inf).amin(dim=2)  # (a, p)
        chosen = torch.where(semi.any(dim=2), nearest_semi, nearest_neg)
        losses = F.relu(d[pairs] - chosen[pairs] + margin)
    else:
        triplets = positive[:, :, None] & neg
        losses = F.relu(d_ap - d_an + margin)[triplets]

    if reduction == "none":
        return losses
    if losses.numel() == 0:
        return embeddings.sum() * 0.0
    return losses.mean()


def blockwise_triplet_loss(embeddings: torch.Tensor, labels, block: int = 256, seed: int = 0, **kw) -> float:
    """:func:`batch_triplet_loss` over a whole split, mined within fixed blocks of it.

    Mining over all ``N`` clips at once needs ``(N, N, N)`` masks (some 20 GB at MTAT's 1,529
    validation clips); here the clips are shuffled once by ``seed`` and cut into blocks of
    ``block``, so memory is bounded by the block. The result is the mean over every triplet mined
    in any block, the same number for the same inputs; with ``N <= block`` it is the loss of the
    whole split as one batch.

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(N, D)``.
    labels : array-like or torch.Tensor
        ``(N, n_tags)``.
    block : int
        Clips per mining block.
    seed : int
        Seed of the fixed shuffle.
    **kw
        Passed to :func:`batch_triplet_loss` (``margin``, ``distance``, ``mining``, ``graded`` ...).
    """
    labels = torch.as_tensor(labels)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(embeddings)))
    losses = [batch_triplet_loss(embeddings[idx], labels[idx], reduction="none", **kw)
              for idx in order.split(block)]
    losses = torch.cat(losses)
    return float(losses.mean()) if losses.numel() else 0.0


def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be an (N, n_tags) 0/1 matrix, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must hold only 0 and 1")
    return y.astype(bool)


def _generator(rng, default: np.random.Generator) -> np.random.Generator:
    if rng is None:
        return default
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # One column index per row, drawn with probability proportional to the row's weights.
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    idx = (cum <= u[:, None]).sum(axis=1)
    return np.minimum(idx, weights.shape[1] - 1)


class TagTripletSampler:
    """Tag-based triplets of clip indices, reproducible by seed.

    Each triplet picks a tag uniformly among the usable ones, then an anchor and a positive
    (different clips) that have the tag and a negative that lacks it (the course's sampling).

    With ``overlap=True`` sampling respects multi-label overlap: the negative shares *no* tag
    with the anchor, and the positive, still among the clips with the picked tag, is drawn
    with probability proportional to its Jaccard index with the anchor's tag set, so clips
    with similar tag sets are preferred. Anchors are then restricted to clips for which some
    clip shares no tag.

    A tag is usable when it has at least two positive clips and at least one negative one
    (with ``overlap=True``: and at least one anchor that has a fully disjoint clip).

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tag matrix of the clips (row ``i`` = clip index ``i``).
    n_triplets : int
        Triplets per epoch.
    seed : int
        Seed of the internal generator; two samplers with the same arguments give the same
        sequence of epochs.
    overlap : bool
        Multi-label-aware sampling, see above.
    jaccard_power : float
        With ``overlap=True``, positives are drawn with probability proportional to
        ``jaccard ** jaccard_power``; larger values favour near-identical tag sets more.

    Attributes
    ----------
    tags : np.ndarray
        Indices of the usable tags.

    Raises
    ------
    ValueError
        When no tag is usable, or the labels are not a 0/1 matrix.

    Examples
    --------
    >>> sampler = TagTripletSampler(labels, n_triplets=10_000, seed=0)
    >>> for batch in sampler.batches(64):  # (64, 3) arrays of (anchor, positive, negative)
    ...     a, p, n = (model(x[batch[:, k]]) for k in range(3))
    ...     loss = triplet_loss(a, p, n)
    """

    def __init__(
        self, labels, n_triplets: int, seed: int = 0, overlap: bool = False, jaccard_power: float = 1.0
    ):
        self.labels = _as_labels(labels)
        if jaccard_power <= 0:
            raise ValueError(f"jaccard_power must be > 0, got {jaccard_power}")
        self.jaccard_power = float(jaccard_power)
        if n_triplets < 1:
            raise ValueError(f"n_triplets must be >= 1, got {n_triplets}")
        self.n_triplets = int(n_triplets)
        self.overlap = bool(overlap)
        self._rng = np.random.default_rng(seed)
        y = self.labels
        n_clips = len(y)
        self._labels_f = y.astype(np.float32)
        self._sizes = self._labels_f.sum(axis=1)
        self._pos = [np.flatnonzero(y[:, t]) for t in range(y.shape[1])]
        self._neg = [np.flatnonzero(~y[:, t]) for t in range(y.shape[1])]
        if overlap:
            disjoint = self._has_disjoint()
            self._anchors = [p[disjoint[p]] for p in self._pos]
        else:
            self._anchors = self._pos
        counts = np.array([len(p) for p in self._pos])
        usable = (counts >= 2) & (counts < n_clips) & np.array([len(a) > 0 for a in self._anchors])
        self.tags = np.flatnonzero(usable)
        if len(self.tags) == 0:
            what = "and an anchor sharing no tag with some clip " if overlap else ""
            raise ValueError(
                f"no usable tag: every tag needs >= 2 positive clips, >= 1 negative clip {what}"
                f"(positives per tag: {counts.tolist()})"
            )

    def _has_disjoint(self, chunk: int = 1024) -> np.ndarray:
        # Whether each clip has some clip sharing no tag with it; computed on the distinct
        # tag sets, which are far fewer than clips, in chunks to bound memory.
        patterns, inverse = np.unique(self.labels, axis=0, return_inverse=True)
        pf = patterns.astype(np.float32)
        counts = np.bincount(inverse.ravel(), minlength=len(patterns))
        out = np.empty(len(patterns), dtype=bool)
        for s in range(0, len(patterns), chunk):
            inter = pf[s : s + chunk] @ pf.T
            zero = inter == 0
            # An empty tag set is disjoint from itself, but it needs a second such clip.
            self_zero = np.flatnonzero(patterns[s : s + chunk].sum(axis=1) == 0)
            zero[self_zero, s + self_zero] = counts[s + self_zero] >= 2
            out[s : s + chunk] = zero.any(axis=1)
        return out[inverse.ravel()]

    def __len__(self) -> int:
        return self.n_triplets

    def sample(self, n: int, rng=None, return_tags: bool = False):
        """Draw ``n`` triplets.

        Parameters
        ----------
        n : int
        rng : numpy.random.Generator, int or None
            Generator (or seed) to draw from; ``None`` advances the sampler's own generator.
        return_tags : bool
            Also return the tag each triplet was drawn for.

        Returns
        -------
        triplets : np.ndarray
            ``(n, 3)`` int64 clip indices ``(anchor, positive, negative)``.
        tags : np.ndarray
            ``(n,)`` tag indices, only with ``return_tags=True``.
        """
        rng = _generator(rng, self._rng)
        tags = self.tags[rng.integers(len(self.tags), size=n)]
        out = np.empty((n, 3), dtype=np.int64)
        for t in np.unique(tags):  # a loop over tags, vectorised over the triplets of a tag
            rows = np.flatnonzero(tags == t)
            out[rows] = self._sample_tag(t, len(rows), rng)
        return (out, tags) if return_tags else out

    def _sample_tag(self, t: int, m: int, rng: np.random.Generator, chunk: int = 256) -> np.ndarray:
        pos, anchors = self._pos[t], self._anchors[t]
        a = anchors[rng.integers(len(anchors), size=m)]
        if not self.overlap:
            # Positive: any other clip with the tag; skip over the anchor's own slot.
            slot = np.searchsorted(pos, a)
            k = rng.integers(len(pos) - 1, size=m)
            p = pos[k + (k >= slot)]
            n = self._neg[t][rng.integers(len(self._neg[t]), size=m)]
            return np.stack([a, p, n], axis=1)
        p = np.empty(m, dtype=np.int64)
        n = np.empty(m, dtype=np.int64)
        lf, sizes = self._labels_f, self._sizes
        for s in range(0, m, chunk):
            aa = a[s : s + chunk]
            inter = lf[aa] @ lf[pos].T
            jac = inter / (sizes[aa][:, None] + sizes[pos][None, :] - inter)
            jac[aa[:, None] == pos[None, :]] = 0.0  # never the anchor itself
            p[s : s + chunk] = pos[_sample_rows(jac**self.jaccard_power, rng)]
            disjoint = (lf[aa] @ lf.T) == 0
            disjoint[np.arange(len(aa)), aa] = False
            n[s : s + chunk] = _sample_rows(disjoint.astype(np.float32), rng)
        return np.stack([a, p, n], axis=1)

    def epoch(self, rng=None) -> np.ndarray:
        """One epoch of ``n_triplets`` triplets, ``(n_triplets, 3)`` int64.

        ``rng`` as in :meth:`sample`; by default successive calls give successive (different,
        but seed-reproducible) epochs.
        """
        return self.sample(self.n_triplets, rng)

    def batches(self, batch_size: int, rng=None, drop_last: bool = False) -> Iterator[np.ndarray]:
        """One epoch cut into ``(batch_size, 3)`` arrays (the last may be shorter)."""
        triplets = self.epoch(rng)
        stop = len(triplets) - (len(triplets) % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            yield triplets[s : s + batch_size]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        """Triplets of one epoch as ``(anchor, positive, negative)`` tuples of ints."""
        for a, p, n in self.epoch():
            yield int(a), int(p), int(n)


class BalancedTagBatchSampler:
    """Batches of P tags x K clips for in-batch triplet mining, reproducible by seed.

    Each batch draws ``n_tags`` distinct tags uniformly among the usable ones and, for each,
    ``n_per_tag`` distinct clips having that tag, so every anchor has positives in the batch.
    A clip already drawn for an earlier tag of the batch is not drawn again; in the rare case
    this leaves a tag with fewer than ``n_per_tag`` fresh clips the batch is a little smaller.

    Usable as a ``batch_sampler`` of a ``torch.utils.data.DataLoader``: iterating yields lists
    of clip indices, ``len()`` is the number of batches per epoch.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, n_tags)`` 0/1 tag matrix.
    n_tags : int
        Tags per batch (P).
    n_per_tag : int
        Clips per tag (K); a tag is usable when it has at least ``n_per_tag`` (and >= 2)
        positive clips and at least one negative clip.
    n_batches : int
        Batches per epoch.
    seed : int
        Seed of the internal generator.

    Attributes
    ----------
    tags : np.ndarray
        Indices of the usable tags.

    Raises
    ------
    ValueError
        When fewer than ``n_tags`` tags are usable.
    """

    def __init__(self, labels, n_tags: int = 8, n_per_tag: int = 4, n_batches: int = 100, seed: int = 0):
        self.labels = _as_labels(labels)
        if n_tags < 1 or n_per_tag < 2 or n_batches < 1:
            raise ValueError(
                f"need n_tags >= 1, n_per_tag >= 2, n_batches >= 1; got {n_tags}, {n_per_tag}, {n_batches}"
            )
        self.n_tags, self.n_per_tag, self.n_batches = int(n_tags), int(n_per_tag), int(n_batches)
        self._rng = np.random.default_rng(seed)
        self._pos = [np.flatnonzero(self.labels[:, t]) for t in range(self.labels.shape[1])]
        counts = self.labels.sum(axis=0)
        usable = (counts >= n_per_tag) & (counts < len(self.labels))
        self.tags = np.flatnonzero(usable)
        if len(self.tags) < n_tags:
            raise ValueError(
                f"only {len(self.tags)} tag(s) have >= {n_per_tag} positive clips and a negative one; "
                f"need n_tags={n_tags}"
            )

    def __len__(self) -> int:
        return self.n_batches

    def _batch(self, rng: np.random.Generator) -> list[int]:
        chosen: list[int] = []
        taken: set[int] = set()
        for t in rng.choice(self.tags, size=self.n_tags, replace=False):
            pos = self._pos[t]
            # Drawing K + |taken| without replacement leaves >= K fresh clips whenever the tag
            # has them, without building the set difference of a large positive list.
            draw = rng.choice(pos, size=min(len(pos), self.n_per_tag + len(taken)), replace=False)
            fresh = [int(i) for i in draw if int(i) not in taken][: self.n_per_tag]
            chosen.extend(fresh)
            taken.update(fresh)
        return chosen

    def epoch(self, rng=None) -> list[list[int]]:
        """One epoch of ``n_batches`` batches (lists of clip indices).

        ``rng``: generator or seed; ``None`` advances the sampler's own generator.
        """
        rng = _generator(rng, self._rng)
        return [self._batch(rng) for _ in range(self.n_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch()


def pk_sampler(labels, batch: int, n_batches: int, per_tag: int = 4) -> BalancedTagBatchSampler:
    """P x K batches of about ``batch`` clips for in-batch mining: K = ``per_tag`` clips of each of
    P = ``batch // K`` tags (fewer where the labels have fewer usable tags), as in batch-hard mining.

    Raises
    ------
    ValueError
        When no tag has ``per_tag`` positive clips and a negative one.
    """
    labels = _as_labels(labels)
    counts = labels.sum(axis=0)
    usable = int(((counts >= per_tag) & (counts < len(labels))).sum())
    return BalancedTagBatchSampler(labels, n_tags=max(1, min(batch // per_tag, usable)), n_per_tag=per_tag,
                                   n_batches=max(1, n_batches))
