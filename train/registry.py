"""Names the command lines offer, known without importing torch: the networks with their default
inputs, the tasks and the samplers.

``train.models.MODELS`` (the builders) and ``train.samplers`` read these names, so a name is
written once; registering a new network means a class in ``train.models`` and a line here.
"""
from __future__ import annotations

#: Every network by name, with the stored features it reads when ``--inputs`` is not given (the
#: stronger model uses all it can).
DEFAULT_INPUTS = {"baseline": "mel", "cnn2d": "mel", "fcn": "mel", "crnn": "mel", "musicnn": "mel",
                  "musicnn_vgg": "mel", "shortres": "mel,mfcc,chroma", "linear": "mel"}
MODEL_NAMES = tuple(DEFAULT_INPUTS)
#: The network each task trains by default.
DEFAULT_MODEL = {"tagging": "shortres", "metric": "shortres"}
TASKS = tuple(DEFAULT_MODEL)
#: Sampler names, as ``--sampler`` spells them (``train.samplers.make_sampler``).
SAMPLERS = ("tag", "overlap", "instance", "latent", "timbre", "beat")
#: Clips per group (K) of a P x K metric batch: a batch holds at least one group.
GROUP = 4
MININGS = ("semihard", "hard", "none")
#: The losses of ``--task metric``.
METRIC_LOSSES = ("triplet", "contrastive")
