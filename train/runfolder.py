"""The run folder: what one training run leaves behind, and how the commands read it back.

Layout of ``cache/runs/<task>-<model>/`` (``N`` test clips)::

    config.json      the run's settings (train/run.py's arguments), feature_params, frames (crop
                     length), crops_per_clip_used, tags, n_params
    train.log        one line per epoch, then the test line
    last.pt          after every epoch: model, opt, sched, epoch, best, history, config, mean, std
    best.pt          the best validation epoch: model, config, mean, std, epoch, score
    metrics.json     test metrics (macro, per tag), the best epoch's validation metrics, data wait,
                     clips/s, seconds
    predictions.npy  (N, 50) float32 clip scores, tagging runs only
    embeddings.npy   (N, D) float32 clip embeddings
    labels.npy       (N, 50) uint8       clip_ids.npy  (N,) int64       tags.json  the 50 tag names
    curves.png       training curves     tag_roc_auc.png   per-tag test ROC-AUC (tagging)

Every file is written atomically. ``mean`` and ``std`` are the per-bin standardisation of the
inputs, learnt on the training split; a checkpoint is useless without them, so they travel with it.
``train/run.py`` writes a run folder, ``train/tag.py`` and ``--init`` load its best checkpoint,
``train/report.py`` reads ``metrics.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.files import atomic_path, write_atomically
from features.params import FeatureParams


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message names it and says what to do."""


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` through a temporary file: a kill never leaves a half-written checkpoint.

    Written through an open file, so that the same ``obj`` gives the same bytes (given a path,
    ``torch.save`` names the archive after the temporary file, different every time).
    """
    import torch  # here, so that reading metrics (train/report.py) starts without torch

    with atomic_path(path, sweep=True) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def write_json(path: Path, obj) -> None:
    write_atomically(path, json.dumps(obj, indent=2, default=float))


def _unused(key: str, cfg: dict) -> bool:
    """Whether the run ``cfg`` describes does without setting ``key`` (a metric option of a tagging
    run, a triplet option of a contrastive one: recorded, but nothing it trained depended on it)."""
    from train.config import CONTRASTIVE_ONLY, METRIC_ONLY, TRIPLET_ONLY

    if cfg.get("task") == "tagging":
        return key in METRIC_ONLY
    loss = cfg.get("loss", "triplet")  # a run older than --loss trained triplets
    return key in (TRIPLET_ONLY if loss == "contrastive" else CONTRASTIVE_ONLY)


def _same_file(a: str | None, b: str | None) -> bool:
    """Whether two recorded paths name one file or folder (by name where either is gone)."""
    if not a or not b:
        return a == b
    try:
        return Path(a).resolve().samefile(Path(b).resolve())
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _differs(key: str, old: dict, new: dict) -> bool:
    """Whether setting ``key`` of a checkpoint's config ``old`` differs from ``new``'s, in a way that matters."""
    from train.config import LEGACY

    if _unused(key, old) and _unused(key, new):
        return False
    if key == "sampler" and {old.get(key), new[key]} == {"tag", "overlap"} and old.get("mining") != "none":
        return new.get("mining") == "none"  # in mined batches the two are one sampler
    if key not in old and key in LEGACY:  # a setting newer than the run: it had the legacy value
        return new.get("task") != "tagging" and new[key] != LEGACY[key]  # tagging never used these
    if key in ("features", "init"):  # one file, however it is spelt
        return not _same_file(old.get(key), new[key])
    return old.get(key) != new[key]


def check_new_or_resumable(out: Path, config: dict, resume: bool, epochs: int | None = None) -> dict | None:
    """The last checkpoint to resume from (``resume``), or ``None`` for a new run in an unused folder.

    A finished run (one with ``metrics.json``) is resumed only to train it on: ``epochs`` (the
    user's explicit ``--epochs``, else ``None``) must exceed the epochs it ran.

    Raises
    ------
    RunError
        When ``--resume`` finds nothing, finds a run made with other settings or a finished run
        without more epochs asked, or a new run would overwrite a run already in ``out``.
    """
    import torch

    last = out / "last.pt"
    if not resume:
        if last.exists():
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if not last.exists():
        raise RunError(f"--resume: {last} not found; start the run without --resume")
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    diff = [k for k in config if _differs(k, ckpt["config"], config)]
    if diff:
        why = "" if "loss" not in diff else \
            (" (--mining, --margin or --negatives now ask for the triplet loss; a contrastive run, which never "
             "used them, resumes without them)")
        raise RunError(f"--resume: {last} was made with other settings ({', '.join(diff)}); "
                       f"use the same arguments, or another --out{why}")
    if (out / "metrics.json").is_file() and (epochs is None or epochs <= ckpt["epoch"]):
        raise RunError(f"--resume: {out} is a finished run ({ckpt['epoch']} epochs, tested); it is left as it is. "
                       f"To train it on, pass --epochs with more than {ckpt['epoch']} "
                       f"(e.g. --resume --epochs {ckpt['epoch'] + 10}); every output is then rewritten")
    return ckpt


def load_best(run: Path, device="cpu", task: str = "tagging", model: str | None = None,
              inputs=None, what: str = "--run") -> tuple[dict, dict]:
    """``config.json`` and the best checkpoint of a finished run, checked to be of ``task``.

    Parameters
    ----------
    run : path
        The run folder.
    device : str or torch.device
        Where the checkpoint's tensors are loaded.
    task : {'tagging', 'metric'}
        The task the caller needs.
    model, inputs : optional
        The network and stored features the caller needs; checked when given.
    what : str
        How the caller names the folder in messages (``--run``, ``--init``).

    Raises
    ------
    RunError
        When the folder is not a finished run, mixes two runs, or is of another task, model or inputs.
    """
    import torch

    run = Path(run)
    cfg_path, ckpt_path = run / "config.json", run / "best.pt"
    missing = [p.name for p in (ckpt_path, cfg_path) if not p.is_file()]
    if missing:
        raise RunError(f"{what} {run}: not a finished run folder ({', '.join(f'no {m} there' for m in missing)}); "
                       f"train a {task} run first with `python train/run.py`")
    cfg = json.loads(cfg_path.read_text())
    if not cfg.get("pretrained") and not (run / "metrics.json").is_file():  # best.pt of an epoch, not of the run
        raise RunError(f"{what} {run}: an unfinished run (no metrics.json: it stopped before its test); finish it "
                       "with the command that started it plus --resume, or pick a finished run")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
    if ckpt.get("config", {}).get("model") != cfg.get("model"):
        raise RunError(f"{ckpt_path} holds a {ckpt.get('config', {}).get('model')!r} model but {cfg_path} "
                       f"says {cfg.get('model')!r}; the folder mixes two runs")
    wrong = cfg.get("task") != task or (model is not None and cfg.get("model") != model) or \
        (inputs is not None and list(cfg.get("inputs", [])) != list(inputs))
    if wrong:
        need = f"a {task} run" + (f" of {model!r}" if model else "") + (f" on {','.join(inputs)}" if inputs else "")
        raise RunError(f"{what} {run}: a {cfg.get('task')!r} run of {cfg.get('model')!r} on "
                       f"{','.join(cfg.get('inputs', []))}, but this needs {need}; pick a matching run")
    return cfg, ckpt


def best_model(run: Path, cfg: dict, ckpt: dict, n_bins: int, n_mels: int, device="cpu", on: str = ""):
    """The network of a run (tagging or metric), built from its config and filled with its best weights.

    Parameters
    ----------
    run : path
        The run folder (for messages).
    cfg, ckpt : dict
        From :func:`load_best`.
    n_bins, n_mels : int
        Feature rows of the input and mel rows among them (0 without mel).
    device : str or torch.device
    on : str
        What the network is used on, for messages (e.g. ``" on FILE"``).

    Raises
    ------
    RunError
        When the checkpoint does not fit the network its config describes.
    """
    from train.models import build_embedding_model, build_model

    if cfg.get("task", "tagging") == "tagging":
        model = build_model(cfg["model"], n_bins, n_mels=n_mels, n_out=len(cfg["tags"]))
    else:
        has_head = any(k.startswith("tag_head.") for k in ckpt["model"])
        model = build_embedding_model(cfg["model"], n_bins, dim=cfg["dim"], n_mels=n_mels,
                                      n_tags=len(cfg["tags"]) if has_head else 0)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RunError(f"{Path(run) / 'best.pt'} does not fit a {cfg['model']!r} model{on} "
                       f"({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval()


def save_outputs(out: Path, scores, emb, labels, clip_ids, tags) -> None:
    """The test split's per-clip outputs: predictions (tagging), embeddings, labels, clip ids, tags."""
    for name, arr in (("predictions", None if scores is None else scores.astype(np.float32)),
                      ("embeddings", emb.astype(np.float32)), ("labels", labels.astype(np.uint8)),
                      ("clip_ids", np.asarray(clip_ids))):
        if arr is not None:
            with atomic_path(out / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
    write_atomically(out / "tags.json", json.dumps(list(tags)))


def recall_distance(cfg: dict) -> str:
    """The distance a run's Recall@K was scored with (``eval/recall.py --metric``): a metric run's own
    ``distance``; cosine for a tagging or pretrained run, whose embeddings were not trained for one."""
    return cfg.get("distance", "cosine") if cfg.get("task") == "metric" else "cosine"


def finished_runs(root: Path) -> list[tuple[Path, dict]]:
    """``(folder, metrics)`` of every finished run folder under ``root`` (those with ``metrics.json``), or of
    ``root`` itself when it is one."""
    found = [Path(root) / "metrics.json"] if (Path(root) / "metrics.json").is_file() else \
        sorted(Path(root).glob("*/metrics.json"))
    return [(p.parent, json.loads(p.read_text())) for p in found]


def check_params(run: Path, cfg: dict, file_params, features: Path, what: str = "the run") -> None:
    """Refuse a features file whose settings differ from those the run's model was trained on.

    The STFT back-end is free (the two agree to float rounding). A pretrained musicnn network
    rescales the dB log-mel itself, so it also takes another ``top_db`` floor (its clip scores
    move by less than 1e-3 on the real fixtures, bench/RESULTS.md).

    Raises
    ------
    RunError
        Naming the settings that differ and the extraction command that matches the run.
    """
    want = FeatureParams.from_dict(cfg["feature_params"]).as_dict()
    have = file_params.as_dict()
    free = {"stft"} | ({"top_db"} if cfg.get("pretrained") else set())
    used = {"mel": ("n_mels", "f_min", "f_max"), "mfcc": ("n_mfcc",), "chroma": ("n_chroma",)}  # musicnn: its own
    keys = {"sr", "n_fft", "hop_length", "n_mels", "top_db"} | {k for f in cfg["inputs"] for k in used.get(f, ())}
    diff = sorted(k for k in keys - free if want[k] != have[k])
    if diff:
        args = " ".join(f"--{k.replace('_', '-')} {want[k]}" for k in diff)
        raise RunError(f"{features}: made with {', '.join(f'{k}={have[k]}' for k in diff)}, but {what} {run} "
                       f"was trained on {', '.join(f'{k}={want[k]}' for k in diff)}; extract again with "
                       f"`python pipeline/extract.py {args} --out OTHER.h5`")
