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
import importlib.util
import sys
from pathlib import Path

import numpy as np

from data.cli import HelpFormatter
from features.params import FeatureParams
from train import runfolder
from train.runfolder import RunError

NAMES = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
PACKAGE = "musicnn==0.1.0"
#: Frames of musicnn's 3-s patches: librosa.time_to_frames(3, sr=16000, hop_length=256, n_fft=512) + 1.
FRAMES = 187


def package_dir() -> Path:
    """The installed ``musicnn`` package's folder (found, not imported: its modules import TensorFlow).

    Raises
    ------
    RunError
        When the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise RunError(f"the musicnn package is not installed; install its weights with "
                       f"`pip install --no-deps {PACKAGE}` (29 MB; its TensorFlow is not needed)")
    return Path(list(spec.submodule_search_locations)[0])


def _labels(pkg: Path, name: str) -> list[str]:
    # configuration.py is plain constants (no TensorFlow); run it rather than import the package.
    constants: dict = {}
    exec(compile((pkg / "configuration.py").read_text(), str(pkg / "configuration.py"), "exec"), constants)
    return list(constants["MTT_LABELS" if name.startswith("MTT") else "MSD_LABELS"])


def convert(name: str, out: Path) -> Path:
    """Write the run folder of one of musicnn's networks.

    Parameters
    ----------
    name : {'MTT_musicnn', 'MTT_vgg', 'MSD_musicnn', 'MSD_vgg'}
    out : Path
        The run folder to write (created; its files are replaced atomically).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    RunError
        When the package is missing or its checkpoint cannot be read or does not fit.
    """
    from train.models import build_model, count_parameters
    from train.musicnn_arch import VARIANTS, load_musicnn_weights
    from train.tfcheckpoint import CheckpointError, read_checkpoint

    pkg = package_dir()
    ckpt_dir = pkg / name
    tags = _labels(pkg, name)
    model_name, kwargs = VARIANTS[name]
    # 16 kHz, n_fft 512, hop 256, 96 Slaney mel bands: musicnn's own; and no dB floor, as its
    # log10(1 + 10000 S) has none (with the features' 80-dB floor clip scores move by < 1e-3).
    params = FeatureParams(top_db=None)
    model = build_model(model_name, params.n_mels, n_mels=params.n_mels, n_out=len(tags), **kwargs)
    try:
        load_musicnn_weights(model, read_checkpoint(ckpt_dir))
    except (CheckpointError, ValueError, KeyError) as exc:
        raise RunError(f"{ckpt_dir}: cannot load {name} ({exc})") from exc
    config = {"task": "tagging", "model": model_name, "inputs": ["mel"], "feature_params": params.as_dict(),
              "frames": FRAMES, "tags": tags, "n_params": count_parameters(model),
              "pretrained": {"name": name, "package": PACKAGE, "checkpoint": str(ckpt_dir), "licence": "ISC",
                             "input": "log10(1 + 10000 * mel power), from the dB log-mel inside the network"}}
    out.mkdir(parents=True, exist_ok=True)
    # mean 0, std 1: the network takes the dB log-mel as it is and scales it itself (train.musicnn_arch).
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
    a = p.parse_args(argv)
    out = a.out or Path("cache/pretrained") / a.name
    try:
        convert(a.name, out)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.name}: musicnn's weights ({PACKAGE}) -> {out} (config.json, best.pt, tags.json)")
    print(f"tag a song:  python train/tag.py SONG.mp3 --run {out} [--taggram taggram.png]")
    print(f"embeddings:  python train/embed.py --run {out} --features cache/features.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
