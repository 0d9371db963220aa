"""Train a tagging CNN or a metric-learning embedding on the features file; evaluate on test.

    python train/run.py [--features cache/features.h5] [--task tagging|metric] [--model NAME]
                        [--epochs N] [--batch N] [--lr X] [--optimizer sgd|adam] [--device auto|cpu|cuda]
                        [--seed N] [--out cache/runs/NAME] [--resume]
    torchrun --nproc-per-node N train/run.py ...      (DistributedDataParallel, one process per device)

The loop reads top to bottom: set-up, the data, the model, the optimiser, then per epoch a
training pass, a validation pass, the learning-rate rule and checkpoints; at the end the best
checkpoint is run on the test split, whose clip scores, embeddings, metrics and plots are saved.

Under torchrun (``train/dist.py``) ``--batch`` is the global batch: every rank computes the same
plan of an epoch's batches and trains on its share of each (so an epoch still covers the training
audio once, and the run takes the plain run's steps with the plain run's batches); metric learning
mines over the batch gathered from all ranks. Rank 0 alone validates, tests and writes the run
folder, with the unwrapped network, so those numbers are a single process's; the others wait for
its validation loss, from which every rank takes the same learning-rate and stop decisions.
BatchNorm stays per rank (statistics of the local share).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from data.cli import HelpFormatter
from features.params import parse_features
from train import dist, runfolder
from train.runfolder import RunError

# torch, the models, the feed's readers and the evaluators load inside the functions that use them,
# so that --help and argument errors answer at once.

#: Inputs each model reads when --inputs is not given (the stronger model uses all it can); its keys are
#: the names of ``train.models.MODELS`` (a test checks), known here without importing torch.
DEFAULT_INPUTS = {"baseline": "mel", "cnn2d": "mel", "fcn": "mel", "crnn": "mel", "musicnn": "mel",
                  "musicnn_vgg": "mel", "shortres": "mel,mfcc,chroma", "linear": "mel"}
DEFAULT_MODEL = {"tagging": "shortres", "metric": "shortres"}
#: ``train.metric.SAMPLERS``, known here without importing torch (a test checks).
SAMPLERS = ("tag", "overlap", "instance", "latent", "timbre", "beat")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python train/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--features", type=Path, default=Path("cache/features.h5"), help="features file from extraction")
    p.add_argument("--task", choices=("tagging", "metric"), default="tagging",
                   help="tagging: 50-tag classifier (BCE); metric: an embedding for similarity (triplets)")
    p.add_argument("--model", choices=tuple(DEFAULT_INPUTS), default=None,
                   help=f"network; default {DEFAULT_MODEL['tagging']} ('linear' is for --task metric)")
    p.add_argument("--inputs", default=None, help="stored features fed to the model, e.g. mel,mfcc; "
                   f"default per model: {DEFAULT_INPUTS}")
    p.add_argument("--epochs", type=int, default=None,
                   help="most epochs (the learning-rate rule may stop sooner); default 20. With --resume on a "
                        "finished run, give more epochs than it ran to train it on")
    p.add_argument("--batch", type=int, default=32, help="clips per training step (under torchrun: the global batch)")
    p.add_argument("--lr", type=float, default=None, help="learning rate; default 0.01 for sgd, 0.001 for adam")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                   help="sgd: Nesterov momentum 0.9 (the course's); adam: AdamW")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="decoupled weight decay (AdamW) or L2 (SGD)")
    p.add_argument("--patience", type=int, default=3, help="epochs without a better validation loss before the lr drops")
    p.add_argument("--lr-factor", type=float, default=0.2, help="factor of each learning-rate drop")
    p.add_argument("--stop-lr", type=float, default=None, help="stop once the lr falls below this; default lr/500")
    p.add_argument("--seconds", type=float, default=3.0, help="crop length (3 s = 188 frames at hop 256)")
    p.add_argument("--crops-per-clip", default="auto",
                   help="random crops of each training clip per epoch; auto: as many as fit in the median "
                        "training clip, so that an epoch sees about all the training audio once")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap the training steps of each epoch (validation still runs in full); for quick runs at scale")
    p.add_argument("--dim", type=int, default=128, help="--task metric: embedding size")
    p.add_argument("--distance", choices=("cosine", "euclidean"), default="cosine", help="--task metric")
    p.add_argument("--margin", type=float, default=0.4, help="--task metric: triplet margin")
    p.add_argument("--tag-weight", type=float, default=1.0,
                   help="--task metric: weight of an auxiliary tag loss (BCE of a linear layer on the "
                        "embedding) added to the triplet loss; 0 for triplets alone")
    p.add_argument("--mining", choices=("semihard", "hard", "none"), default="semihard",
                   help="--task metric: in-batch mining over P tags x K clips, or 'none' for the course's "
                        "sampled triplets")
    p.add_argument("--negatives", choices=("graded", "disjoint"), default="graded",
                   help="--task metric with mining: a negative of (anchor, positive) is any clip sharing a smaller "
                        "fraction of the anchor's tags than the positive (graded), or only clips sharing none")
    p.add_argument("--sampler", choices=SAMPLERS, default="overlap",
                   help="--task metric: which clips count as positives and negatives, for mining and for sampled "
                        "triplets alike. tag: the course's (share a drawn tag); overlap: multi-label-aware tag "
                        "overlap; instance: other crops of the same clip (no labels); latent: nearby in a tag SVD "
                        "space (synonyms close); timbre: nearest MFCC mean+std; beat: nearest rhythm statistics")
    p.add_argument("--augmented", action=argparse.BooleanOptionalAction, default=None,
                   help="train on the augmented versions extraction stored (pipeline/extract.py --augment N): each "
                        "epoch reads, per training clip, the original or one of its N versions, drawn from the seed; "
                        "default: on when the file has them")
    p.add_argument("--init", type=Path, default=None,
                   help="--task metric: start the backbone from the best checkpoint of this tagging run folder "
                        "(same --model and --inputs), as metric learning usually starts from a classifier")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when there is one")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training steps in bfloat16 autocast (weights stay fp32; evaluation is always fp32); "
                        "auto: bf16 where the device supports it")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops, batches, initial weights and dropout")
    p.add_argument("--out", type=Path, default=None, help="run folder; default cache/runs/<task>-<model>")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dist-timeout", type=float, default=10.0,
                   help="under torchrun: minutes a rank waits for the others at a collective (e.g. while "
                        "rank 0 validates) before the job fails; a rank that dies ends the job at once")
    return p


def parse_args(argv=None):
    parser = build_parser()
    a = parser.parse_args(argv)
    a.model = a.model or DEFAULT_MODEL[a.task]
    if a.model == "linear" and a.task == "tagging":
        parser.error("--model linear is the metric-learning projection; use it with --task metric")
    try:  # canonical order (mel first), the order models expect
        a.inputs = parse_features(a.inputs or DEFAULT_INPUTS[a.model])
    except ValueError as exc:
        parser.error(f"--inputs: {exc}")
    if a.model != "linear" and "mel" not in a.inputs:
        parser.error(f"--model {a.model} convolves over the mel bands: --inputs must include mel")
    a.epochs_given = a.epochs is not None  # only an explicit --epochs trains a finished run on
    a.epochs = a.epochs if a.epochs_given else 20
    a.lr = a.lr if a.lr is not None else (0.01 if a.optimizer == "sgd" else 1e-3)
    a.stop_lr = a.stop_lr if a.stop_lr is not None else a.lr / 500
    a.out = a.out or Path("cache/runs") / f"{a.task}-{a.model}"
    if a.crops_per_clip != "auto":
        try:
            a.crops_per_clip = int(a.crops_per_clip)
        except ValueError:
            parser.error(f"--crops-per-clip must be a whole number or auto, got {a.crops_per_clip!r}")
    for name in ("epochs", "batch", "dim", "patience", "crops_per_clip", "steps_per_epoch"):
        if getattr(a, name) not in ("auto", None) and getattr(a, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if a.dist_timeout <= 0:
        parser.error(f"--dist-timeout must be positive, got {a.dist_timeout}")
    for name in ("seconds", "lr", "lr_factor", "stop_lr"):
        if not getattr(a, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    for name in ("margin", "tag_weight", "workers", "weight_decay"):
        if getattr(a, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative, got {getattr(a, name)}")
    if a.lr_factor >= 1:
        parser.error(f"--lr-factor must be below 1 (each drop lowers the lr), got {a.lr_factor}")
    if a.init and a.task != "metric":
        parser.error("--init starts a metric-learning backbone from a tagging run; use it with --task metric")
    if a.init and a.model == "linear":
        parser.error("--init: the linear projection has no backbone to start from a tagging run")
    if a.device == "cuda" and not __import__("torch").cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device auto or cpu")
    return a


def config_of(a) -> dict:
    """What defines a run: a resumed run or a loaded checkpoint must agree on these."""
    keys = ("task", "model", "inputs", "precision", "dim", "seconds", "batch", "optimizer", "lr", "weight_decay", "seed",
            "distance", "margin", "mining", "negatives", "sampler", "crops_per_clip", "tag_weight", "steps_per_epoch",
            "augmented")
    c = {k: getattr(a, k) for k in keys}
    c["init"] = str(a.init) if a.init else None
    c["inputs"] = list(a.inputs)
    c["features"] = str(a.features)
    return c


def bf16_supported(device) -> bool:
    """Whether bfloat16 autocast runs natively (CUDA with bf16, or a CPU with AVX-512 BF16 / AMX)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dist.record
def main(argv=None) -> int:
    a = parse_args(argv)
    from train.feed import FeedError

    try:
        return train(a)
    except (FeedError, RunError) as exc:
        print(f"error{dist.where()}: {exc}", file=sys.stderr)
        dist.report(exc)
        return 2
    except KeyboardInterrupt:
        if dist.is_main():
            again = " ".join(["python train/run.py", *(argv if argv is not None else sys.argv[1:])])
            if (a.out / "last.pt").is_file():
                hint = (f"{a.out / 'last.pt'} keeps the last finished epoch; continue with: "
                        f"{again}{'' if a.resume else ' --resume'}")
            else:
                hint = f"no epoch had finished, so nothing was kept; start again with: {again}"
            print(f"\ninterrupted: {hint}", file=sys.stderr)
        raise
    finally:
        dist.close()


def epoch_plan(a, n_train: int, crops_per_clip: int, n_items: int, sampler, epoch: int,
               world: int = 1) -> list[np.ndarray]:
    """The global index batches of one epoch, a pure function of (seed, epoch, world).

    Every rank computes the same plan and trains on its share of each batch (:func:`rank_share`),
    so the ranks' shares of an epoch are disjoint and cover it, and a resumed run repeats them.
    ``world`` matters only for the tail: a last batch too short to give every rank its share
    joins the batch before it.

    Returns
    -------
    list of np.ndarray
        Positions in the training split; with ``--mining none`` each batch is ``(triplets, 3)``
        (anchor, positive, negative).
    """
    rng = np.random.default_rng([a.seed, epoch])
    if a.task == "tagging":
        order = np.concatenate([rng.permutation(n_train) for _ in range(crops_per_clip)])
        plan = [order[i:i + a.batch] for i in range(0, n_items, a.batch)]
        least = 2 * world  # BatchNorm cannot train on a share of one clip
    elif a.mining != "none":
        return [np.asarray(b) for b in sampler.plan(max(1, n_items // a.batch), a.batch, rng=rng)]
    else:
        plan = list(sampler.triplet_batches(n_items, a.batch, rng=rng))  # (triplets, 3) each
        least = world  # a triplet for every rank
    if len(plan) > 1 and len(plan[-1]) < least:  # a short tail joins the batch before it
        plan[-2:] = [np.concatenate(plan[-2:])]
    return plan


def rank_share(a, batch: np.ndarray, rank: int = 0, world: int = 1) -> list[int]:
    """Share ``rank`` of one batch of :func:`epoch_plan` (:func:`train.dist.shard`), as the loader takes it.

    With ``--mining none`` the share's triplets are laid out as [anchors, positives, negatives],
    so that one forward pass serves them. With ``world=1`` the share is the whole batch.
    """
    share = dist.shard(batch, rank, world)
    if a.task == "metric" and a.mining == "none":
        share = share.T.reshape(-1)
    return share.tolist()


def train_forward(model, bf16: bool):
    """The training pass of ``model`` as one module: ``forward(x) -> (out, tag_logits or None)``.

    ``out`` is the network's output in fp32 (computed in bf16 autocast when ``bf16``), the logits are
    the metric network's tag head on it; one module, so that DistributedDataParallel wraps every
    parameter the loss reaches.
    """
    import torch

    class TrainForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = self.model(x)
            out = out.float()  # losses in fp32
            head = getattr(self.model, "tag_head", None)
            return out, None if head is None else head(out)

    return TrainForward()


def make_model(a, ff, device, labels_train):
    """The network for ``a.task`` on the file's inputs, on ``device``, with its optimiser and lr rule.

    Its tag layer starts from the tags' base rates in ``labels_train`` (:func:`train.models.init_tag_prior`).
    """
    import torch

    from train.models import build_embedding_model, build_model, init_tag_prior

    n_mels = ff.params.n_mels if "mel" in a.inputs else 0
    if a.task == "tagging":
        model = build_model(a.model, ff.bins, n_mels=n_mels, n_out=len(ff.tags))
    else:
        model = build_embedding_model(a.model, ff.bins, dim=a.dim, n_mels=n_mels,
                                      n_tags=len(ff.tags) if a.tag_weight > 0 else 0)
    init_tag_prior(model, labels_train)
    # channels-last convolutions and bf16 autocast: about 2-3x faster CPU steps where oneDNN has bf16;
    # musicnn's tall and wide single-channel filters run 1.5-2.5x slower channels-last, so it opts out.
    fmt = torch.channels_last if getattr(model, "channels_last", True) else torch.contiguous_format
    model.to(device, memory_format=fmt)
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=a.lr_factor, patience=a.patience)
    return model, opt, sched


def sampler_statistics(a, ff, idx):
    """Per-clip statistics the ``timbre`` and ``beat`` samplers rank neighbours by; None for the others.

    timbre: each MFCC's mean and standard deviation over the clip (read from the file's MFCC);
    beat: the rhythm statistics extraction stores (``/rhythm``), or computed from the stored
    log-mel when the file predates them.
    """
    from train.feed import FeatureFile
    from train.metric import clip_statistics

    if a.sampler == "timbre":
        return clip_statistics(FeatureFile(a.features, ("mfcc",)), idx)
    if a.sampler != "beat":
        return None
    rhythm = getattr(ff, "rhythm", None)
    if rhythm is not None:
        return np.asarray(rhythm)[idx]
    from features.rhythm import rhythm_statistics

    mel = FeatureFile(a.features, ("mel",))
    return clip_statistics(mel, idx, "mel", lambda m: rhythm_statistics(m, mel.params))


def gathered_items(batch, world: int) -> np.ndarray:
    """A global batch's items in the order :func:`train.dist.gather_rows` returns the ranks' rows."""
    return np.concatenate([np.asarray(dist.shard(batch, r, world), dtype=np.int64) for r in range(world)])


def step_loss(a, net, x, y, masks=None):
    """The training loss of one batch: BCE (tagging), or mined or sampled triplets plus the tag loss.

    ``net`` is :func:`train_forward`'s module, wrapped in DistributedDataParallel under torchrun;
    in-batch mining then runs over the embeddings of every rank's share of the batch, with the
    sampler's positive and negative ``masks`` of that gathered batch.
    """
    import torch.nn.functional as F

    from train.metric import batch_triplet_loss, triplet_loss

    out, tag_logits = net(x)
    if a.task == "tagging":
        return F.binary_cross_entropy_with_logits(out, y)
    if a.mining != "none":
        (emb,) = dist.gather_rows(out)  # the whole batch's positives and negatives
        loss = batch_triplet_loss(emb, masks=masks, margin=a.margin, distance=a.distance, mining=a.mining)
    else:  # sampled triplets are whole on every rank
        anc, pos, neg = out.chunk(3)
        loss = triplet_loss(anc, pos, neg, margin=a.margin, distance=a.distance)
    if tag_logits is not None:
        loss = loss + a.tag_weight * F.binary_cross_entropy_with_logits(tag_logits, y)
    return loss


def write_results(a, out, ff, test: dict, test_loss: float, best_epoch: int, history: list,
                  seconds: float, n_positive=None):
    """``metrics.json`` and the plots of a finished run; returns the per-tag test scores (tagging) or None."""
    from eval.recall import DEFAULT_KS
    from train.plots import plot_curves, plot_tag_auc

    per_tag = test.pop("per_tag", None)
    m = {"task": a.task, "model": a.model, "best_epoch": best_epoch, "epochs_run": len(history),
         "test_loss": test_loss, **{f"test_{k}": v for k, v in test.items()},
         "valid": {k.removeprefix("val_"): v for k, v in history[best_epoch - 1].items()
                   if k.startswith("val_")} if len(history) >= best_epoch else {},
         "data_wait_mean": float(np.mean([h["data_wait"] for h in history])),
         "train_clips_per_s": float(np.mean([h["clips_per_s"] for h in history])),
         "seconds": seconds}
    if per_tag is not None:
        m["test_per_tag"] = {t: {"roc_auc": float(r), "pr_auc": float(p)} for t, r, p in
                             zip(ff.tags, per_tag["roc_auc"], per_tag["pr_auc"])}
        plot_tag_auc(ff.tags, per_tag["roc_auc"], out / "tag_roc_auc.png",
                     title=f"Test ROC-AUC per tag: {a.model}, {out.name}", n_positive=n_positive)
    runfolder.write_json(out / "metrics.json", m)
    plot_curves(history, out / "curves.png", ("val_roc_auc", "val_pr_auc") if a.task == "tagging"
                else tuple(f"val_recall@{k}" for k in DEFAULT_KS), title=f"{out.name}: {a.task} {a.model}",
                best_epoch=best_epoch)
    return per_tag


def train(a) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from train.evaluate import metrics, predict, split_loss
    from train.feed import Crops, FeatureFile, FeedError, standardizer
    from train.metric import make_sampler
    from train.models import count_parameters

    # ---------------------------------------------------------------- set-up
    out = a.out
    device = dist.init(a.device, a.dist_timeout)  # under torchrun: joins the job, this rank's device
    rank, world, main = dist.rank(), dist.world(), dist.is_main()
    if a.batch < 2 * world:
        raise RunError(f"--batch {a.batch} is the global batch, shared by {world} ranks: it must be at least "
                       f"{2 * world}, so that every rank's BatchNorm trains on 2 clips or more")
    torch.manual_seed(a.seed)
    config = config_of(a)
    ckpt_last, ckpt_best = out / "last.pt", out / "best.pt"

    # ---------------------------------------------------------------- data (inputs before outputs)
    ff = FeatureFile(a.features, a.inputs)
    length = ff.params.frames(a.seconds)
    split = {s: ff.indices(s) for s in ("train", "valid", "test")}
    for s, idx in split.items():
        if len(idx) == 0:
            raise FeedError(f"{a.features}: the {s} split is empty")
    # Rank 0 alone reads and writes the run folder, which need exist on its machine only.
    resume = dist.from_main(runfolder.check_new_or_resumable, out, config, a.resume,
                            a.epochs if a.epochs_given else None)
    logf = None  # the run folder is made once the run can start: a failed start leaves nothing behind
    held = []

    def log(msg: str) -> None:
        if main:
            print(msg)
        held.append(msg)
        if logf is not None:
            logf.write("\n".join(held) + "\n")
            logf.flush()
            held.clear()
    init = dist.from_main(runfolder.load_best, a.init, "cpu", "tagging", a.model, a.inputs, what="--init")[1] \
        if a.init and not resume else None
    if resume or init:  # a started backbone learnt on inputs scaled this way
        mean, std = (resume or init)["mean"], (resume or init)["std"]
    else:
        mean, std = dist.from_main(standardizer, ff, split["train"], seed=a.seed)
    train_set = Crops(ff, split["train"], length, mean, std, "random")
    if a.augmented and not ff.n_versions:
        raise FeedError(f"--augmented: {a.features} holds no augmented versions; extract with "
                        "`python pipeline/extract.py --augment N`")
    augmented = ff.n_versions if a.augmented is not False else 0  # versions per clip drawn from
    val_set = Crops(ff, split["valid"], length, mean, std, "fixed")
    test_set = Crops(ff, split["test"], length, mean, std, "chunks")
    labels_train = ff.labels[split["train"]]
    loader_kw = dict(num_workers=a.workers, pin_memory=device.type == "cuda")

    crops_per_clip = a.crops_per_clip
    if crops_per_clip == "auto":  # one epoch ~ one pass over the training audio, whatever the clip length
        crops_per_clip = max(1, int(round(np.median(ff.n_frames[split["train"]]) / length)))
    n_items = len(split["train"]) * crops_per_clip
    if a.steps_per_epoch:  # draw only what the capped epoch uses
        n_items = min(n_items, a.steps_per_epoch * a.batch)
    sampler = None
    try:
        if a.task == "metric":
            sampler = make_sampler(a.sampler, labels_train, sampler_statistics(a, ff, split["train"]),
                                   seed=a.seed, graded=a.negatives == "graded")
            # Tag samplers build lazily: draw once now, so a split that cannot feed them fails here.
            sampler.plan(1, a.batch, rng=0) if a.mining != "none" else sampler.triplets(1, rng=0)
    except ValueError as exc:
        raise FeedError(f"{a.features}: the train split cannot feed the {a.sampler} sampler: {exc}") from exc

    # ---------------------------------------------------------------- model and optimiser
    model, opt, sched = make_model(a, ff, device, labels_train)
    bf16 = a.precision == "bf16" or (a.precision == "auto" and bf16_supported(device))
    start_epoch, best, history = 1, -math.inf, []
    if init:
        model.backbone.load_state_dict(init["model"])
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        start_epoch, best, history = resume["epoch"] + 1, resume["best"], resume["history"]
    net = train_forward(model, bf16)
    if dist.launched():
        from torch.nn.parallel import DistributedDataParallel

        # An EmbeddingNet leaves its backbone's tag head unused, which DDP must be told to expect.
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=hasattr(model, "backbone"))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        # A finished run trained on (--resume with more --epochs) is unfinished until it is tested again.
        (out / "metrics.json").unlink(missing_ok=True)
        runfolder.write_json(out / "config.json", {
            **config, "features_file": str(a.features), "feature_params": ff.params.as_dict(), "frames": length,
            "crops_per_clip_used": crops_per_clip, "tags": list(ff.tags), "n_params": count_parameters(model)})
    logf = open(out / "train.log" if main else os.devnull, "a")
    if resume:
        log(f"resumed from {ckpt_last} after epoch {resume['epoch']}")
    log(f"{a.task} {a.model}: {count_parameters(model):,} parameters, inputs {','.join(a.inputs)} "
        f"({ff.bins} bins x {length} frames), {len(split['train'])}/{len(split['valid'])}/{len(split['test'])} "
        f"train/valid/test clips, {crops_per_clip} crop(s) per clip per epoch, {device}{' bf16' if bf16 else ''}"
        + (f", {world} ranks sharing each batch of {a.batch}" if dist.launched() else "")
        + (f", the original or one of {augmented} augmented versions per clip per epoch" if augmented else ""))

    def evaluate(dataset):
        """Clip scores, embeddings, labels, the split's loss and its metrics."""
        scores, emb, labels = predict(model, dataset, a.task, a.batch * 2, device, **loader_kw)
        loss = split_loss(scores, emb, labels, a.task, a.margin, a.distance, a.negatives == "graded", a.seed)
        return scores, emb, labels, loss, metrics(scores, emb, labels, ff.tags,
                                                  a.distance if a.task == "metric" else "cosine")

    # ---------------------------------------------------------------- training
    # The run's time is carried in last.pt, so a resumed run (or one only tested again) keeps what it had.
    t_run = time.time() - (resume.get("seconds", 0.0) if resume else 0.0)
    stopped = None
    for epoch in range(start_epoch, a.epochs + 1):
        model.train()
        torch.manual_seed(a.seed * 100_003 + epoch + 1_000_003 * rank)  # this rank's random crops and dropout
        batches = epoch_plan(a, len(split["train"]), crops_per_clip, n_items, sampler, epoch, world)
        plan = [rank_share(a, b, rank, world) for b in batches]
        if augmented:  # this epoch's version of each clip (0: the original), the same on every rank
            train_set.set_versions(np.random.default_rng([a.seed, epoch, 1]).integers(0, augmented + 1,
                                                                                      len(split["train"])))
        # The sampler's pairs of each global batch, in gathered order (mining only).
        batch_masks = (sampler.masks(gathered_items(b, world)) for b in batches) \
            if a.task == "metric" and a.mining != "none" else itertools.repeat(None)
        loader = DataLoader(train_set, batch_sampler=plan, collate_fn=Crops.collate, **loader_kw)
        bar = tqdm(total=len(plan), desc=f"epoch {epoch}", unit="batch", disable=a.quiet or not main,
                   dynamic_ncols=True, leave=False)
        t0, t_wait, seen, steps, total_loss = time.time(), 0.0, 0, 0, 0.0
        t_ready = time.time()
        for x, y in loader:
            t_wait += time.time() - t_ready
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = step_loss(a, net, x, y, next(batch_masks))
            finite = bool(torch.isfinite(loss))
            if not dist.all_true(finite):  # all ranks stop together, or the others would wait for this one
                what = f"loss is {loss.item()}" if not finite else "the loss of another rank is not finite"
                stopped = f"{what} at epoch {epoch}; stopping (the last good checkpoint is {ckpt_last})"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(x)
            seen += len(x)
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", clips_s=f"{seen / (time.time() - t0):.0f}")
            t_ready = time.time()
        bar.close()
        if stopped:
            break
        train_time = time.time() - t0
        total_loss, seen = dist.sum_all(total_loss, seen)  # over all ranks' shares

        # Rank 0 validates alone, with the unwrapped network: a single process's numbers.
        if main:
            with warnings.catch_warnings():  # tags absent from a small validation split: said once, at test
                warnings.simplefilter("ignore")
                *_, val_loss, val = evaluate(val_set)
        val_loss = dist.broadcast(val_loss if main else None)  # the others wait here for it
        sched.step(val_loss)  # the same step on every rank: the same lr, the same stop
        lr = opt.param_groups[0]["lr"]
        if main:
            h = {"epoch": epoch, "steps": steps, "train_loss": total_loss / seen, "val_loss": val_loss, "lr": lr,
                 "clips_per_s": seen / train_time, "data_wait": t_wait / train_time,
                 **{f"val_{k}": v for k, v in val.items() if k != "per_tag"}}
            history.append(h)
            # The best checkpoint: validation ROC-AUC for tagging, mean Recall@K for metric learning.
            recalls = [v for k, v in val.items() if k.startswith("recall@")]
            score = val["roc_auc"] if a.task == "tagging" else (np.mean(recalls) if recalls else -val_loss)
            improved = score > best
            if improved:
                best = score
                runfolder.save_checkpoint({"model": model.state_dict(), "config": config, "mean": mean,
                                           "std": std, "epoch": epoch, "score": score}, ckpt_best)
            runfolder.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(),
                                       "sched": sched.state_dict(), "epoch": epoch, "best": best,
                                       "history": history, "config": config, "mean": mean, "std": std,
                                       "seconds": time.time() - t_run}, ckpt_last)
            shown = "  ".join(f"{k.removeprefix('val_')} {v:.4f}" for k, v in h.items() if k.startswith("val_"))
            log(f"epoch {epoch:3d}  train_loss {h['train_loss']:.4f}  {shown}  lr {lr:.1e}  "
                f"{h['clips_per_s']:.0f} clips/s  data wait {100 * h['data_wait']:.1f}%" + ("  *" if improved else ""))
        if lr < a.stop_lr:
            log(f"learning rate {lr:.1e} fell below --stop-lr {a.stop_lr:.1e}: stopping")
            break
    if stopped:
        log(f"error: {stopped}")
        logf.close()
        return 1
    if not main:  # rank 0 alone tests and writes the results
        logf.close()
        return 0
    if not ckpt_best.exists():
        raise RunError(f"{out}: no epoch finished, so there is no checkpoint to test")

    # ---------------------------------------------------------------- test with the best checkpoint
    best_ckpt = torch.load(ckpt_best, map_location=device, weights_only=False)
    model.load_state_dict(best_ckpt["model"])
    scores, emb, labels, test_loss, test = evaluate(test_set)
    runfolder.save_outputs(out, scores, emb, labels, ff.clip_id[split["test"]], ff.tags)
    per_tag = write_results(a, out, ff, test, test_loss, best_ckpt["epoch"], history, time.time() - t_run,
                            n_positive=labels.sum(axis=0))
    shown = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
    log(f"\ntest ({len(split['test'])} clips, best epoch {best_ckpt['epoch']}): {shown}")
    log(f"run folder {out}: metrics.json, best.pt, predictions/embeddings/labels .npy, curves.png"
        + (", tag_roc_auc.png" if per_tag is not None else ""))
    log(f"evaluate again: python eval/recall.py {out / 'embeddings.npy'}"
        + (f"   python eval/auc.py {out / 'predictions.npy'}" if scores is not None else ""))
    logf.close()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # the hint is printed; no traceback
        code = 130
    dist.exit(code)
