"""A pretrained network's view of the audio as a stored feature: musicnn's taggram, frame by frame.

The course's menu asks for "a model using both mel-spectrograms and features extracted using the
pre-trained models". Extraction stores, with ``--features ...,musicnn``, the taggram of musicnn's
network trained on the real MagnaTagATune (Pons & Serra 2019; the ``MTT_musicnn`` weights of the
``musicnn`` package): its 50 tag probabilities for each 3-s window (187 frames) of the clip, held
over the window's frames so that the feature has the frame rate of the others and a crop of any
length reads the windows it overlaps. The windows tile the clip from its start; a tail shorter
than a window gets a last window ending at the clip's end (as ``train/tag.py --taggram`` draws
it), and a clip shorter than one window is one window of its own length.

The network reads the clip's dB log-mel (:func:`features.musicnn.db_to_logc` turns it into the
compression it was trained on), so the feature costs one musicnn forward pass per window on top
of the mel; the weights come from the installed package (``pip install --no-deps musicnn==0.1.0``,
which ``make setup`` does), read without TensorFlow. torch loads only when a network does, so
that commands can name the package's constants and answer ``--help`` at once.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PACKAGE", "WINDOW", "N_TAGS", "PretrainedError", "package_dir", "labels", "load_network",
           "window_starts", "taggram_frames"]

PACKAGE = "musicnn==0.1.0"
#: Frames of musicnn's 3-s patches: librosa.time_to_frames(3, sr=16000, hop_length=256, n_fft=512) + 1.
WINDOW = 187
#: Rows of the stored feature: the MTT network's 50 tags.
N_TAGS = 50


class PretrainedError(RuntimeError):
    """The musicnn package is missing, or its checkpoint cannot be read."""


def package_dir() -> Path:
    """The installed ``musicnn`` package's folder (found, not imported: its modules import TensorFlow).

    Raises
    ------
    PretrainedError
        When the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"the musicnn package is not installed; install its weights with "
                              f"`pip install --no-deps {PACKAGE}` (29 MB; its TensorFlow is not needed)")
    return Path(list(spec.submodule_search_locations)[0])


def labels(name: str) -> list[str]:
    """The tag names of one of musicnn's networks (``MTT_*``: MagnaTagATune's 50, ``MSD_*``: Last.fm's)."""
    pkg = package_dir()
    # configuration.py is plain constants (no TensorFlow); run it rather than import the package.
    constants: dict = {}
    exec(compile((pkg / "configuration.py").read_text(), str(pkg / "configuration.py"), "exec"), constants)
    return list(constants["MTT_LABELS" if name.startswith("MTT") else "MSD_LABELS"])


def load_network(name: str = "MTT_musicnn", n_mels: int = 96) -> torch.nn.Module:
    """One of musicnn's published networks with its weights, in eval mode.

    Parameters
    ----------
    name : {'MTT_musicnn', 'MTT_vgg', 'MSD_musicnn', 'MSD_vgg'}
    n_mels : int
        Mel bands of the input (musicnn's: 96).

    Returns
    -------
    torch.nn.Module
        :class:`features.musicnn.Musicnn` or :class:`~features.musicnn.MusicnnVGG`; it reads the
        dB log-mel ``(B, n_mels, T)`` as it is (mean 0, std 1).

    Raises
    ------
    PretrainedError
        When the package is missing or its checkpoint cannot be read or does not fit.
    """
    from features.musicnn import VARIANTS, Musicnn, MusicnnVGG, load_musicnn_weights
    from features.tfcheckpoint import CheckpointError, read_checkpoint

    if name not in VARIANTS:
        raise PretrainedError(f"unknown network {name!r}; choose one of {', '.join(VARIANTS)}")
    ckpt_dir = package_dir() / name
    arch, kwargs = VARIANTS[name]
    cls = Musicnn if arch == "musicnn" else MusicnnVGG
    model = cls(n_mels, n_mels=n_mels, n_out=len(labels(name)), **kwargs)
    try:
        load_musicnn_weights(model, read_checkpoint(ckpt_dir))
    except (CheckpointError, ValueError, KeyError) as exc:
        raise PretrainedError(f"{ckpt_dir}: cannot load {name} ({exc})") from exc
    return model.eval()


def window_starts(n_frames: int, window: int = WINDOW) -> list[int]:
    """First frames of the windows that cover ``n_frames`` frames (see the module docstring).

    Examples
    --------
    >>> window_starts(400), window_starts(374), window_starts(100)
    ([0, 187, 213], [0, 187], [0])
    """
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, window))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def taggram_frames(network: torch.nn.Module, mel_db: torch.Tensor, n_frames, window: int = WINDOW,
                   batch: int = 64) -> torch.Tensor:
    """The network's tag probabilities of each frame's window, for a batch of clips.

    Parameters
    ----------
    network : torch.nn.Module
        From :func:`load_network`, on ``mel_db``'s device.
    mel_db : torch.Tensor [shape=(B, n_mels, T)]
        dB log-mel, zero past each clip's valid frames.
    n_frames : sequence of int or torch.Tensor [shape=(B,)]
        Valid frames of each clip.
    window : int
        Frames per window.
    batch : int
        Windows per forward pass.

    Returns
    -------
    torch.Tensor [shape=(B, T, n_tags)]
        float32; frame ``t`` of a clip holds the probabilities of the window that covers it (the
        tail window for frames past the last whole one), 0 past the clip's valid frames. A clip's
        rows do not depend on the other clips of the batch.
    """
    import torch

    with torch.no_grad():
        return _taggram_frames(network, mel_db, [int(n) for n in n_frames], window, batch)


def _taggram_frames(network, mel_db, n_frames: list[int], window: int, batch: int):
    import torch

    b, _, t = mel_db.shape
    owners = []  # (clip, start, length) of every window
    for i, n in enumerate(n_frames):
        for s in window_starts(n, window):
            owners.append((i, s, min(window, n)))
    probs = []
    full = [o for o in owners if o[2] == window]
    for at in range(0, len(full), batch):
        part = full[at:at + batch]
        x = torch.stack([mel_db[i, :, s:s + window] for i, s, _ in part])
        probs.append(torch.sigmoid(network(x.float()).float()))
    by_window = dict(zip(full, torch.cat(probs))) if probs else {}
    for o in owners:  # clips shorter than one window: one pass each, at their own length
        if o[2] != window:
            i, s, n = o
            by_window[o] = torch.sigmoid(network(mel_db[i:i + 1, :, :n].float()).float())[0]
    n_tags = next(iter(by_window.values())).shape[0] if by_window else N_TAGS
    out = torch.zeros(b, t, n_tags, device=mel_db.device)
    covered = [0] * b
    for i, s, n in owners:  # in order: a tail window fills only the frames past the last whole one
        out[i, covered[i]:s + n] = by_window[(i, s, n)]
        covered[i] = s + n
    return out
