"""Make a run folder from musicnn's published networks, trained on the real MagnaTagATune or the MSD.

    python train/pretrained.py NAME [--out cache/pretrained/NAME]

NAME is one of MTT_musicnn, MTT_vgg, MSD_musicnn, MSD_vgg. The weights come from the installed
``musicnn`` package (Pons & Serra 2019, ISC licence; ``pip install --no-deps musicnn==0.1.0``,
29 MB, which ``make setup`` does); its TensorFlow checkpoints are read without TensorFlow. The
folder holds what a tagging run of ours holds for loading (config.json, best.pt, tags.json), so
``train/tag.py --run``, ``train/embed.py --run`` and ``train/run.py --init`` take it like any run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from data.cli import HelpFormatter
from data.files import folder_error
from features import taggram
from features.params import FeatureParams
from train import runfolder
from train.runfolder import RunError

NAMES = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
PACKAGE = taggram.PACKAGE
FRAMES = taggram.WINDOW


def package_dir() -> Path:
    """The installed ``musicnn`` package's folder (:func:`features.taggram.package_dir`).

    Raises
    ------
    RunError
        When the package is not installed, with the command that installs it.
    """
    try:
        return taggram.package_dir()
    except taggram.PretrainedError as exc:
        raise RunError(str(exc)) from exc


def held(out: Path) -> str | None:
    """What the finished run folder ``out`` holds, in words (``None``: nothing finished there)."""
    try:
        cfg = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not (out / "best.pt").is_file():
        return None
    name = cfg.get("pretrained", {}).get("name") if isinstance(cfg.get("pretrained"), dict) else None
    return name or f"a {cfg.get('task')} run of {cfg.get('model')!r}"


def kept(name: str, out: Path, force: bool = False) -> bool:
    """Whether :func:`convert` leaves ``out`` as it is: it already holds ``name`` and ``force`` is not given."""
    return not force and held(out) == name


def convert(name: str, out: Path, force: bool = False) -> Path:
    """Write the run folder of one of musicnn's networks.

    A folder that already holds this network is kept as it is (so that a library indexed with it
    still matches it); one that holds another network or run is refused, or with ``force``
    replaced whole.

    Parameters
    ----------
    name : {'MTT_musicnn', 'MTT_vgg', 'MSD_musicnn', 'MSD_vgg'}
    out : Path
        The run folder to write (created; its files are replaced atomically).
    force : bool
        Replace ``out`` whatever it holds.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    RunError
        When the package is missing or its checkpoint cannot be read or does not fit, or ``out``
        holds another network.
    """
    if kept(name, out, force):
        return out
    there = held(out)
    if there is not None and not force:
        raise RunError(f"{out} already holds {there}; pass --force to replace it, or give another --out")
    package_dir()  # before anything is removed: without the package nothing can take its place
    if force and there is not None:
        shutil.rmtree(out)  # a run folder, whole: embeddings made with the old network would pass for this one's
    from features.musicnn import VARIANTS
    from train.models import count_parameters

    ckpt_dir = package_dir() / name
    tags = taggram.labels(name)
    model_name, _ = VARIANTS[name]
    # 16 kHz, n_fft 512, hop 256, 96 Slaney mel bands: musicnn's own; and no dB floor, as its
    # log10(1 + 10000 S) has none (with the features' 80-dB floor clip scores move by < 1e-3).
    params = FeatureParams(top_db=None)
    try:
        model = taggram.load_network(name, params.n_mels)
    except taggram.PretrainedError as exc:
        raise RunError(str(exc)) from exc
    config = {"task": "tagging", "model": model_name, "inputs": ["mel"], "feature_params": params.as_dict(),
              "frames": FRAMES, "tags": tags, "n_params": count_parameters(model),
              "pretrained": {"name": name, "package": PACKAGE, "checkpoint": str(ckpt_dir), "licence": "ISC",
                             "input": "log10(1 + 10000 * mel power), from the dB log-mel inside the network"}}
    out.mkdir(parents=True, exist_ok=True)
    # mean 0, std 1: the network takes the dB log-mel as it is and scales it itself (features.musicnn).
    runfolder.save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 0, "score": None,
                               "mean": np.zeros(params.n_mels), "std": np.ones(params.n_mels)}, out / "best.pt")
    runfolder.write_json(out / "tags.json", tags)
    runfolder.write_json(out / "config.json", config)  # last: its presence marks a finished folder
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python train/pretrained.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("name", choices=NAMES, metavar="NAME", help=f"one of {', '.join(NAMES)}")
    p.add_argument("--out", type=Path, default=None, help="run folder; default cache/pretrained/NAME")
    p.add_argument("--force", action="store_true", help="replace --out whatever it holds (by default a folder "
                   "that holds NAME is kept as it is, and one that holds another network refused)")
    a = p.parse_args(argv)
    out = a.out or Path("cache/pretrained") / a.name
    made = not kept(a.name, out, a.force)
    if made and (error := folder_error(out, "--out")):  # a kept folder may be read-only
        p.error(error)
    try:
        convert(a.name, out, a.force)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.name}: musicnn's weights ({PACKAGE}) -> {out} (config.json, best.pt, tags.json)" if made else
          f"{a.name}: already in {out}, kept as it is (--force makes it again)")
    print(f"tag a song:  python train/tag.py SONG.mp3 --run {out} [--taggram taggram.png]")
    print(f"embeddings:  python train/embed.py --run {out} --features cache/features.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
