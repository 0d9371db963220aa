"""The course's tag samplers: sampled triplets and balanced P-tags x K-clips batches from the labels.

:class:`TagTripletSampler` draws ``(anchor, positive, negative)`` clip indices (a drawn tag, a clip
with it, a clip without any of the anchor's tags); :class:`BalancedTagBatchSampler` draws batches
holding several clips per tag for in-batch mining. ``train.samplers.TagSampler`` puts both behind
the trainer's sampler interface.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

__all__ = ["TagTripletSampler", "BalancedTagBatchSampler", "pk_sampler"]

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


def _tag_bits(y: np.ndarray) -> np.ndarray:
    """Each clip's tag set as bits, ``(N, words)`` uint64: two clips share no tag when every word's AND is 0."""
    words = -(-y.shape[1] // 64)
    padded = np.zeros((len(y), 64 * words), dtype=bool)
    padded[:, :y.shape[1]] = y
    return np.ascontiguousarray(np.packbits(padded, axis=1).view(np.uint64))


@njit(cache=True, nogil=True)
def _shares_none(x, i, y, j) -> bool:  # pragma: no cover (compiled)
    """Whether tag-bit rows ``x[i]`` and ``y[j]`` have no bit in common."""
    for w in range(x.shape[1]):
        if x[i, w] & y[j, w]:
            return False
    return True


@njit(cache=True, nogil=True)
def _disjoint_counts(patterns, bits, block: int):  # pragma: no cover (compiled)
    """``(patterns, blocks)``: per distinct tag set and block of ``block`` clips, the clips sharing no tag with it."""
    n = bits.shape[0]
    out = np.zeros((patterns.shape[0], -(-n // block)), np.int32)
    for p in range(patterns.shape[0]):
        for j in range(n):
            if _shares_none(patterns, p, bits, j):
                out[p, j // block] += 1
    return out


@njit(cache=True, nogil=True)
def _draw_disjoint(bits, pattern, counts, block: int, anchors, u):  # pragma: no cover (compiled)
    """Per anchor, a clip sharing no tag with it, as ``_sample_rows`` draws from the 0/1 weights 'shares
    no tag, is not the anchor' with the uniform numbers ``u``: the same clips, without the ``(anchors,
    N)`` matrices. The weights' running sum is a count (exact in float32, as numpy sums it), found by
    whole blocks of clips (``counts``, :func:`_disjoint_counts` of each clip's ``pattern``), then
    clip by clip inside the block where it passes the drawn target."""
    n = bits.shape[0]
    out = np.empty(len(anchors), np.int64)
    for r in range(len(anchors)):
        a = anchors[r]
        row = counts[pattern[a]]
        itself = 1 if _shares_none(bits, a, bits, a) else 0  # an empty tag set is disjoint from itself
        target = u[r] * (row.sum() - itself)  # _sample_rows: u * cum[:, -1]; then the count of cum <= target
        seen, b = 0, 0
        while b < len(row):
            c = row[b] - (itself if a // block == b else 0)
            if seen + c > target:
                break
            seen += c
            b += 1
        pick = n - 1
        for j in range(b * block, min(n, (b + 1) * block)):
            if j != a and _shares_none(bits, a, bits, j):
                seen += 1
                if seen > target:
                    pick = j
                    break
        out[r] = pick
    return out


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
    >>> labels = (np.random.default_rng(0).random((200, 50)) < 0.1).astype(np.int8)
    >>> sampler = TagTripletSampler(labels, n_triplets=1000, seed=0)
    >>> batch = next(iter(sampler.batches(64)))  # rows of (anchor, positive, negative) clip indices
    >>> batch.shape
    (64, 3)

    In a training loop: ``a, p, n = (model(x[batch[:, k]]) for k in range(3))``, then
    ``loss = train.losses.triplet_loss(a, p, n)``.
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
            # The clips sharing no tag with each clip, counted per distinct tag set and block of clips
            # (memory of at most about 16 M counts): negatives are drawn from them, and only a clip that
            # has one can be an anchor (an empty tag set is disjoint from itself: not counted).
            self._bits = _tag_bits(y)
            patterns, inverse = np.unique(self._bits, axis=0, return_inverse=True)
            self._pattern = inverse.ravel()
            self._block = max(64, -(-n_clips * len(patterns) // 2**24))
            self._counts = _disjoint_counts(patterns, self._bits, self._block)
            disjoint = self._counts.sum(axis=1)[self._pattern] - ~y.any(axis=1) > 0
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
            n[s : s + chunk] = _draw_disjoint(self._bits, self._pattern, self._counts, self._block, aa,
                                              rng.random(len(aa)))  # uniform among the disjoint clips
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
