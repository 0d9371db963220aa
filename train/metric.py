"""Old import path of the metric-learning pieces, kept while callers move.

Losses and mining live in ``train.losses``, the samplers in ``train.samplers`` (the course's tag
samplers in ``train.tag_samplers``), per-clip timbre statistics in ``features.timbre`` and their
streaming from a features file in ``train.feed``.
"""
from features.timbre import timbre_statistics  # noqa: F401
from train.feed import clip_statistics  # noqa: F401
from train.losses import *  # noqa: F401,F403
from train.samplers import *  # noqa: F401,F403
from train.tag_samplers import *  # noqa: F401,F403
