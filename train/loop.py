"""The training loop, read top to bottom: set-up, the data, the model, the optimiser, then per epoch
a training pass, a validation pass, the learning-rate rule and checkpoints; at the end the best
checkpoint is run on the test split, whose clip scores, embeddings, metrics and plots are saved.

What differs between tagging and metric learning (the network's head, the epoch's batches, the
loss, the validation score, the results) is the mode's (``train.modes``); the settings are one
frozen :class:`train.config.RunConfig`.

Under torchrun (``train/dist.py``) ``cfg.batch`` is the global batch: every rank computes the same
plan of an epoch's batches and trains on its share of each (so an epoch still covers the training
audio once, and the run takes the plain run's steps with the plain run's batches); metric learning
mines over the batch gathered from all ranks. Rank 0 alone validates, tests and writes the run
folder, with the unwrapped network, so those numbers are a single process's; the others wait for
its validation loss, from which every rank takes the same learning-rate and stop decisions.
BatchNorm stays per rank (statistics of the local share).
"""
from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from eval.auc import UndefinedTagWarning
from features.device import bf16_supported
from train import dist, runfolder
from train.config import RunConfig
from train.feed import Crops, FeatureFile, FeedError, Resident, ResidentCrops, standardizer
from train.models import count_parameters, init_tag_prior
from train.modes import Mode, TrainForward, make_mode
from train.plots import plot_curves
from train.runfolder import RunError


class RunLog:
    """``train.log`` of the run folder (rank 0), printed as it goes; lines wait until the folder exists."""

    def __init__(self, main: bool):
        self.main, self.file, self.held = main, None, []

    def open(self, path) -> None:
        self.file = open(path if self.main else os.devnull, "a")
        self("")  # writes what was held

    def __call__(self, msg: str) -> None:
        if msg and self.main:
            print(msg)
        if msg:
            self.held.append(msg)
        if self.file is not None and self.held:
            self.file.write("\n".join(self.held) + "\n")
            self.file.flush()
            self.held.clear()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def optimiser(cfg: RunConfig, model):
    """The optimiser (AdamW, or the course's Nesterov SGD) and its ReduceLROnPlateau rule.

    A metric network started from a tagging run (``--init``) trains its backbone at ``backbone_lr``
    times the learning rate (a second parameter group; the plateau rule scales both alike), or not
    at all with ``backbone_lr`` 0 (:func:`frozen`).
    """
    params = model.parameters()
    if frozen(cfg, model):
        model.backbone.requires_grad_(False)  # no gradient flows into it: a step costs its forward pass only
        params = [p for p in model.parameters() if p.requires_grad]
    elif cfg.init is not None and cfg.backbone_lr != 1.0 and hasattr(model, "backbone"):
        own = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        params = [{"params": own}, {"params": model.backbone.parameters(), "lr": cfg.lr * cfg.backbone_lr}]
    # On a GPU one fused kernel updates every parameter, instead of a few launches per parameter tensor.
    fused = True if next(model.parameters()).is_cuda else None
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay,
                              fused=fused)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.patience)


def frozen(cfg: RunConfig, model) -> bool:
    """Whether the run keeps its backbone as the tagging run left it (``--init`` with ``--backbone-lr 0``)."""
    return cfg.init is not None and cfg.backbone_lr == 0 and hasattr(model, "backbone")


def place(model, device) -> None:
    """``model`` on ``device``; channels-last convolutions where they pay.

    With bf16 autocast about 2-3x faster CPU steps where oneDNN has bf16; musicnn's tall and wide
    single-channel filters run 1.5-2.5x slower channels-last, so it opts out.
    """
    fmt = torch.channels_last if getattr(model, "channels_last", True) else torch.contiguous_format
    model.to(device, memory_format=fmt)


def crops_per_clip(cfg: RunConfig, ff: FeatureFile, idx, length: int) -> int:
    """Random crops of each training clip per epoch; ``auto``: one epoch ~ one pass over the training audio."""
    if cfg.crops_per_clip != "auto":
        return int(cfg.crops_per_clip)
    return max(1, int(round(np.median(ff.n_frames[idx]) / length)))


def train_epoch(mode: Mode, net, opt, loader, masks, device, bar) -> dict:
    """One pass over the epoch's batches; the loss, clips and seconds of this rank, or ``stopped``.

    On a GPU the loss is summed where it is computed and looked at every ``CHECK_EVERY`` steps (and
    at the end), so the host queues steps ahead instead of waiting for each one's loss; a loss that
    is not finite stops the run at the next look, before anything is saved. On the CPU, every step.
    """
    every = CHECK_EVERY.get(device.type, 1)
    t0, t_wait, seen, steps = time.time(), 0.0, 0, 0
    total = torch.zeros((), dtype=torch.float64, device=device)
    t_ready = time.time()
    for x, y in loader:
        t_wait += time.time() - t_ready
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = mode.loss(net, x, y, next(masks))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().double() * len(x)
        seen += len(x)
        steps += 1
        bar.update(1)
        if steps % every == 0 and (stop := _not_finite(total, seen, bar, t0)):
            return stop
        t_ready = time.time()
    if steps % every and (stop := _not_finite(total, seen, bar, t0)):
        return stop
    return {"loss": float(total), "seen": seen, "steps": steps, "seconds": time.time() - t0, "wait": t_wait}


#: Steps between looks at the loss, by device type (each look waits for the steps queued before it).
CHECK_EVERY = {"cuda": 32}


def _not_finite(total, seen: int, bar, t0: float) -> dict | None:
    """``{'stopped': why}`` when the loss summed so far (on this rank or another) is not finite; else
    ``None``, with the progress bar's loss and rate brought up to date."""
    value = float(total)
    finite = math.isfinite(value)
    if not dist.all_true(finite):  # all ranks stop together, or the others would wait for this one
        return {"stopped": f"loss is {value}" if not finite else "the loss of another rank is not finite"}
    bar.set_postfix(loss=f"{value / seen:.4f}", clips_s=f"{seen / (time.time() - t0):.0f}")
    return None


def write_results(cfg: RunConfig, mode: Mode, ff, test: dict, test_loss: float, labels, best_epoch: int,
                  history: list, seconds: float, start_valid: dict | None = None) -> None:
    """``metrics.json`` and the plots of a finished run (``start_valid``: the start's validation, epoch 0)."""
    out = cfg.out
    valid = start_valid if best_epoch == 0 else \
        {k.removeprefix("val_"): v for k, v in history[best_epoch - 1].items() if k.startswith("val_")}
    m = {"task": cfg.task, "model": cfg.model, "best_epoch": best_epoch, "epochs_run": len(history),
         "test_loss": test_loss, "valid": valid or {},
         "data_wait_mean": float(np.mean([h["data_wait"] for h in history])),
         "train_clips_per_s": float(np.mean([h["clips_per_s"] for h in history])), "seconds": seconds}
    mode.results(m, test, out, ff.tags, labels, f"{cfg.model}, {out.name}")
    m.update({f"test_{k}": v for k, v in test.items()})
    runfolder.write_json(out / "metrics.json", m)
    plot_curves(history, out / "curves.png", mode.curve_keys, title=f"{out.name}: {cfg.task} {cfg.model}",
                best_epoch=best_epoch)


def open_features(cfg: RunConfig):
    """The features file, the crop length in frames and the three splits; a file or split that cannot
    feed the run raises ``FeedError`` before anything is written."""
    ff = FeatureFile(cfg.features, cfg.inputs)
    split = {s: ff.indices(s) for s in ("train", "valid", "test")}
    for s, idx in split.items():
        if len(idx) == 0:
            raise FeedError(f"{cfg.features}: the {s} split is empty")
    if cfg.augmented and not ff.n_versions:
        raise FeedError(f"--augmented: {cfg.features} holds no augmented versions; extract with "
                        "`python pipeline/extract.py --augment N`")
    return ff, ff.params.frames(cfg.seconds), split


def feed_plan(cfg: RunConfig, ff, split: dict, device, augmented: int) -> tuple[str, int, str]:
    """Which feed serves the crops, its loader workers, and a note for the start line.

    On a GPU the features go resident in its memory when they fit in half of what is free (MTAT's
    float16 mel+MFCC+chroma, 9.4 GiB, fits an H200 14 times), so the steps never wait for the
    host; otherwise crops come through the memory map, read by loader workers into pinned memory.
    On the CPU the cores run the steps, so the memory map is read in this process.
    """
    clips = np.concatenate(list(split.values()))
    need = Resident.nbytes(ff, clips)
    feed = cfg.feed
    if feed == "auto":
        fits = device.type == "cuda" and need < 0.5 * torch.cuda.mem_get_info(device)[0]
        feed = "resident" if fits and not augmented else "memmap"
    if feed == "resident" and augmented:
        raise FeedError("--feed resident holds the original clips only; train on the augmented versions with "
                        "--feed memmap, or pass --no-augmented")
    workers = cfg.workers if cfg.workers is not None else \
        (min(8, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" and feed == "memmap" else 0)
    if feed == "resident":
        return feed, 0, f"features resident on {device} ({need / 2**30:.2f} GiB)"
    why = " (--feed resident would hold them on the GPU)" if device.type == "cuda" and cfg.feed == "auto" \
        and augmented else ""
    return feed, workers, f"memmap feed with {workers} loader workers{why}"


def datasets(ff, split: dict, length: int, mean, std, resident=None) -> dict:
    """Random crops of the training clips, the middle crop for validation, every crop for test;
    gathered from ``resident`` (:class:`train.feed.Resident`) when given, else read from the file."""
    modes = {"train": "random", "valid": "fixed", "test": "chunks"}
    if resident is not None:
        return {s: ResidentCrops(ff, split[s], length, mean, std, m, resident) for s, m in modes.items()}
    return {s: Crops(ff, split[s], length, mean, std, m) for s, m in modes.items()}


def write_config(cfg: RunConfig, ff, length: int, per_clip: int, model) -> None:
    """Make the run folder (rank 0) and write ``config.json`` from the run's configuration."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    # A finished run trained on (--resume with more --epochs) is unfinished until it is tested again.
    (cfg.out / "metrics.json").unlink(missing_ok=True)
    runfolder.write_json(cfg.out / "config.json", {
        **cfg.identity(), "features_file": str(cfg.features), "feature_params": ff.params.as_dict(),
        "frames": length, "crops_per_clip_used": per_clip, "tags": list(ff.tags),
        "n_params": count_parameters(model)})


def start_from(cfg: RunConfig, model, backbone: dict, crops, device) -> None:
    """A metric network's backbone from a tagging run's weights (``--init``); with ``--start backbone``
    the embedding begins as the backbone's own (``EmbeddingNet.start_at_backbone``), a projection
    narrower than the backbone fitted to the backbone's embeddings of ``crops``."""
    model.backbone.load_state_dict(backbone)
    if cfg.start != "backbone":
        return
    feats = None
    if model.proj.in_features > model.proj.out_features:
        model.eval()
        with torch.no_grad():
            feats = torch.cat([model.backbone.embed(x.to(device)) for x, _ in
                               DataLoader(crops, batch_size=256, collate_fn=Crops.collate)])
    model.start_at_backbone(feats)


def wrap(model, bf16: bool, device, compile: bool = False):
    """The training pass (:class:`train.modes.TrainForward`), in DistributedDataParallel under torchrun,
    compiled with ``compile`` (``--compile``: CUDA graphs on a GPU, where a small batch's step is bound by
    kernel launches; inductor's fused kernels on the CPU)."""
    net = TrainForward(model, bf16)
    if dist.launched():
        from torch.nn.parallel import DistributedDataParallel

        # An EmbeddingNet leaves its backbone's tag head unused, which DDP must be told to expect.
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=hasattr(model, "backbone"))
    if compile:
        net = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else None)
    return net


def score_start(cfg: RunConfig, mode: Mode, model, evaluate, valid_set, mean, std, log) -> float:
    """Epoch 0 of a stage started from a tagging run: the started network on validation, a candidate like
    every epoch, so that the stage never ends below its start by the measure that picks the checkpoint;
    ``best.pt`` holds it until an epoch beats it. Its validation score."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        *_, val_loss, val = evaluate(valid_set)
    score = mode.score(val, val_loss)
    valid = {"loss": val_loss, **{k: v for k, v in val.items() if k != "per_tag"}}
    runfolder.save_checkpoint({"model": model.state_dict(), "config": cfg.identity(), "mean": mean, "std": std,
                               "epoch": 0, "score": score, "valid": valid}, cfg.out / "best.pt")
    log("epoch   0  (the start)  " + "  ".join(f"{k} {v:.4f}" for k, v in valid.items()) + "  *")
    return score


def save_epoch(cfg: RunConfig, h: dict, score: float, best: float, model, opt, sched, history, mean, std,
               seconds: float) -> bool:
    """``best.pt`` when ``score`` beats ``best``, ``last.pt`` always; whether the epoch was the best so far."""
    config, epoch = cfg.identity(), h["epoch"]
    improved = score > best
    if improved:
        runfolder.save_checkpoint({"model": model.state_dict(), "config": config, "mean": mean, "std": std,
                                   "epoch": epoch, "score": score}, cfg.out / "best.pt")
    runfolder.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "epoch": epoch, "best": max(score, best), "history": history, "config": config,
                               "mean": mean, "std": std, "seconds": seconds}, cfg.out / "last.pt")
    return improved


def test_best(cfg: RunConfig, mode: Mode, ff, model, evaluate, test_set, history: list, t_run: float, log) -> None:
    """Load the best checkpoint into ``model``, ``evaluate`` it on ``test_set`` and save the test outputs
    and the run's results (its time counted from ``t_run``); say them."""
    out, idx = cfg.out, test_set.idx
    best = torch.load(out / "best.pt", map_location=next(model.parameters()).device, weights_only=False)
    model.load_state_dict(best["model"])
    best_epoch = best["epoch"]
    with warnings.catch_warnings(record=True) as caught:  # said as a line of the log, not as a warning's source
        warnings.simplefilter("always", UndefinedTagWarning)
        scores, emb, labels, test_loss, test = evaluate(test_set)
    for w in caught:
        if issubclass(w.category, UndefinedTagWarning):
            log(f"note: on the test split, {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    runfolder.save_outputs(out, scores, emb, labels, ff.clip_id[idx], ff.tags)
    write_results(cfg, mode, ff, test, test_loss, labels, best_epoch, history, time.time() - t_run,
                  best.get("valid"))
    shown = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
    log(f"\ntest ({len(idx)} clips, best epoch {best_epoch}): {shown}")
    log(f"run folder {out}: metrics.json, best.pt, "
        + ("predictions/embeddings/labels .npy, curves.png, tag_roc_auc.png" if scores is not None
           else "embeddings/labels .npy, curves.png"))
    metric = "" if mode.distance == "cosine" else f" --metric {mode.distance}"
    log(f"evaluate again: python eval/recall.py {out / 'embeddings.npy'}{metric}"
        + (f"   python eval/auc.py {out / 'predictions.npy'}" if scores is not None else ""))


def gpu_hint(cfg: RunConfig, device) -> str:
    """The start line's advice on a GPU: a small batch, run eagerly, is bound by kernel launches (hundreds
    per step whatever the batch), so the GPU idles between them; ``''`` where there is nothing to say."""
    if device.type != "cuda" or cfg.compile or cfg.batch >= 256:
        return ""
    return (f"; a batch of {cfg.batch} keeps a GPU busy only part of the time: --compile runs the steps as CUDA "
            "graphs, --batch 256 gives each launch more work (a different optimisation)")


def start_line(cfg: RunConfig, model, ff, length: int, split: dict, per_clip: int, device, bf16: bool,
               augmented: int) -> str:
    """The log's first line: what trains on what, where."""
    return (f"{cfg.task} {cfg.model}: {count_parameters(model):,} parameters, inputs {','.join(cfg.inputs)} "
            f"({ff.bins} bins x {length} frames), {len(split['train'])}/{len(split['valid'])}/{len(split['test'])} "
            f"train/valid/test clips, {per_clip} crop(s) per clip per epoch, {device}{' bf16' if bf16 else ''}"
            + (f", {dist.world()} ranks sharing each batch of {cfg.batch}" if dist.launched() else "")
            + (f", the original or one of {augmented} augmented versions per clip per epoch" if augmented else ""))


def agree_with_rank0(cfg: RunConfig) -> None:
    """Under torchrun each rank parsed its own command line, taking the network and inputs not given
    from ``--init``'s folder and the features file where it runs: refuse a rank that took others than
    rank 0 (the folder on rank 0's machine only, say) instead of training mismatched networks."""
    mine = (cfg.model, tuple(cfg.inputs))
    ref = dist.broadcast(mine)
    if tuple(ref) != mine:
        raise RunError(f"rank {dist.rank()} resolved --model {mine[0]} --inputs {','.join(mine[1])}, but rank 0 "
                       f"{ref[0]} on {','.join(ref[1])} (its --init folder or features file differs); give --model "
                       "and --inputs on the command line")


def train(cfg: RunConfig) -> int:
    # ---------------------------------------------------------------- set-up
    out, mode = cfg.out, make_mode(cfg)
    device = dist.init(cfg.device, cfg.dist_timeout)  # under torchrun: joins the job, this rank's device
    rank, world, main = dist.rank(), dist.world(), dist.is_main()
    if cfg.batch < 2 * world:
        raise RunError(f"--batch {cfg.batch} is the global batch, shared by {world} ranks: it must be at least "
                       f"{2 * world}, so that every rank's BatchNorm trains on 2 clips or more")
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = True  # fixed crop shapes: cuDNN picks each convolution's fastest kernel once
    config, ckpt_last, ckpt_best = cfg.identity(), out / "last.pt", out / "best.pt"

    # ---------------------------------------------------------------- data (inputs before outputs)
    ff, length, split = open_features(cfg)
    agree_with_rank0(cfg)
    # Rank 0 alone reads and writes the run folder, which need exist on its machine only.
    resume = dist.from_main(runfolder.check_new_or_resumable, out, config, cfg.resume,
                            cfg.epochs if cfg.epochs_given else None)
    init = None
    if cfg.init and not resume:
        init_cfg, init = dist.from_main(runfolder.load_best, cfg.init, "cpu", "tagging", cfg.model, cfg.inputs,
                                        what="--init")
        # the backbone learnt these bands, frames and scales: refuse a file made otherwise, before any write
        try:
            runfolder.check_params(cfg.init, init_cfg, ff.params, cfg.features, what="the --init run")
            error = None
        except RunError as exc:
            error = exc
        if not dist.all_true(error is None):  # every rank stops together, or the others would wait
            raise error or RunError("the features file of another rank was made otherwise than the --init run")
    if resume or init:  # a started backbone learnt on inputs scaled this way
        mean, std = (resume or init)["mean"], (resume or init)["std"]
    else:
        mean, std = dist.from_main(standardizer, ff, split["train"], seed=cfg.seed)
    augmented = ff.n_versions if cfg.augmented is not False else 0  # versions per clip drawn from
    feed, workers, feed_note = feed_plan(cfg, ff, split, device, augmented)
    resident = Resident(ff, np.concatenate(list(split.values())), device) if feed == "resident" else None
    sets = datasets(ff, split, length, mean, std, resident)
    labels_train = ff.labels[split["train"]]
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda" and feed == "memmap")
    per_clip = crops_per_clip(cfg, ff, split["train"], length)
    n_items = len(split["train"]) * per_clip
    if cfg.steps_per_epoch:  # draw only what the capped epoch uses
        n_items = min(n_items, cfg.steps_per_epoch * cfg.batch)
    mode.prepare(ff, split["train"], labels_train)

    # ---------------------------------------------------------------- model and optimiser
    try:
        model = mode.network(ff)
    except ValueError as exc:  # a network that cannot take these features (too few mel bands, ...)
        raise RunError(f"--model {cfg.model} on {cfg.features}: {exc}") from exc

    def seconds(frames: int, rnd) -> float:  # a crop length as --seconds, rounded to the hundredth by rnd
        return rnd(frames * ff.params.hop_length / ff.params.sr * 100) / 100

    if length < getattr(model, "min_frames", 1):  # else the first step fails, with the run folder made
        raise RunError(f"--seconds {cfg.seconds:g}: a crop of {length} frames is shorter than the {model.min_frames} "
                       f"--model {cfg.model} takes; give --seconds {seconds(model.min_frames, math.ceil):g} or more")
    if length > getattr(model, "max_frames", length):
        raise RunError(f"--seconds {cfg.seconds:g}: a crop of {length} frames is longer than the {model.max_frames} "
                       f"--model {cfg.model} takes; give --seconds {seconds(model.max_frames, math.floor):g} or less")
    init_tag_prior(model, labels_train)  # the tag layer starts from the tags' base rates
    place(model, device)
    opt, sched = optimiser(cfg, model)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported(device))
    start_epoch, best, history = 1, -math.inf, []
    if init:
        start_from(cfg, model, init["model"], Crops(ff, split["train"], length, mean, std, "fixed"), device)
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        start_epoch, best, history = resume["epoch"] + 1, resume["best"], resume["history"]
    net = wrap(model, bf16, device, cfg.compile)

    # ---------------------------------------------------------------- the run folder, made once the run can start
    log = RunLog(main)
    if main:
        write_config(cfg, ff, length, per_clip, model)
    log.open(out / "train.log")
    if resume:
        log(f"resumed from {ckpt_last} after epoch {resume['epoch']}")
    log(start_line(cfg, model, ff, length, split, per_clip, device, bf16, augmented) + f", {feed_note}"
        + gpu_hint(cfg, device))
    # On a GPU the evaluation runs in bf16 too, in large batches; on the CPU it stays fp32, as before.
    eval_batch, eval_bf16 = (max(1024, 2 * cfg.batch), bf16) if device.type == "cuda" else (2 * cfg.batch, False)

    def evaluate(dataset):
        return mode.evaluate(model, dataset, device, ff.tags, eval_batch, eval_bf16, **loader_kw)

    # ---------------------------------------------------------------- training
    # The run's time is carried in last.pt, so a resumed run (or one only tested again) keeps what it had.
    t_run = time.time() - (resume.get("seconds", 0.0) if resume else 0.0)
    if init and not resume and main:
        best = score_start(cfg, mode, model, evaluate, sets["valid"], mean, std, log)
    last_epoch = cfg.epochs
    if resume and (lr := opt.param_groups[0]["lr"]) < cfg.stop_lr:  # it stopped, then was killed in its test
        log(f"learning rate {lr:.1e} is below --stop-lr {cfg.stop_lr:.1e}: no more epochs; testing the best")
        last_epoch = start_epoch - 1
    for epoch in range(start_epoch, last_epoch + 1):
        model.train()
        if frozen(cfg, model):
            model.backbone.eval()  # its batch-norm statistics and dropout stay as the tagging run left them
        torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * rank)  # this rank's random crops and dropout
        batches = mode.plan(len(split["train"]), per_clip, n_items, epoch, world)
        if augmented:  # this epoch's version of each clip (0: the original), the same on every rank
            sets["train"].set_versions(np.random.default_rng([cfg.seed, epoch, 1]).integers(0, augmented + 1,
                                                                                        len(split["train"])))
        loader = DataLoader(sets["train"], batch_sampler=[mode.share(b, rank, world) for b in batches],
                            collate_fn=Crops.collate, **loader_kw)
        with tqdm(total=len(batches), desc=f"epoch {epoch}", unit="batch", disable=cfg.quiet or not main,
                  dynamic_ncols=True, leave=False) as bar:
            ep = train_epoch(mode, net, opt, loader, mode.masks(batches, world), device, bar)
        if "stopped" in ep:
            log(f"error: {ep['stopped']} at epoch {epoch}; stopping (the last good checkpoint is {ckpt_last})")
            log.close()
            return 1
        total_loss, seen = dist.sum_all(ep["loss"], ep["seen"])  # over all ranks' shares

        # Rank 0 validates alone, with the unwrapped network: a single process's numbers.
        if main:
            with warnings.catch_warnings():  # tags absent from a small validation split: said once, at test
                warnings.simplefilter("ignore")
                *_, val_loss, val = evaluate(sets["valid"])
        val_loss = dist.broadcast(val_loss if main else None)  # the others wait here for it
        sched.step(val_loss)  # the same step on every rank: the same lr, the same stop
        lr = opt.param_groups[0]["lr"]
        if main:
            h = {"epoch": epoch, "steps": ep["steps"], "train_loss": total_loss / seen, "val_loss": val_loss, "lr": lr,
                 "clips_per_s": seen / ep["seconds"], "data_wait": ep["wait"] / ep["seconds"],
                 **{f"val_{k}": v for k, v in val.items() if k != "per_tag"}}
            history.append(h)
            score = mode.score(val, val_loss)
            improved = save_epoch(cfg, h, score, best, model, opt, sched, history, mean, std, time.time() - t_run)
            best = max(score, best)
            shown = "  ".join(f"{k.removeprefix('val_')} {v:.4f}" for k, v in h.items() if k.startswith("val_"))
            log(f"epoch {epoch:3d}  train_loss {h['train_loss']:.4f}  {shown}  lr {lr:.1e}  "
                f"{h['clips_per_s']:.0f} clips/s  data wait {100 * h['data_wait']:.1f}%" + ("  *" if improved else ""))
        if lr < cfg.stop_lr:
            log(f"learning rate {lr:.1e} fell below --stop-lr {cfg.stop_lr:.1e}: stopping")
            break
    if not main:  # rank 0 alone tests and writes the results
        log.close()
        return 0
    if not ckpt_best.exists():
        raise RunError(f"{out}: no epoch finished, so there is no checkpoint to test")

    # ---------------------------------------------------------------- test with the best checkpoint
    test_best(cfg, mode, ff, model, evaluate, sets["test"], history, t_run, log)
    log.close()
    return 0
