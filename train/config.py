"""One run's configuration: a frozen dataclass the command line fills and ``config.json`` keeps.

``train/run.py`` parses and checks its arguments into a :class:`RunConfig` (no torch needed), the
loop (``train.loop``) reads it, and the run folder's ``config.json`` is written from it
(:meth:`RunConfig.identity` plus what the data decided) and read back with
:meth:`RunConfig.from_dict`. The fields in ``IDENTITY`` define a run: a resumed run, or a
checkpoint loaded into it, must agree on all of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

#: What defines a run; the other fields (where it runs, how long, its folder) may change on --resume.
IDENTITY = ("task", "model", "inputs", "precision", "dim", "seconds", "batch", "optimizer", "lr", "weight_decay",
            "seed", "distance", "margin", "mining", "negatives", "sampler", "crops_per_clip", "tag_weight",
            "steps_per_epoch", "augmented", "init", "features", "loss", "temperature", "backbone_lr")
#: What a run made before a setting existed used (a metric run: semi-hard triplets, one learning rate).
LEGACY = {"loss": "triplet", "temperature": 0.1, "backbone_lr": 1.0}
#: Settings only metric learning uses, and those only its triplet or only its contrastive loss uses.
METRIC_ONLY = {"dim", "distance", "margin", "tag_weight", "loss", "temperature", "mining", "negatives", "sampler",
               "backbone_lr", "init"}
TRIPLET_ONLY = {"margin", "mining", "negatives"}
#: Settings only a metric run started from a tagging run (``--init``) uses.
INIT_ONLY = {"start", "backbone_lr"}
CONTRASTIVE_ONLY = {"temperature"}


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a training run, as ``train/run.py --help`` documents them."""

    features: Path = Path("cache/features.h5")
    task: str = "tagging"  # 'tagging' or 'metric'
    model: str = "shortres"
    inputs: tuple[str, ...] = ("mel", "mfcc", "chroma")
    epochs: int = 20
    epochs_given: bool = False  # only an explicit --epochs trains a finished run on
    batch: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    patience: int = 3
    lr_factor: float = 0.2
    stop_lr: float = 2e-6
    seconds: float = 3.0
    crops_per_clip: int | str = "auto"
    steps_per_epoch: int | None = None
    dim: int = 128
    distance: str = "cosine"
    margin: float = 0.4
    tag_weight: float = 1.0
    mining: str = "semihard"  # or 'hard', or 'none' for sampled triplets
    loss: str = "contrastive"  # metric: 'contrastive' (multi-label, Jaccard targets) or 'triplet'
    temperature: float = 0.1  # of the contrastive loss
    backbone_lr: float = 1.0  # with --init: the backbone's learning rate as a fraction of lr
    negatives: str = "graded"
    sampler: str = "overlap"
    augmented: bool | None = None
    init: Path | None = None
    start: str = "backbone"  # with --init: the embedding starts as the backbone's ('backbone') or randomly
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # None: the device's rule (train.loop.feed_plan)
    feed: str = "auto"  # 'resident', 'memmap' or 'auto' (resident on a GPU where the features fit)
    compile: bool = False  # torch.compile the training pass (CUDA graphs on a GPU)
    seed: int = 0
    out: Path = Path("cache/runs/tagging-shortres")
    resume: bool = False
    quiet: bool = False
    dist_timeout: float = 10.0

    def identity(self) -> dict:
        """The settings that define the run, JSON-ready (``config.json``, checkpoints)."""
        c = {k: getattr(self, k) for k in IDENTITY}
        # paths as absolute ones, so that a run resumed from another folder knows its files
        c.update(inputs=list(self.inputs), init=str(Path(self.init).resolve()) if self.init else None,
                 features=str(Path(self.features).resolve()))
        return c

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The configuration a ``config.json`` (or a checkpoint's ``config``) describes; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("features", "init", "out"):
            if kw.get(k) is not None:
                kw[k] = Path(kw[k])
        if "inputs" in kw:
            kw["inputs"] = tuple(kw["inputs"])
        return cls(**kw)
