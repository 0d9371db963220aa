"""Evaluation of a model on one split: clip-level outputs, the split's loss, and its metrics."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from eval.auc import tag_auc
from eval.recall import DEFAULT_KS, recall_at_k
from train.feed import Crops


@torch.no_grad()
def predict(model, dataset: Crops, task: str, batch: int, device, bf16: bool = False, **loader_kw):
    """Clip-level outputs of ``model`` on ``dataset``: crop outputs averaged per clip.

    ``bf16`` runs the network in bfloat16 autocast (the trainer does on a GPU); outputs are kept
    on the device until the end, so a GPU is not stopped for a copy after every batch.

    Returns
    -------
    scores : np.ndarray [shape=(clips, tags)] or None
        Sigmoid tag scores (tagging models; ``None`` for embedding models).
    emb : np.ndarray [shape=(clips, dim)]
        Embeddings: the tagging model's penultimate layer, or the metric model's output.
    labels : np.ndarray [shape=(clips, tags)]
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=Crops.collate, **loader_kw)
    outs, embs = [], []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if task == "tagging":
                emb = model.embed(x)
                outs.append(torch.sigmoid(model.head(emb).float()))  # forward(x) is head(embed(x))
            else:
                emb = model(x)
        embs.append(emb.float())
    emb = dataset.per_clip(torch.cat(embs).cpu().numpy())
    scores = dataset.per_clip(torch.cat(outs).cpu().numpy()) if outs else None
    return scores, emb, dataset.ff.labels[dataset.idx]


def metrics(scores, emb, labels, tags, distance: str = "cosine") -> dict:
    """Macro ROC-AUC / PR-AUC (with the per-tag arrays under ``per_tag``) and Recall@K."""
    res = {}
    if scores is not None:
        auc = tag_auc(scores, labels, tag_names=list(tags))
        res.update(roc_auc=auc["roc_auc_macro"], pr_auc=auc["pr_auc_macro"], per_tag=auc)
    ks = tuple(k for k in DEFAULT_KS if k < len(emb))  # a tiny split cannot rank 8 neighbours
    if ks:
        rec = recall_at_k(emb, labels, ks=ks, metric=distance)
        res.update({f"recall@{k}": rec["recall"][k] for k in ks})
    return res
