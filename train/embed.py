"""Clip embeddings of any run, ours or pretrained, on any features file, for eval/recall.py.

    python train/embed.py --run RUN [--features FILE] [--split test] [--out DIR] [--device cpu]

Each clip of the split is cut into the run's non-overlapping crops (as on the test split) and
the model's embedding is averaged over them: the penultimate layer of a tagging network
(musicnn's 200-unit 'penultimate' for the pretrained runs of ``train/pretrained.py``), the
output of a metric-learning network. DIR (default ``RUN/embed-<features>-<split>``) gets
``embeddings.npy`` with ``labels.npy``, ``clip_ids.npy`` and ``tags.json`` beside it, so
``python eval/recall.py DIR/embeddings.npy`` scores them; a tagging run whose tags are the
file's also writes ``predictions.npy`` for ``eval/auc.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.cli import HelpFormatter
from data.files import folder_error
from features.device import device_error, pick_device
from train import runfolder
from train.runfolder import RunError

SPLITS = ("train", "valid", "test", "all")


def default_out(run: Path, features: Path, split: str) -> Path:
    """The output folder when none is given: ``RUN/embed-<features>-<split>``."""
    return Path(run) / f"embed-{Path(features).stem}-{split}"


def embed(run: Path, features: Path, split: str = "test", out: Path | None = None, device="cpu",
          batch: int = 64) -> Path:
    """Write the clip embeddings of ``split`` of ``features`` under ``run``'s best model.

    Parameters
    ----------
    run : Path
        A finished run folder (tagging or metric) or a pretrained one.
    features : Path
        A features file from ``pipeline/extract.py`` with the run's inputs and settings.
    split : {'train', 'valid', 'test', 'all'}
    out : Path, optional
        Output folder; default ``run / f"embed-{features.stem}-{split}"``.
    device : str
    batch : int
        Crops per forward pass.

    Returns
    -------
    Path
        The output folder.

    Raises
    ------
    RunError, train.feed.FeedError
        For an unusable run or features file, or an empty split.
    """
    import numpy as np
    import torch

    from train.evaluate import predict
    from train.feed import Crops, FeatureFile, FeedError

    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise RunError(f"--run {run}: no config.json there; train a run with train/run.py or make one "
                       "with train/pretrained.py")
    task = json.loads(cfg_path.read_text()).get("task", "tagging")
    cfg, ckpt = runfolder.load_best(run, device, task)
    ff = FeatureFile(features, tuple(cfg["inputs"]))
    runfolder.check_params(run, cfg, ff.params, features)
    idx = np.arange(len(ff.labels)) if split == "all" else ff.indices(split)
    if len(idx) == 0:
        raise FeedError(f"{features}: the {split} split is empty")
    model = runfolder.best_model(run, cfg, ckpt, ff.bins, ff.params.n_mels if "mel" in cfg["inputs"] else 0,
                                 device, on=f" on {features}")
    crops = Crops(ff, idx, int(cfg["frames"]), ckpt["mean"], ckpt["std"], "chunks")
    with torch.inference_mode():
        scores, emb, labels = predict(model, crops, task, batch, torch.device(device))
    if scores is not None and list(cfg["tags"]) != list(ff.tags):
        scores = None  # another vocabulary (the MSD's): its scores cannot be scored against these labels
    out = out or default_out(run, features, split)
    out.mkdir(parents=True, exist_ok=True)
    if scores is None:
        (out / "predictions.npy").unlink(missing_ok=True)  # an earlier call's, of another run or file
    runfolder.save_outputs(out, scores, emb, labels, ff.clip_id[idx], ff.tags)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python train/embed.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (train/run.py or train/pretrained.py)")
    p.add_argument("--features", type=Path, default=None,
                   help="features file; default the run's own, else cache/features.h5")
    p.add_argument("--split", choices=SPLITS, default="test", help="clips to embed")
    p.add_argument("--out", type=Path, default=None, help="output folder; default RUN/embed-<features>-<split>")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the network runs; auto: cuda when there is one")
    p.add_argument("--batch", type=int, default=64, help="crops per forward pass")
    a = p.parse_args(argv)
    if a.batch < 1:
        p.error(f"--batch must be at least 1, got {a.batch}")
    if error := device_error(a.device):
        p.error(error)
    cfg_path = a.run / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}  # embed() refuses a folder without one
    features = a.features or Path(cfg.get("features_file") or "cache/features.h5")
    out = a.out or default_out(a.run, features, a.split)
    if error := folder_error(out, "--out" if a.out else "the output folder (--out)"):  # before the work
        p.error(error)
    a.device = str(pick_device(a.device))
    from train.feed import FeedError

    try:
        out = embed(a.run, features, a.split, out, a.device, a.batch)
    except (RunError, FeedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.run} on {features} ({a.split}): {out}/embeddings.npy, labels.npy, clip_ids.npy, tags.json"
          + (", predictions.npy" if (out / "predictions.npy").exists() else ""))
    metric = runfolder.recall_distance(cfg)
    print(f"score them:  python eval/recall.py {out / 'embeddings.npy'}"
          + ("" if metric == "cosine" else f" --metric {metric}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
