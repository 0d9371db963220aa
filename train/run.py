"""Train a tagging CNN or a metric-learning embedding on the features file; evaluate on test.

    python train/run.py [--features cache/features.h5] [--task tagging|metric] [--model NAME]
                        [--epochs N] [--batch N] [--lr X] [--optimizer sgd|adam] [--device auto|cpu|cuda]
                        [--seed N] [--out cache/runs/NAME] [--resume]
    torchrun --nproc-per-node N train/run.py ...      (DistributedDataParallel, one process per device)

This is the command line: it parses and checks the arguments (no torch, so --help and argument
errors answer at once) into one frozen ``train.config.RunConfig`` and hands it to the loop,
``train.loop.train``, which reads top to bottom; ``train.modes`` holds what differs between
tagging and the two ways of metric learning.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

from data.cli import HelpFormatter
from data.files import folder_error
from features.device import device_error
from features.params import parse_features
from train import dist
from train.config import CONTRASTIVE_ONLY, INIT_ONLY, METRIC_ONLY, TRIPLET_ONLY, RunConfig
from train.registry import DEFAULT_INPUTS, DEFAULT_MODEL, GROUP, METRIC_LOSSES, MININGS, MODEL_NAMES, SAMPLERS, TASKS
from train.runfolder import RunError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python train/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--features", type=Path, default=Path("cache/features.h5"), help="features file from extraction")
    p.add_argument("--task", choices=TASKS, default="tagging",
                   help="tagging: 50-tag classifier (BCE); metric: an embedding for similarity (see --loss)")
    p.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help=f"network; default {DEFAULT_MODEL['tagging']} ('linear' is for --task metric)")
    p.add_argument("--inputs", default=None, help="stored features fed to the model, e.g. mel,mfcc; default: "
                   f"the model's ({DEFAULT_INPUTS}) that the features file holds, or with --init the run's")
    p.add_argument("--epochs", type=int, default=None,
                   help="most epochs (the learning-rate rule may stop sooner); default 20. With --resume on a "
                        "finished run, give more epochs than it ran to train it on")
    p.add_argument("--batch", type=int, default=32, help="clips per training step (under torchrun: the global batch)")
    p.add_argument("--lr", type=float, default=None, help="learning rate; default 0.01 for sgd, 0.001 for adam")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                   help="sgd: Nesterov momentum 0.9 (the course's); adam: AdamW")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="decoupled weight decay (AdamW) or L2 (SGD)")
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without a better validation loss before the lr drops")
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
    p.add_argument("--loss", choices=METRIC_LOSSES, default=None,
                   help="--task metric: contrastive (default): a multi-label supervised contrastive loss over each "
                        "P x K batch whose targets are the clips' tag overlap (Jaccard); triplet: mined as --mining "
                        "says, or sampled (the default with --mining none or --distance euclidean)")
    p.add_argument("--temperature", type=float, default=0.1, help="--loss contrastive: softmax temperature")
    p.add_argument("--mining", choices=MININGS, default="semihard",
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
                        "(its --model and --inputs, unless given), as metric learning usually starts from a "
                        "classifier")
    p.add_argument("--start", choices=("backbone", "random"), default="backbone",
                   help="--task metric with --init: the projection starts so that the embedding is the tagging "
                        "backbone's own (identity, or its top singular directions when --dim is narrower), or "
                        "at random (before this option existed)")
    p.add_argument("--backbone-lr", type=float, default=1.0,
                   help="--task metric with --init: the backbone's learning rate as a fraction of --lr (the "
                        "projection and tag layer take --lr), so fine-tuning keeps what the tagging run learnt; 0 "
                        "freezes the backbone (weights and batch-norm statistics): only the projection and tag layer "
                        "train")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when there is one")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training steps in bfloat16 autocast (weights stay fp32; evaluation is always fp32); "
                        "auto: bf16 where the device supports it")
    p.add_argument("--feed", choices=("auto", "resident", "memmap"), default="auto",
                   help="resident: the features loaded once into the device's memory, crops gathered there; "
                        "memmap: crops read from the file through a memory map by loader workers; auto: resident "
                        "on a GPU where the features fit in half its free memory, memmap otherwise. Both draw the "
                        "same crops for the same seed (with --workers 0)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the training pass: fused kernels, and on a GPU CUDA graphs (mode "
                        "reduce-overhead), so small batches are not bound by kernel launches; the first steps "
                        "of each batch shape wait for the compilation (a minute or so)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes of the memmap feed; default: on a GPU min(8, cores - 1), "
                        "on the CPU 0 (the cores are busy with the steps). The random crops are drawn in the "
                        "workers, so a run repeats exactly with the same --seed and the same number of workers "
                        "(0 draws as --feed resident does)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops, batches, initial weights and dropout")
    p.add_argument("--out", type=Path, default=None, help="run folder; default cache/runs/<task>-<model>")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dist-timeout", type=float, default=10.0,
                   help="under torchrun: minutes a rank waits for the others at a collective (e.g. while "
                        "rank 0 validates) before the job fails; a rank that dies ends the job at once")
    return p


def parse_args(argv=None) -> RunConfig:
    """The run configuration of a command line; a bad argument exits 2 with a message naming it."""
    parser = build_parser()
    a = parser.parse_args(argv)
    given = given_options(parser, argv)
    started = started_from(a.init) if a.init and a.task == "metric" else {}
    a.model = a.model or started.get("model") or DEFAULT_MODEL[a.task]
    if a.model == "linear" and a.task == "tagging":
        parser.error("--model linear is the metric-learning projection; use it with --task metric")
    if a.inputs is None:
        a.inputs = ",".join(started["inputs"]) if started.get("model") == a.model and started.get("inputs") \
            else default_inputs(a.features, a.model)
    try:  # canonical order (mel first), the order models expect
        a.inputs = parse_features(a.inputs)
    except ValueError as exc:
        parser.error(f"--inputs: {exc}")
    if "mel" in DEFAULT_INPUTS[a.model] and a.model != "linear" and "mel" not in a.inputs:
        parser.error(f"--model {a.model} convolves over the mel bands: --inputs must include mel")
    a.epochs_given = a.epochs is not None  # only an explicit --epochs trains a finished run on
    a.epochs = a.epochs if a.epochs_given else 20
    a.lr = a.lr if a.lr is not None else (0.01 if a.optimizer == "sgd" else 1e-3)
    a.stop_lr = a.stop_lr if a.stop_lr is not None else a.lr / 500
    a.out = a.out or Path("cache/runs") / f"{a.task}-{a.model}"
    if dist.is_main() and (error := folder_error(a.out, "--out")):  # rank 0's folder, on its machine only
        parser.error(error)
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
    for name in ("seconds", "lr", "lr_factor", "stop_lr", "temperature"):
        if not getattr(a, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    for name in ("margin", "tag_weight", "workers", "weight_decay", "backbone_lr"):
        if getattr(a, name) is not None and getattr(a, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative, got {getattr(a, name)}")
    if a.lr_factor >= 1:
        parser.error(f"--lr-factor must be below 1 (each drop lowers the lr), got {a.lr_factor}")
    if a.init and a.task != "metric":
        parser.error("--init starts a metric-learning backbone from a tagging run; use it with --task metric")
    if a.task == "metric" and not a.init and (init_only := sorted(given & INIT_ONLY)):
        parser.error(f"{', '.join('--' + o.replace('_', '-') for o in init_only)}: for a metric run started from "
                     "a tagging run (--init RUN); without --init it changes nothing")
    if a.task == "tagging" and (metric_only := sorted(given & METRIC_OPTIONS)):
        parser.error(f"{', '.join('--' + o.replace('_', '-') for o in metric_only)}: for --task metric; "
                     "a tagging run does not use it")
    triplet_only = sorted(given & TRIPLET_ONLY)
    if a.loss is None:  # the course's sampled triplets, a Euclidean space, or a triplet option ask for triplets
        a.loss = "triplet" if a.mining == "none" or a.distance != "cosine" or triplet_only else "contrastive"
    if a.loss == "triplet" and (contrastive_only := sorted(given & CONTRASTIVE_ONLY)):
        parser.error(f"{', '.join('--' + o for o in contrastive_only)}: for --loss contrastive; the triplet loss "
                     "does not use it")
    if a.task == "metric" and a.mining != "none" and a.batch < GROUP:
        parser.error(f"--batch {a.batch}: a metric batch holds groups of {GROUP} clips that are positives of one "
                     f"another (P x K); give --batch {GROUP} or more")
    if "negatives" in given and a.sampler not in ("tag", "overlap"):
        parser.error(f"--negatives: for the tag samplers; --sampler {a.sampler} has negatives of its own")
    if a.sampler == "tag" and a.mining != "none" and a.task == "metric":
        parser.error("--sampler tag is the course's rule for sampled triplets (--mining none): in mined P x K "
                     "batches and in the contrastive loss, positives and negatives come from the tags' overlap, "
                     "as with --sampler overlap; add --mining none, or use --sampler overlap")
    if a.loss == "contrastive" and a.mining == "none":
        parser.error("--loss contrastive compares every clip of a P x K batch; it does not take --mining none "
                     "(the course's sampled triplets)")
    if a.loss == "contrastive" and a.distance != "cosine":
        parser.error("--loss contrastive works on cosine similarities; use it with --distance cosine")
    if a.loss == "contrastive" and triplet_only:
        parser.error(f"{', '.join('--' + o for o in triplet_only)}: for the triplet loss; --loss contrastive does "
                     "not use it (leave out --loss contrastive, or the option)")
    if a.init and a.model == "linear":
        parser.error("--init: the linear projection has no backbone to start from a tagging run")
    if error := device_error(a.device):
        parser.error(error)
    return RunConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(RunConfig)})


#: Options only metric learning uses (as argparse names them; --init is checked on its own).
METRIC_OPTIONS = (METRIC_ONLY - {"init"}) | {"start"}


def given_options(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The options the command line itself gives (not left at their defaults), as argparse names them."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def started_from(run: Path) -> dict:
    """``config.json`` of the ``--init`` run folder, ``{}`` where there is none to read or it is not a
    tagging run of a known network (the run then refuses the folder, saying why)."""
    import json

    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    # only a tagging run of a network we know starts a backbone; of any other, the run says what is wrong
    ok = isinstance(cfg, dict) and cfg.get("task") == "tagging" and cfg.get("model") in MODEL_NAMES
    return cfg if ok else {}


def default_inputs(features: Path, model: str) -> str:
    """The model's default inputs that ``features`` holds, so that a file of ``pipeline/extract.py
    --features mel,mfcc`` trains the default model on those two; all of them where the file cannot be
    read (the run then says what is wrong with it) or lacks the mel bands every network convolves over."""
    from pipeline import store

    want = DEFAULT_INPUTS[model].split(",")
    try:
        held = store.header(features).features
    except store.StoreError:
        return ",".join(want)
    keep = [f for f in want if f in held]
    return ",".join(keep) if "mel" in keep else ",".join(want)


@dist.record
def main(argv=None) -> int:
    cfg = parse_args(argv)
    from train.feed import FeedError
    from train.loop import train  # torch and the rest load once the arguments are good

    try:
        return train(cfg)
    except (FeedError, RunError) as exc:
        print(f"error{dist.where()}: {exc}", file=sys.stderr)
        dist.report(exc)
        return 2
    except KeyboardInterrupt:
        if dist.is_main():
            again = " ".join(["python train/run.py", *(argv if argv is not None else sys.argv[1:])])
            if (cfg.out / "last.pt").is_file():
                hint = (f"{cfg.out / 'last.pt'} keeps the last finished epoch; continue with: "
                        f"{again}{'' if cfg.resume else ' --resume'}")
            else:
                hint = f"no epoch had finished, so nothing was kept; start again with: {again}"
            print(f"\ninterrupted: {hint}", file=sys.stderr)
        raise
    finally:
        dist.close()


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # the hint is printed; no traceback
        code = 130
    dist.exit(code)
