"""Metric-learning losses: triplets with cosine or Euclidean distance, and in-batch mining.

Two ways to train an embedding so that similar clips end up close:

- explicit triplets: ``(anchor, positive, negative)`` embeddings scored by :func:`triplet_loss`
  (the triplets come from a sampler, ``train.samplers``);
- in-batch mining: :func:`batch_triplet_loss` forms the triplets inside a batch, from the
  labels (:func:`triplet_masks`, :func:`graded_negatives`) or from a sampler's masks;
- a multi-label supervised contrastive loss (:func:`contrastive_loss`): every other clip of the
  batch is a candidate, and the target is spread over them by tag overlap
  (:func:`jaccard_weights`), not cut into positives and negatives.

Labels are the ``(N, n_tags)`` 0/1 matrix of the tagging task. Two clips are *positive* for each
other when they share at least one tag (or, with ``min_jaccard``, when their tag sets are similar
enough), *negative* when they share none; with ``graded=True`` the in-batch loss instead takes as
negatives of a pair every clip overlapping the anchor less than the positive does. Distances are
either cosine (``1 - cos``, so a margin means the same thing as in the course's cosine loss) or
Euclidean. A new loss belongs here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from features.device import to_device

__all__ = ["triplet_loss", "pairwise_distances", "triplet_masks", "graded_negatives", "batch_triplet_loss",
           "blockwise_triplet_loss", "jaccard_weights", "contrastive_loss", "blockwise_contrastive_loss"]

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
    return to_device(positive, device), to_device(negative, device)


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
        labels = to_device(labels, embeddings.device)
        if len(labels) != n:
            raise ValueError(f"{n} embeddings but {len(labels)} label rows")
        positive, neg = triplet_masks(labels, min_jaccard)
        if graded:
            neg = graded_negatives(labels)  # (a, p, n)
    if neg.dim() == 2:
        neg = neg[:, None, :].expand(-1, n, -1)  # (a, p, n), the same for every p
    d = pairwise_distances(embeddings, distance)
    inf = float("inf")  # a Python number: a tensor made from it here would be a blocking copy to the GPU
    d_ap = d[:, :, None]  # (a, p, 1)
    d_an = d[:, None, :]  # (a, 1, n)
    pairs = positive & neg.any(dim=2)  # (a, p) pairs with at least one negative
    # Nearest negative per pair (inf where none); masked entries carry no gradient.
    nearest_neg = torch.where(neg, d_an, inf).amin(dim=2)  # (a, p)

    # Each mining gives a loss for every candidate and a mask of those that count: the mean over the
    # mask needs no boolean indexing, which on a GPU would make the host wait for the mask's size.
    if mining == "hard":
        # The anchor's hardest triplet; without grading, its farthest positive and nearest negative.
        mask = pairs.any(dim=1)
        losses = F.relu(torch.where(pairs, d - nearest_neg, -inf).amax(dim=1) + margin)
    elif mining == "semihard":
        semi = neg & (d_an > d_ap) & (d_an < d_ap + margin)
        nearest_semi = torch.where(semi, d_an, inf).amin(dim=2)  # (a, p)
        chosen = torch.where(semi.any(dim=2), nearest_semi, nearest_neg)
        mask, losses = pairs, F.relu(d - chosen + margin)
    else:
        mask, losses = positive[:, :, None] & neg, F.relu(d_ap - d_an + margin)

    if reduction == "none":
        return losses[mask]
    return _masked_mean(losses, mask)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds, without a host sync; 0 (still in the graph) where none does."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


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
    return _blockwise(lambda e, y: batch_triplet_loss(e, y, reduction="none", **kw), embeddings, labels, block, seed)


def _blockwise(per_item, embeddings: torch.Tensor, labels, block: int, seed: int) -> float:
    """Mean of ``per_item(embeddings[b], labels[b])`` (1-D losses) over the blocks ``b`` of a fixed shuffle."""
    labels = torch.as_tensor(labels)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(embeddings)))
    losses = torch.cat([per_item(embeddings[idx], labels[idx]) for idx in order.split(block)])
    return float(losses.mean()) if losses.numel() else 0.0


def jaccard_weights(labels) -> torch.Tensor:
    """Tag-set Jaccard index of every pair of clips, ``|y_i & y_j| / |y_i | y_j|``, diagonal 0.

    Parameters
    ----------
    labels : array-like or torch.Tensor
        ``(B, n_tags)`` 0/1 tags.

    Returns
    -------
    torch.Tensor
        ``(B, B)`` float32 in [0, 1]; 0 for pairs sharing no tag and for clips without tags.
    """
    y = torch.as_tensor(labels).float()
    inter, union = _overlap(y)
    w = inter / union.clamp_min(1.0)
    return w.fill_diagonal_(0.0)


def contrastive_loss(embeddings: torch.Tensor, weights, temperature: float = 0.1,
                     reduction: str = "mean") -> torch.Tensor:
    """Multi-label supervised contrastive loss with soft targets.

    For each anchor ``i`` a softmax over the cosine similarities to every other clip of the batch,
    ``p_ij = softmax_j(cos(x_i, x_j) / temperature)``, is pulled towards the target distribution
    ``w_ij / sum_k w_ik``::

        loss = mean_i  - sum_{j != i} (w_ij / sum_k w_ik) log p_ij

    With 0/1 weights this is the supervised contrastive loss of Khosla et al. (2020, their
    ``L_out``); with the Jaccard index of the tag sets (:func:`jaccard_weights`) a clip sharing
    all its tags with the anchor is pulled hardest, one sharing a few less, and one sharing none
    is only pushed away: the ordering multi-label Recall@K rewards, without a margin to tune or a
    triplet to mine. Anchors whose weights are all 0 (no clip of the batch shares a tag) are
    skipped.

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(B, D)``, not necessarily normalised.
    weights : array-like or torch.Tensor
        ``(B, B)`` non-negative target weights; the diagonal is ignored. Checked for negative
        values where they are on the CPU (on a GPU the check would make the host wait).
    temperature : float
        Softmax temperature; smaller is sharper.
    reduction : {'mean', 'none'}
        ``'none'`` returns the 1-D tensor of the anchors' losses (possibly empty).

    Returns
    -------
    torch.Tensor
        Scalar loss; ``0`` still attached to the graph when no anchor has a positive weight.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> w = jaccard_weights(torch.tensor([[1, 0], [1, 0], [0, 1]]))
    >>> round(float(contrastive_loss(x, w, temperature=0.1)), 4)  # only the first two share a tag
    0.0001
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    w = torch.as_tensor(weights)
    if w.shape != (n, n):
        raise ValueError(f"weights for {n} embeddings must be ({n}, {n}), got {tuple(w.shape)}")
    if w.device.type == "cpu" and bool((w < 0).any()):  # checked where they are: a GPU step does not wait on it
        raise ValueError("weights must be non-negative")
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    w = to_device(w, embeddings.device).float().masked_fill(eye, 0.0)
    z = F.normalize(embeddings.float(), dim=1)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_p = F.log_softmax(logits, dim=1).masked_fill(eye, 0.0)  # -inf * 0 would be nan
    total = w.sum(dim=1)
    anchors = total > 0
    per_anchor = -(w * log_p).sum(dim=1) / total.clamp_min(torch.finfo(total.dtype).tiny)
    if reduction == "none":
        return per_anchor[anchors]
    return _masked_mean(per_anchor, anchors)


def blockwise_contrastive_loss(embeddings: torch.Tensor, labels, block: int = 256, seed: int = 0,
                               temperature: float = 0.1) -> float:
    """:func:`contrastive_loss` with Jaccard weights over a whole split, in fixed blocks of it.

    As :func:`blockwise_triplet_loss`: the clips are shuffled once by ``seed`` and cut into blocks
    of ``block``; the result is the mean over the blocks' anchors, the same number for the same
    inputs.
    """
    return _blockwise(lambda e, y: contrastive_loss(e, jaccard_weights(y), temperature, reduction="none"),
                      embeddings, labels, block, seed)
