"""PNG figures of a run: training curves and the sorted per-tag ROC-AUC bar chart."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from data.files import atomic_path  # noqa: E402


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (``.jpg``, ``.pdf``, ``.svg``...;
    PNG where matplotlib knows no such format), and close it."""
    fmt = os.path.splitext(path)[1][1:].lower()
    with atomic_path(path) as tmp:  # the temporary's own name has no suffix to go by
        fig.savefig(tmp, format=fmt if fmt in fig.canvas.get_supported_filetypes() else "png", dpi=110,
                    bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: list[dict], path, score_keys=("val_roc_auc", "val_pr_auc"), title: str = "",
                best_epoch: int | None = None) -> None:
    """Loss (train and validation) and validation scores per epoch, side by side.

    ``title`` names the run and model; ``best_epoch`` (the checkpoint tested) is marked on both.
    """
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="valid")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    for key in (k for k in score_keys if k in history[0]):  # a tiny split may lack Recall@8
        ax2.plot(epochs, [h[key] for h in history], marker=".", label=key.removeprefix("val_"))
    ax2.set(xlabel="epoch", title="Validation")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", ls=":", lw=1.2)
    if best_epoch is not None:
        ax2.annotate(f"best epoch {best_epoch}", (best_epoch, 1), xycoords=("data", "axes fraction"),
                     xytext=(3, -12), textcoords="offset points", color="tab:green", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_tag_auc(tags, roc_auc, path, title="Test ROC-AUC per tag", n_positive=None) -> None:
    """Per-tag ROC-AUC as bars sorted from best to worst; undefined tags (NaN) are left out.

    With ``n_positive`` (test positives per tag) each bar is labelled with its count, bars of
    fewer than 5 positives are pale (a tag with one positive at 0.99 is no win), and the tags
    left out are named under the chart.
    """
    roc_auc = np.asarray(roc_auc, dtype=float)
    keep = ~np.isnan(roc_auc)
    order = np.argsort(-roc_auc[keep], kind="stable")
    names = np.asarray(tags)[keep][order]
    fig, ax = plt.subplots(figsize=(12, 4.4))
    colors = "tab:blue"
    if n_positive is not None:
        pos = np.asarray(n_positive)[keep][order]
        colors = ["tab:blue" if k >= 5 else "lightsteelblue" for k in pos]
        names = [f"{t} ({k})" for t, k in zip(names, pos)]
    ax.bar(np.arange(len(order)), roc_auc[keep][order], color=colors)
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(order)), names, rotation=90, fontsize=8)
    ax.set(ylabel="ROC-AUC", ylim=(min(0.4, np.nanmin(roc_auc) - 0.02) if keep.any() else 0.4, 1.0), title=title)
    if n_positive is not None:
        ax.set_xlabel("tag (test positives); pale: fewer than 5 positives", fontsize=8)
        left = [t for t, k in zip(tags, ~keep) if k]
        if left:
            fig.text(0.01, -0.2, "no ROC-AUC (no positive or no negative clip in the test split): "
                     + ", ".join(left), fontsize=7, wrap=True, va="top")
    save_figure(fig, path)


def plot_taggram(taggram, tags, seconds_per_crop: float, path, title="Taggram", starts=None,
                 end: float | None = None) -> None:
    """Tags x time activations of one recording (musicnn's taggram), the clip's top tags first.

    Parameters
    ----------
    taggram : np.ndarray [shape=(crops, tags)]
        Sigmoid scores of the crops.
    tags : sequence of str
    seconds_per_crop : float
        Crop length, for the time axis.
    path : path
        PNG to write (atomically).
    title : str
        Name the recording and the model here.
    starts : np.ndarray [shape=(crops,)], optional
        Start of each crop in seconds; default back to back from 0. A last crop that overlaps the
        one before it (the track's tail) is drawn from where the one before ends.
    end : float, optional
        End of the recording in seconds; default the end of the last crop.
    """
    taggram = np.asarray(taggram, dtype=float)
    starts = np.arange(len(taggram)) * seconds_per_crop if starts is None else np.asarray(starts, dtype=float)
    end = starts[-1] + seconds_per_crop if end is None else end
    edges = np.append(np.maximum(starts, np.concatenate([[0.0], starts[:-1] + seconds_per_crop])), end)
    order = np.argsort(-taggram.mean(axis=0), kind="stable")  # most likely tags at the top
    n = len(order)
    fig, ax = plt.subplots(figsize=(min(4 + 0.35 * len(taggram), 16), 2 + 0.18 * n))
    im = ax.pcolormesh(edges, np.arange(n + 1) - 0.5, taggram[:, order].T, cmap="magma", vmin=0, vmax=1)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(np.arange(n), [tags[i] for i in order], fontsize=7)
    ax.set(xlabel="time (s)", title=f"{title}  (tags sorted by the clip's mean score)")
    fig.colorbar(im, ax=ax, label="score", fraction=0.03, pad=0.01)
    save_figure(fig, path)
