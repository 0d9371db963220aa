"""Training modes: what differs between tagging and the two ways of metric learning.

The loop (``train.loop``) is the same for every mode; a mode supplies the rest:

==================  ==========================================================================
``network(ff)``     the model for the file's inputs (a tagging head, or an embedding with an
                    optional auxiliary tag head)
``prepare(...)``    what it needs from the training split before the first epoch (a sampler)
``plan(...)``       the global index batches of one epoch, a pure function of (seed, epoch, world)
``share(...)``      this rank's part of one batch, as the loader takes it
``masks(...)``      the sampler's positive/negative masks of each batch (in-batch mining only)
``loss(...)``       the training loss of one batch
``evaluate(...)``   clip scores, embeddings, the split's loss and metrics
``score(...)``      the validation score that picks the best checkpoint
``results(...)``    what the mode adds to ``metrics.json`` and the run folder
==================  ==========================================================================

:class:`Tagging` trains BCE on the 50 tags; :class:`MinedMetric` trains triplets mined inside
P x K batches (or a contrastive loss over them); :class:`SampledMetric` trains the course's
sampled triplets. A new training mode is a subclass here and a line in :func:`make_mode`.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eval.recall import DEFAULT_KS
from train import dist
from train.config import RunConfig
from train.evaluate import metrics, predict
from train.feed import FeatureFile, FeedError, clip_statistics
from train.losses import (
    batch_triplet_loss,
    blockwise_contrastive_loss,
    blockwise_triplet_loss,
    contrastive_loss,
    jaccard_weights,
    triplet_loss,
)
from train.models import build_embedding_model, build_model
from train.plots import plot_tag_auc
from train.samplers import make_sampler


class TrainForward(nn.Module):
    """The training pass of a network as one module: ``forward(x) -> (out, tag_logits or None)``.

    ``out`` is the network's output in fp32 (computed in bf16 autocast when ``bf16``), the logits are
    a metric network's tag head on it; one module, so that DistributedDataParallel wraps every
    parameter the loss reaches.
    """

    def __init__(self, model: nn.Module, bf16: bool):
        super().__init__()
        self.model, self.bf16 = model, bf16

    def forward(self, x):
        if self.bf16:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                out = self.model(x)
        else:
            out = self.model(x)
        out = out.float()  # losses in fp32
        head = getattr(self.model, "tag_head", None)
        return out, None if head is None else head(out)


def _join_tail(plan: list, least: int) -> list:
    """A last batch shorter than ``least`` joins the batch before it."""
    if len(plan) > 1 and len(plan[-1]) < least:
        plan[-2:] = [np.concatenate(plan[-2:])]
    return plan


class Mode:
    """The part of training that differs between tasks; see the module docstring."""

    task = ""
    #: The validation metrics drawn in ``curves.png``.
    curve_keys: tuple[str, ...] = ()
    #: How Recall@K compares the embeddings.
    distance = "cosine"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def network(self, ff: FeatureFile) -> nn.Module:
        raise NotImplementedError

    def prepare(self, ff: FeatureFile, idx: np.ndarray, labels: np.ndarray) -> None:
        """Anything built from the training split (``idx`` into ``ff``, their ``labels``) before epoch 1."""

    def plan(self, n_train: int, crops_per_clip: int, n_items: int, epoch: int, world: int = 1) -> list[np.ndarray]:
        """The global index batches of one epoch, a pure function of (seed, epoch, world).

        Every rank computes the same plan and trains on its share of each batch (:meth:`share`),
        so the ranks' shares of an epoch are disjoint and cover it, and a resumed run repeats them.
        ``world`` matters only for the tail: a last batch too short to give every rank its share
        joins the batch before it. Items are positions in the training split.
        """
        raise NotImplementedError

    def share(self, batch: np.ndarray, rank: int = 0, world: int = 1) -> list[int]:
        """Share ``rank`` of one batch of :meth:`plan` (:func:`train.dist.shard`); with ``world=1`` the batch."""
        return dist.shard(batch, rank, world).tolist()

    def masks(self, batches: list[np.ndarray], world: int):
        """Per batch, what :meth:`loss` needs besides the crops (the sampler's masks); ``None`` by default."""
        return itertools.repeat(None)

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, masks=None) -> torch.Tensor:
        """The training loss of one batch; ``net`` is a :class:`TrainForward`, maybe in DDP."""
        raise NotImplementedError

    def split_loss(self, scores, emb, labels) -> float:
        """The loss on a whole split that the learning-rate rule watches."""
        raise NotImplementedError

    def evaluate(self, model, dataset, device, tags, batch: int, bf16: bool = False, **loader_kw):
        """Clip scores (or ``None``), embeddings, labels, the split's loss and its metrics."""
        scores, emb, labels = predict(model, dataset, self.task, batch, device, bf16, **loader_kw)
        return (scores, emb, labels, self.split_loss(scores, emb, labels),
                metrics(scores, emb, labels, tags, self.distance))

    def score(self, val: dict, val_loss: float) -> float:
        """The validation score that picks the best checkpoint (higher is better); minus the validation
        loss where the split is too small for the metric (NaN)."""
        raise NotImplementedError

    def results(self, m: dict, test: dict, out, tags, labels, title: str) -> None:
        """Add the mode's own results to ``metrics.json``'s dict ``m`` and write its own files."""


class Tagging(Mode):
    """50-tag classification: BCE on logits, best checkpoint by validation ROC-AUC."""

    task = "tagging"
    curve_keys = ("val_roc_auc", "val_pr_auc")

    def network(self, ff):
        n_mels = ff.params.n_mels if "mel" in self.cfg.inputs else 0
        return build_model(self.cfg.model, ff.bins, n_mels=n_mels, n_out=len(ff.tags))

    def plan(self, n_train, crops_per_clip, n_items, epoch, world=1):
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = np.concatenate([rng.permutation(n_train) for _ in range(crops_per_clip)])
        batch = self.cfg.batch
        return _join_tail([order[i:i + batch] for i in range(0, n_items, batch)], 2 * world)  # BatchNorm: 2+ clips

    def loss(self, net, x, y, masks=None):
        out, _ = net(x)
        return F.binary_cross_entropy_with_logits(out, y)

    def split_loss(self, scores, emb, labels):
        s = np.clip(scores, 1e-7, 1 - 1e-7)
        return float(-(labels * np.log(s) + (1 - labels) * np.log(1 - s)).mean())

    def score(self, val, val_loss):
        # NaN where no validation tag has both a positive and a negative clip (a tiny split): the loss decides
        return -val_loss if math.isnan(val["roc_auc"]) else val["roc_auc"]

    def results(self, m, test, out, tags, labels, title):
        per_tag = test.pop("per_tag")
        m["test_per_tag"] = {t: {"roc_auc": float(r), "pr_auc": float(p)} for t, r, p in
                             zip(tags, per_tag["roc_auc"], per_tag["pr_auc"])}
        plot_tag_auc(tags, per_tag["roc_auc"], out / "tag_roc_auc.png", title=f"Test ROC-AUC per tag: {title}",
                     n_positive=labels.sum(axis=0))


class MetricMode(Mode):
    """Metric learning: an embedding, triplets plus an auxiliary tag loss, best checkpoint by mean Recall@K."""

    task = "metric"
    curve_keys = tuple(f"val_recall@{k}" for k in DEFAULT_KS)

    @property
    def distance(self):
        return self.cfg.distance

    def network(self, ff):
        c = self.cfg
        n_mels = ff.params.n_mels if "mel" in c.inputs else 0
        return build_embedding_model(c.model, ff.bins, dim=c.dim, n_mels=n_mels,
                                     n_tags=len(ff.tags) if c.tag_weight > 0 else 0)

    def prepare(self, ff, idx, labels):
        c = self.cfg
        try:
            self.sampler = make_sampler(c.sampler, labels, sampler_statistics(c, ff, idx), seed=c.seed,
                                        graded=c.negatives == "graded")
            self.first_draw()  # tag samplers build lazily: a split that cannot feed them fails here
        except ValueError as exc:
            raise FeedError(f"{c.features}: the train split cannot feed the {c.sampler} sampler: {exc}") from exc

    def first_draw(self) -> None:
        raise NotImplementedError

    def metric_loss(self, out: torch.Tensor, y: torch.Tensor, masks) -> torch.Tensor:
        """The metric loss of one batch's embeddings (``y``: the crops' tags; ``masks``: what :meth:`masks`
        gave for the batch)."""
        raise NotImplementedError

    def loss(self, net, x, y, masks=None):
        out, tag_logits = net(x)
        loss = self.metric_loss(out, y, masks)
        if tag_logits is not None:
            loss = loss + self.cfg.tag_weight * F.binary_cross_entropy_with_logits(tag_logits, y)
        return loss

    def split_loss(self, scores, emb, labels):
        # mined in fixed blocks of 256 clips: memory bounded by the block
        c = self.cfg
        if c.loss == "contrastive":
            return blockwise_contrastive_loss(torch.from_numpy(emb), labels, block=256, seed=c.seed,
                                              temperature=c.temperature)
        return blockwise_triplet_loss(torch.from_numpy(emb), labels, block=256, seed=c.seed, margin=c.margin,
                                      distance=c.distance, mining="semihard", graded=c.negatives == "graded")

    def score(self, val, val_loss):
        recalls = [v for k, v in val.items() if k.startswith("recall@")]
        return -val_loss if not recalls or np.isnan(recalls).any() else float(np.mean(recalls))


class MinedMetric(MetricMode):
    """Triplets mined inside each P x K batch, or the contrastive loss over it (``--loss contrastive``),
    over the batch gathered from every rank."""

    def first_draw(self):
        self.sampler.plan(1, self.cfg.batch, rng=0)

    def plan(self, n_train, crops_per_clip, n_items, epoch, world=1):
        rng = np.random.default_rng([self.cfg.seed, epoch])
        return [np.asarray(b) for b in self.sampler.plan(max(1, n_items // self.cfg.batch), self.cfg.batch, rng=rng)]

    @property
    def by_tag_overlap(self) -> bool:
        """The contrastive loss with a tag sampler: its targets come from the batch's tags, not the sampler's masks."""
        return self.cfg.loss == "contrastive" and self.cfg.sampler in ("tag", "overlap")

    def masks(self, batches, world):
        # Per batch, the sampler's masks (none for the contrastive loss on tags: its targets come from the
        # batch's tags) and every rank's share size, known here, so gathering the batch need not ask.
        for b in batches:
            sizes = [len(dist.shard(b, r, world)) for r in range(world)]
            yield None if self.by_tag_overlap else self.sampler.masks(gathered_items(b, world)), sizes

    def metric_loss(self, out, y, masks):
        c = self.cfg
        masks, sizes = masks
        if c.loss == "contrastive":
            emb, y = dist.gather_rows(out, y, sizes=sizes)
            # Tag samplers: graded targets by tag overlap; the others: their positives, equally weighted.
            weights = jaccard_weights(y) if self.by_tag_overlap else torch.as_tensor(masks[0]).float()
            return contrastive_loss(emb, weights, c.temperature)
        (emb,) = dist.gather_rows(out, sizes=sizes)  # the whole batch's positives and negatives
        return batch_triplet_loss(emb, masks=masks, margin=c.margin, distance=c.distance, mining=c.mining)


class SampledMetric(MetricMode):
    """The course's sampled triplets; each batch is ``(triplets, 3)`` (anchor, positive, negative)."""

    def first_draw(self):
        self.sampler.triplets(1, rng=0)

    def plan(self, n_train, crops_per_clip, n_items, epoch, world=1):
        rng = np.random.default_rng([self.cfg.seed, epoch])
        return _join_tail(list(self.sampler.triplet_batches(n_items, self.cfg.batch, rng=rng)), world)

    def share(self, batch, rank=0, world=1):
        # [anchors, positives, negatives], so that one forward pass serves the share's triplets
        return dist.shard(batch, rank, world).T.reshape(-1).tolist()

    def metric_loss(self, out, y, masks):
        anc, pos, neg = out.chunk(3)  # sampled triplets are whole on every rank
        return triplet_loss(anc, pos, neg, margin=self.cfg.margin, distance=self.cfg.distance)


#: The metric losses this module calls (``MetricMode.split_loss``, ``MinedMetric.metric_loss``).
LOSSES = ("triplet", "contrastive")


def make_mode(cfg: RunConfig) -> Mode:
    """The training mode of ``cfg``: its task, and for metric learning its mining."""
    if cfg.task == "tagging":
        return Tagging(cfg)
    if cfg.loss not in LOSSES:  # a name added to the registry only would train the triplet loss
        raise ValueError(f"--loss {cfg.loss}: train/modes.py calls {' and '.join(LOSSES)} only; a new loss needs "
                         "its call in MetricMode.split_loss and MinedMetric.metric_loss")
    return SampledMetric(cfg) if cfg.mining == "none" else MinedMetric(cfg)


def gathered_items(batch, world: int) -> np.ndarray:
    """A global batch's items in the order :func:`train.dist.gather_rows` returns the ranks' rows."""
    return np.concatenate([np.asarray(dist.shard(batch, r, world), dtype=np.int64) for r in range(world)])


def sampler_statistics(cfg: RunConfig, ff: FeatureFile, idx) -> np.ndarray | None:
    """Per-clip statistics the ``timbre`` and ``beat`` samplers rank neighbours by; None for the others.

    timbre: each MFCC's mean and standard deviation over the clip (read from the file's MFCC);
    beat: the rhythm statistics extraction stores (``/rhythm``), or computed from the stored
    log-mel when the file predates them.
    """
    if cfg.sampler == "timbre":
        return clip_statistics(FeatureFile(cfg.features, ("mfcc",)), idx)
    if cfg.sampler != "beat":
        return None
    rhythm = getattr(ff, "rhythm", None)
    if rhythm is not None:
        return np.asarray(rhythm)[idx]
    from features.rhythm import rhythm_statistics

    mel = FeatureFile(cfg.features, ("mel",))
    return clip_statistics(mel, idx, "mel", lambda m: rhythm_statistics(m, mel.params))
