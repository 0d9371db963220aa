"""Evaluators: multi-label Recall@K of embeddings and per-tag ROC-AUC / PR-AUC, numba-accelerated.

``eval.recall.recall_at_k`` and ``eval.auc.tag_auc`` are the importable functions; the same
modules are the commands ``python eval/recall.py`` and ``python eval/auc.py`` (``--help``).
This package imports nothing else from the project (only numpy, numba and the standard
library), and nothing at package import time.
"""
