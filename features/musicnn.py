"""musicnn (Pons & Serra 2019) and its VGG-like baseline, as plain modules that load the published weights.

Pons, Nieto, Prockup, Schmidt, Ehmann & Serra, "End-to-end learning for music audio tagging at
scale", ISMIR 2018 (arXiv 1711.02520), and Pons & Serra, "musicnn: pre-trained convolutional
neural networks for music audio tagging", ISMIR LBD 2019. The layer shapes follow the
``musicnn`` package's ``models.py`` and the variable shapes of its TensorFlow checkpoints, so
that :func:`load_musicnn_weights` fills every parameter from them.

Both networks follow the contract of :mod:`train.models`: ``x`` is ``(B, F, T)`` with the
``n_mels`` mel rows first (further rows are ignored), ``forward(x)`` gives tag logits,
``embed(x)`` the penultimate representation, ``forward(x) == head(embed(x))``.

Input scaling. Trained from scratch in this project, the networks read the standardised dB
log-mel of the features file like every other model. The published weights were trained on
``log10(1 + 10000 * mel)`` of a librosa power mel. A network loaded
from them has its buffer ``logc_input`` set, and then maps its input, the plain dB log-mel
(mean 0, std 1 in the run folder), back to power and on to that compression
(:func:`db_to_logc`), so that the features files and front-end of this project feed it as
they are. The buffer travels in the state dict, so a backbone started from the weights
(``--init``) keeps the scaling it was trained with.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from features.shapes import check_bins, check_input

__all__ = ["Musicnn", "MusicnnVGG", "db_to_logc", "load_musicnn_weights", "VARIANTS"]

#: The networks of the ``musicnn`` package: architecture and sizes of each checkpoint folder.
VARIANTS = {
    "MTT_musicnn": ("musicnn", {"n_midend": 64, "n_dense": 200}),
    "MSD_musicnn": ("musicnn", {"n_midend": 64, "n_dense": 200}),
    "MTT_vgg": ("musicnn_vgg", {}),
    "MSD_vgg": ("musicnn_vgg", {}),
}

# TensorFlow's batch normalisation epsilon (tf.layers default), where PyTorch's is 1e-5.
_EPS = 1e-3


def db_to_logc(db: torch.Tensor) -> torch.Tensor:
    """musicnn's compression ``log10(1 + 10000 * S)`` of a mel power ``S`` given in dB.

    ``S = 10 ** (db / 10)`` recovers the power exactly above the features' ``top_db`` floor;
    below it (bins more than 80 dB under the clip's peak) ``S`` is the floor, which adds at
    most ``log10(1 + 1e4 * peak * 1e-8)`` there. Computed in float32: musicnn's extractor casts
    ``S`` to float16 first, where ``10000 * S`` overflows to inf for ``S > 6.55``.

    Parameters
    ----------
    db : torch.Tensor
        Log-mel power in dB (``10 * log10(S)``), any shape.

    Returns
    -------
    torch.Tensor
        Same shape and dtype.
    """
    power = torch.pow(10.0, db.float() / 10.0)
    return torch.log10(1.0 + 10000.0 * power).to(db.dtype)


def _same_pad(kernel: int) -> tuple[int, int]:
    # TensorFlow's 'same' padding puts the odd extra row at the end.
    return (kernel - 1) // 2, kernel // 2


class _ConvBNPool(nn.Module):
    """conv - ReLU - batch norm - max over the whole mel axis: one musicnn front-end branch."""

    def __init__(self, n_filters: int, kernel: tuple[int, int], pad_time: tuple[int, int]):
        super().__init__()
        self.pad_time = pad_time
        self.conv = nn.Conv2d(1, n_filters, kernel)
        self.bn = nn.BatchNorm2d(n_filters, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, T, M) -> (B, C, T)
        x = F.pad(x, (0, 0, *self.pad_time))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class _MusicnnBase(nn.Module):
    """What both networks share: the mel rows, the input check and the input scaling."""

    def __init__(self, n_bins: int, n_mels: int, n_out: int, min_frames: int):
        super().__init__()
        check_bins(n_bins, n_mels)
        self.n_bins, self.n_mels, self.n_out, self.min_frames = n_bins, n_mels, n_out, min_frames
        self.register_buffer("logc_input", torch.tensor(False))
        self.input_bn = nn.BatchNorm2d(1, eps=_EPS)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, T)`` -> the normalised ``(B, 1, T, n_mels)`` image of the mel rows."""
        check_input(self, x)
        x = x[:, : self.n_mels].transpose(1, 2)[:, None]
        if self.logc_input:
            x = db_to_logc(x)
        return self.input_bn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class Musicnn(_MusicnnBase):
    """musicnn: musically motivated front-end, dense residual mid-end, temporal-pooling back-end.

    - Front-end (Pons et al. 2018): five branches over the batch-normalised log-mel, each a
      convolution, ReLU, batch norm and a max over the mel axis. Two *timbral* branches with
      vertical filters of 7 frames x 40 % and x 70 % of the mel bands (204 filters each; the
      time axis zero-padded by 3 so that ``T`` is kept), three *temporal* branches with
      horizontal filters of 128, 64 and 32 frames x 1 band (51 filters each, 'same' padding).
      Their outputs are stacked: 561 channels x ``T``.
    - Mid-end: three 1-D convolutions of 7 frames, ``n_midend`` filters each (ReLU, then batch
      norm), the 2nd and 3rd with residual connections; the front-end output and the three
      maps are stacked densely: ``561 + 3 * n_midend`` channels.
    - Back-end: max and mean over time (interleaved per channel, as musicnn flattens them),
      batch norm, dropout 0.5, ``Linear(., n_dense)``, ReLU, batch norm (the *penultimate*
      layer, :meth:`embed`), dropout 0.5, ``Linear(n_dense, n_out)``.

    With 96 mel bands, ``n_midend=64`` and ``n_dense=200`` (the published MTT and MSD models)
    it has 787,159 parameters: exactly the trainable variables of those checkpoints.

    Parameters
    ----------
    n_bins : int
        Feature rows ``F`` of the input.
    n_mels : int
        Mel rows at the top of the input.
    n_out : int
        Number of tags.
    n_midend : int
        Filters of each mid-end layer (64 published; 512 in the unpublished 'big' model).
    n_dense : int
        Units of the penultimate layer (200 published; 500 'big').

    Attributes
    ----------
    timbral, temporal : torch.nn.ModuleList
        The front-end branches, in musicnn's order (74, 77; 128, 64, 32).
    midend : torch.nn.ModuleList
        Three ``(Conv1d, BatchNorm1d)`` pairs.
    embed_dim : int
        ``n_dense``.
    min_frames : int
        1: every layer keeps ``T``.
    """

    #: The trainer keeps this network in the default memory format: its 7 x 38 and 128 x 1 filters on
    #: one input channel run 1.5-2.5x slower channels-last on the CPU (measured on a batch of 8).
    channels_last = False

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50, n_midend: int = 64, n_dense: int = 200):
        super().__init__(n_bins, n_mels, n_out, min_frames=1)
        width = lambda frac: max(1, int(frac * n_mels))  # noqa: E731 - musicnn's int(0.4 * 96) = 38
        self.timbral = nn.ModuleList(_ConvBNPool(204, (7, width(f)), (3, 3)) for f in (0.4, 0.7))
        self.temporal = nn.ModuleList(_ConvBNPool(51, (k, 1), _same_pad(k)) for k in (128, 64, 32))
        n_front = 2 * 204 + 3 * 51
        self.midend = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv1d(c, n_midend, 7, padding=3), "bn": nn.BatchNorm1d(n_midend, eps=_EPS)})
            for c in (n_front, n_midend, n_midend))
        n_pool = 2 * (n_front + 3 * n_midend)
        self.pool_bn = nn.BatchNorm1d(n_pool, eps=_EPS)
        self.dense = nn.Linear(n_pool, n_dense)
        self.dense_bn = nn.BatchNorm1d(n_dense, eps=_EPS)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(n_dense, n_out))
        self.embed_dim = n_dense

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """musicnn's named intermediate representations (as its ``extractor`` returns them).

        Returns
        -------
        dict
            ``timbral`` ``(B, 408, T)``, ``temporal`` ``(B, 153, T)``, ``cnn1``..``cnn3``
            ``(B, n_midend, T)``, ``max_pool`` and ``mean_pool`` ``(B, 561 + 3 n_midend)``,
            ``penultimate`` ``(B, n_dense)``.
        """
        h = self._input(x)
        timbral = torch.cat([b(h) for b in self.timbral], dim=1)
        temporal = torch.cat([b(h) for b in self.temporal], dim=1)
        out = {"timbral": timbral, "temporal": temporal}
        maps = [torch.cat([timbral, temporal], dim=1)]
        for i, layer in enumerate(self.midend):
            y = layer["bn"](F.relu(layer["conv"](maps[-1])))
            maps.append(y if i == 0 else y + maps[-1])
            out[f"cnn{i + 1}"] = maps[-1]
        dense = torch.cat(maps, dim=1)
        out["max_pool"], out["mean_pool"] = dense.amax(dim=2), dense.mean(dim=2)
        pooled = torch.stack([out["max_pool"], out["mean_pool"]], dim=2).flatten(1)
        h = F.dropout(self.pool_bn(pooled), 0.5, self.training)
        out["penultimate"] = self.dense_bn(F.relu(self.dense(h)))
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, ``(B, n_dense)``."""
        return self.features(x)["penultimate"]


class MusicnnVGG(_MusicnnBase):
    """musicnn's VGG-like baseline: five 3x3 conv blocks of 128 filters over the log-mel.

    Each block is ``Conv2d(3x3, 'same')``, ReLU, batch norm, max pool — pools (4, 1) stride 2,
    then (2, 2) three times, then (4, 4) — with dropout 0.25 between blocks; the last map
    (2 x 1 x 128 for 3-s patches of 96 bands) is flattened (time, mel, channel order, as
    TensorFlow does), dropout 0.5, then ``Linear(., n_out)``. The dense layer fixes the input
    size, so this network takes patches of about ``n_frames`` frames only (187 for musicnn's 3 s;
    ``min_frames`` to ``max_frames`` give the same pooled size).

    Parameters
    ----------
    n_bins, n_mels, n_out : int
        As in :class:`Musicnn`.
    n_filters : int
        Filters of every conv layer (128 published).
    n_frames : int
        Input frames it is built for.

    Attributes
    ----------
    embed_dim : int
        Size of the flattened last map (256 for 96 x 187 inputs).
    min_frames, max_frames : int
        The input lengths it takes (130 to 193 for ``n_frames=187``).
    """

    pools = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50, n_filters: int = 128, n_frames: int = 187):
        super().__init__(n_bins, n_mels, n_out, min_frames=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(1 if i == 0 else n_filters, n_filters, 3, padding=1), nn.ReLU(),
                          nn.BatchNorm2d(n_filters, eps=_EPS), nn.MaxPool2d(pool, stride))
            for i, (pool, stride) in enumerate(self.pools))
        t, m = self._pooled(n_frames), self._pooled(n_mels, axis=1)
        if t < 1 or m < 1:
            raise ValueError(f"MusicnnVGG pools {n_frames} frames x {n_mels} bands to nothing; "
                             f"it needs about 96 bands and 187 frames")
        self.embed_dim = t * m * n_filters
        # The dense layer fixes the pooled size; these are the input lengths that give it.
        fits = [n for n in range(1, 4 * n_frames) if self._pooled(n) == t]
        self.min_frames, self.max_frames = fits[0], fits[-1]
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(self.embed_dim, n_out))

    def _pooled(self, n: int, axis: int = 0) -> int:
        for pool, stride in self.pools:
            n = (n - pool[axis]) // stride[axis] + 1
        return n

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened last pooled map (musicnn's ``pool5``), ``(B, embed_dim)``."""
        if x.dim() == 3 and x.shape[2] > self.max_frames:
            raise ValueError(f"MusicnnVGG takes patches of {self.min_frames} to {self.max_frames} frames, "
                             f"got {x.shape[2]}")
        h = self._input(x)
        for i, block in enumerate(self.blocks):
            h = block(F.dropout(h, 0.25, self.training) if i else h)
        return h.permute(0, 2, 3, 1).flatten(1)


def _bn(tf: dict, name: str) -> dict:
    return {"weight": tf[f"{name}/gamma"], "bias": tf[f"{name}/beta"],
            "running_mean": tf[f"{name}/moving_mean"], "running_var": tf[f"{name}/moving_variance"]}


def _tf_layers(tf: dict, kind: str) -> list[str]:
    """Layer names of one kind in TensorFlow's creation order (conv2d, conv2d_1, ..., conv2d_10)."""
    names = {k.split("/")[0] for k in tf if re.fullmatch(rf"{kind}(_\d+)?", k.split("/")[0])}
    return sorted(names, key=lambda n: int(n.removeprefix(kind).lstrip("_") or 0))


def load_musicnn_weights(model: Musicnn | MusicnnVGG, tf: dict) -> None:
    """Fill a network from the variables of a musicnn TensorFlow checkpoint, in place.

    TensorFlow names layers by creation order (``conv2d``, ``conv2d_1``, ...,
    ``batch_normalization_10``); musicnn creates them in the order of :meth:`Musicnn.features`,
    which this function follows. Conv kernels ``(h, w, in, out)`` become ``(out, in, h, w)``
    (1-D mid-end kernels ``(7, in, 1, out)`` become ``(out, in, 7)``); dense kernels
    ``(in, out)`` are transposed. Sets ``logc_input`` (see the module docstring).

    Parameters
    ----------
    model : Musicnn or MusicnnVGG
        Built with the checkpoint's sizes (see ``VARIANTS``).
    tf : dict
        ``{name: numpy array}`` from :func:`features.tfcheckpoint.read_checkpoint`.

    Raises
    ------
    ValueError
        When a variable is missing, unused, or of another shape than the network's.
    """
    bns = [_bn(tf, n) for n in _tf_layers(tf, "batch_normalization")]
    dense = [(tf[f"{n}/kernel"].T, tf[f"{n}/bias"]) for n in _tf_layers(tf, "dense")]
    if isinstance(model, Musicnn):
        convs = [(tf[f"{n}/kernel"], tf[f"{n}/bias"]) for n in _tf_layers(tf, "conv2d")]
        branches = [*model.timbral, *model.temporal]
        if (len(convs), len(bns), len(dense)) != (8, 11, 2):
            raise ValueError(f"not a musicnn checkpoint: {len(convs)} conv, {len(bns)} batch-norm and "
                             f"{len(dense)} dense layers, expected 8, 11 and 2")
        pairs = [(model.input_bn, bns[0])]
        for i, b in enumerate(branches):
            pairs += [(b.conv, {"weight": convs[i][0].transpose(3, 2, 0, 1), "bias": convs[i][1]}), (b.bn, bns[1 + i])]
        for i, layer in enumerate(model.midend):
            k, bias = convs[5 + i]
            pairs += [(layer["conv"], {"weight": k[:, :, 0, :].transpose(2, 1, 0), "bias": bias}),
                      (layer["bn"], bns[6 + i])]
        pairs += [(model.pool_bn, bns[9]), (model.dense, {"weight": dense[0][0], "bias": dense[0][1]}),
                  (model.dense_bn, bns[10]), (model.head[1], {"weight": dense[1][0], "bias": dense[1][1]})]
    else:
        convs = [(tf[f"{i}CNN/kernel"], tf[f"{i}CNN/bias"]) for i in range(1, 6) if f"{i}CNN/kernel" in tf]
        if (len(convs), len(bns), len(dense)) != (5, 6, 1):
            raise ValueError(f"not a musicnn VGG checkpoint: {len(convs)} conv, {len(bns)} batch-norm and "
                             f"{len(dense)} dense layers, expected 5, 6 and 1")
        pairs = [(model.input_bn, bns[0])]
        for i, block in enumerate(model.blocks):
            pairs += [(block[0], {"weight": convs[i][0].transpose(3, 2, 0, 1), "bias": convs[i][1]}),
                      (block[2], bns[1 + i])]
        pairs.append((model.head[1], {"weight": dense[0][0], "bias": dense[0][1]}))
    with torch.no_grad():
        for module, values in pairs:
            for name, value in values.items():
                target = getattr(module, name)
                if tuple(target.shape) != value.shape:
                    raise ValueError(f"{type(module).__name__}.{name}: the network has shape {tuple(target.shape)}, "
                                     f"the checkpoint {value.shape}")
                target.copy_(torch.from_numpy(value.copy()))
        model.logc_input.fill_(True)
