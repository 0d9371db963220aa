"""Metric learning: triplet losses, in-batch mining and the samplers that say what is similar.

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

Beyond tags, every sampler offers one interface, :class:`PairSampler` (built by name with
:func:`make_sampler`), that serves both ways of training: a P x K batch plan with the
``(positive, negative)`` masks of a batch for ``batch_triplet_loss(..., masks=...)``, and sampled
``(anchor, positive, negative)`` triplets. The samplers (``SAMPLERS``):

============  ==================================================================================
``tag``       the course's: a shared tag (:class:`TagSampler` over the classes above)
``overlap``   multi-label overlap (the same, ``overlap=True``)
``instance``  another crop of the same clip, no labels needed (:class:`InstanceSampler`)
``latent``    similar tags in a latent space from an SVD of the clip x tag matrix, so that
              synonyms count (:class:`LatentSampler`)
``timbre``    nearest clips by MFCC mean and spread (:class:`NeighbourSampler` on
              :func:`clip_statistics`)
``beat``      nearest clips by tempo and rhythm statistics (:class:`NeighbourSampler` on
              ``features.rhythm.rhythm_statistics``)
============  ==================================================================================
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
    "graded_negatives",
    "batch_triplet_loss",
    "blockwise_triplet_loss",
    "TagTripletSampler",
    "BalancedTagBatchSampler",
    "pk_sampler",
    "SAMPLERS",
    "PairSampler",
    "TagSampler",
    "InstanceSampler",
    "NeighbourSampler",
    "LatentSampler",
    "tag_embedding",
    "clip_latents",
    "timbre_statistics",
    "clip_statistics",
    "make_sampler",
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


def graded_negatives(labels) -> torch.Tensor:
    """Graded negatives of every anchor-positive pair of a batch, from its tags.

    ``neg[a, p, n]`` is ``True`` when clip ``n`` overlaps the anchor's tag set less than the
    positive does: Jaccard index ``J(a, n) < J(a, p)``, and ``n != a``.

    Parameters
    ----------
    labels : array-like or torch.Tensor
        ``(B, n_tags)`` 0/1 tag matrix.

    Returns
    -------
    torch.Tensor
        ``(B, B, B)`` boolean, indexed ``(anchor, positive, negative)``.
    """
    y = torch.as_tensor(labels).float()
    inter, union = _overlap(y)
    jac = inter / union.clamp_min(1)
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    return (jac[:, None, :] < jac[:, :, None]) & ~eye[:, None, :]


def _check_masks(masks, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit (positive, negative) masks as boolean tensors on ``device``, diagonal off."""
    try:  # checked where they are (a sampler's: the CPU), so a GPU step does not wait on the check
        positive, negative = (torch.as_tensor(m).bool() for m in masks)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"masks must be a (positive, negative) pair of boolean arrays: {exc}") from exc
    if positive.shape != (n, n) or negative.shape not in ((n, n), (n, n, n)):
        raise ValueError(f"masks for {n} embeddings must be ({n}, {n}) positive and ({n}, {n}) or "
                         f"({n}, {n}, {n}) negative, got {tuple(positive.shape)} and {tuple(negative.shape)}")
    eye = torch.eye(n, dtype=torch.bool, device=positive.device)
    positive, negative = positive & ~eye, negative.to(positive.device)
    if negative.dim() == 2:
        negative = negative & ~eye
        clash = positive & negative
    else:
        negative = negative & ~eye[:, None, :]
        clash = positive & negative.diagonal(dim1=1, dim2=2)  # the positive itself among its negatives
    if clash.any():
        a, b = (int(v) for v in clash.nonzero()[0])
        raise ValueError(f"masks: pair ({a}, {b}) is both positive and negative")
    return positive.to(device, non_blocking=True), negative.to(device, non_blocking=True)


def batch_triplet_loss(
    embeddings: torch.Tensor,
    labels=None,
    margin: float = 0.4,
    distance: str = "cosine",
    mining: str = "semihard",
    min_jaccard: float | None = None,
    graded: bool = False,
    reduction: str = "mean",
    masks=None,
) -> torch.Tensor:
    """Triplet loss with triplets mined inside a batch from multi-label tags or explicit masks.

    Positive and negative pairs come from :func:`triplet_masks` of the labels, or from ``masks``
    (what a sampler's :meth:`PairSampler.masks` returns for the batch). With ``d`` the distance of
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
    labels : array-like or torch.Tensor or None
        ``(B, n_tags)`` 0/1 tags of the same clips; ``None`` when ``masks`` are given.
    margin : float
    distance : {'cosine', 'euclidean'}
    mining : {'semihard', 'hard', 'all'}
    min_jaccard : float or None
        See :func:`triplet_masks`.
    graded : bool
        Negatives by lower tag overlap than the positive's, as above (:func:`graded_negatives`).
    reduction : {'mean', 'none'}
        ``'none'`` returns the 1-D tensor of per-triplet losses (possibly empty).
    masks : (positive, negative) or None
        Instead of ``labels``, ``min_jaccard`` and ``graded``: the ``(B, B)`` boolean positive
        mask and the ``(B, B)`` negative mask (``[a, n]``, the same for every positive) or the
        ``(B, B, B)`` one (``[a, p, n]``, per anchor-positive pair). The diagonal is ignored;
        a pair may not be both positive and negative.

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
    n = len(embeddings)
    if masks is not None:
        if labels is not None or graded or min_jaccard is not None:
            raise ValueError("masks replace labels, graded and min_jaccard: give masks or labels, not both")
        positive, neg = _check_masks(masks, n, embeddings.device)
    elif labels is None:
        raise ValueError("labels: give the batch's (B, n_tags) tags, or masks")
    else:
        labels = torch.as_tensor(labels, device=embeddings.device)
        if len(labels) != n:
            raise ValueError(f"{n} embeddings but {len(labels)} label rows")
        positive, neg = triplet_masks(labels, min_jaccard)
        if graded:
            neg = graded_negatives(labels)  # (a, p, n)
    if neg.dim() == 2:
        neg = neg[:, None, :].expand(-1, n, -1)  # (a, p, n), the same for every p
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


# ------------------------------------------------------------------------------------------------
# One interface for every sampler: which training items are positives and negatives of each other.

#: Sampler names, as ``--sampler`` spells them (:func:`make_sampler`).
SAMPLERS = ("tag", "overlap", "instance", "latent", "timbre", "beat")


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

    def plan(self, n_batches: int, batch: int, group: int = 4, rng=None) -> list[list[int]]:
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

    def plan(self, n_batches, batch, group=4, rng=None):
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

    def plan(self, n_batches, batch, group=4, rng=None):
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

    def plan(self, n_batches, batch, group=4, rng=None):
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


def timbre_statistics(mfcc: np.ndarray) -> np.ndarray:
    """A clip's timbre statistics: the mean and standard deviation of each MFCC coefficient.

    Parameters
    ----------
    mfcc : np.ndarray [shape=(frames, n_mfcc)]
        Time-major, as the features file stores ``/mfcc``.

    Returns
    -------
    np.ndarray [shape=(2 * n_mfcc,)]
        float32, means then standard deviations.
    """
    x = np.asarray(mfcc, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"mfcc must be one clip's (frames, n_mfcc), got shape {x.shape}")
    return np.concatenate([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)


def clip_statistics(ff, idx, feature: str = "mfcc", fn=timbre_statistics) -> np.ndarray:
    """Per-clip statistics of one stored feature, streamed one clip at a time.

    Parameters
    ----------
    ff : train.feed.FeatureFile
        Opened with ``feature`` among its features (reading only that one is cheapest:
        ``FeatureFile(path, ('mfcc',))``).
    idx : array-like of int
        Clip positions in ``ff`` (e.g. the training split's), the rows of the result.
    feature : str
        ``'mfcc'``, ``'mel'`` or ``'chroma'``.
    fn : callable
        ``(frames, bins)`` time-major array of one clip -> 1-D statistics: :func:`timbre_statistics`,
        or ``lambda m: features.rhythm.rhythm_statistics(m, ff.params)`` with ``'mel'``.

    Returns
    -------
    np.ndarray [shape=(len(idx), d)]
        float32.
    """
    if feature not in ff.features:
        raise ValueError(f"ff holds {', '.join(ff.features)}, not {feature!r}; open it with ({feature!r},)")
    at = ff.features.index(feature)
    row, width = sum(ff.widths[:at]), ff.widths[at]
    idx = np.asarray(idx, dtype=np.int64)
    out = None
    for r, i in enumerate(idx):
        v = np.asarray(fn(ff.crop(int(i), 0, int(ff.n_frames[i]))[row:row + width].T), np.float32)
        if out is None:
            out = np.empty((len(idx), len(v)), np.float32)
        out[r] = v
    return out if out is not None else np.zeros((0, 0), np.float32)


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
