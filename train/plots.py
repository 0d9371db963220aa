"""PNG figures of a run: training curves and the sorted per-tag ROC-AUC bar chart."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data.files import atomic_path  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: list[dict], path, score_keys=("val_roc_auc", "val_pr_auc")) -> None:
    """Loss (train and validation) and validation scores per epoch, side by side."""
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
    _save(fig, path)


def plot_tag_auc(tags, roc_auc, path, title="Test ROC-AUC per tag") -> None:
    """Per-tag ROC-AUC as bars sorted from best to worst; undefined tags (NaN) are left out."""
    roc_auc = np.asarray(roc_auc, dtype=float)
    keep = ~np.isnan(roc_auc)
    order = np.argsort(-roc_auc[keep], kind="stable")
    names = np.asarray(tags)[keep][order]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(np.arange(len(order)), roc_auc[keep][order], color="tab:blue")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(order)), names, rotation=90, fontsize=8)
    ax.set(ylabel="ROC-AUC", ylim=(min(0.4, np.nanmin(roc_auc) - 0.02) if keep.any() else 0.4, 1.0), title=title)
    _save(fig, path)


def plot_taggram(taggram, tags, seconds_per_crop: float, path, title="Taggram") -> None:
    """Tags x time activations of one recording (musicnn's taggram), the clip's top tags first.

    Parameters
    ----------
    taggram : np.ndarray [shape=(crops, tags)]
        Sigmoid scores of consecutive crops.
    tags : sequence of str
    seconds_per_crop : float
        Crop length, for the time axis.
    path : path
        PNG to write (atomically).
    """
    taggram = np.asarray(taggram, dtype=float)
    order = np.argsort(-taggram.mean(axis=0), kind="stable")  # most likely tags at the top
    n = len(order)
    fig, ax = plt.subplots(figsize=(min(4 + 0.35 * len(taggram), 16), 2 + 0.18 * n))
    im = ax.imshow(taggram[:, order].T, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1,
                   extent=(0, len(taggram) * seconds_per_crop, n - 0.5, -0.5))
    ax.set_yticks(np.arange(n), [tags[i] for i in order], fontsize=7)
    ax.set(xlabel="time (s)", title=f"{title}  (tags sorted by the clip's mean score)")
    fig.colorbar(im, ax=ax, label="score", fraction=0.03, pad=0.01)
    _save(fig, path)
