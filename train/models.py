"""Tagging and embedding networks over stored, standardised features.

Every network here takes the tensor the trainer builds from the HDF5 features:

``x`` : float32, shape ``(B, F, T)``
    ``F`` concatenated feature bins in the order mel (``n_mels``, default 96), then MFCC
    (default 20) if used, then chroma (12) if used, each bin standardised with the
    training-set mean and std; ``T`` frames (188 for a 3 s crop).

and offers the same four things, which the trainer, the evaluation and ``train/tag.py`` rely on:

- ``forward(x)`` : ``(B, n_out)`` logits (no sigmoid: use ``BCEWithLogitsLoss``);
- ``embed(x)`` : ``(B, embed_dim)`` pooled penultimate representation;
- ``head`` : the output layer (a ``Linear``, or a ``Sequential`` ending in one), so that
  ``forward(x) == head(embed(x))`` (the evaluation scores clips from one ``embed`` pass, and the
  tag layer's biases start at the tags' base rates);
- ``embed_dim`` and ``min_frames`` (the shortest crop it takes) attributes.

A new network: its class here, a line in ``MODELS`` (below) and its name and default inputs in
``train.registry.DEFAULT_INPUTS``; then ``--model NAME`` trains it. Default inputs without mel
(for a network that does not convolve over the mel bands) are allowed: it is built with
``n_mels=0``, so it must not call ``features.shapes.check_bins``, which the networks here call.

No spectrogram is computed inside a model. Build them by name with :func:`build_model`; their
names and default inputs are in ``train.registry``. The blocks they share are in ``train.layers``,
musicnn's ports in ``features.musicnn``; a new architecture belongs here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from features.musicnn import Musicnn, MusicnnVGG
from features.shapes import check_bins, check_input
from train.layers import (
    EmbeddingNet,
    ResBlock2d,
    SpecAugment,
    _check_stack,
    conv_block,
    conv_stack,
    count_parameters,
    init_tag_prior,
)
from train.registry import MODEL_NAMES

__all__ = [
    "Baseline1D",
    "CNN2D",
    "FCN",
    "CRNN",
    "ShortChunkResNet",
    "LinearProjection",
    "EmbeddingNet",
    "SpecAugment",
    "ResBlock2d",
    "conv_block",
    "conv_stack",
    "MODELS",
    "build_model",
    "build_embedding_model",
    "count_parameters",
    "init_tag_prior",
]


class Baseline1D(nn.Module):
    """The course's 1-D CNN: convolution over time, mel bins as input channels.

    Three blocks of ``Conv1d(k=3, padding=1)`` - ``BatchNorm1d`` - ``ReLU`` - ``MaxPool1d(3)``
    with ``channels`` channels, a global average pool over time and ``Linear(channels, n_out)``.
    ``padding=1`` keeps the length through each convolution ('same' for k=3), so only the
    pools shorten time: 188 -> 62 -> 20 -> 6 frames.

    Only the mel bins ``x[:, :n_mels]`` are used; extra MFCC/chroma rows are ignored.

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Number of mel rows at the top of the input.
    n_out : int
        Number of tags.
    channels : int
        Width of every convolution.

    Attributes
    ----------
    blocks : torch.nn.Sequential
        The three conv blocks, to be run one by one if needed.
    head : torch.nn.Linear
        The output layer.
    embed_dim : int
        ``channels``.
    min_frames : int
        27 (three pools of 3).
    """

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50, channels: int = 32):
        super().__init__()
        check_bins(n_bins, n_mels)
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, n_out
        layers = []
        c_in = n_mels
        for _ in range(3):
            layers.append(
                nn.Sequential(
                    nn.Conv1d(c_in, channels, kernel_size=3, padding=1),
                    nn.BatchNorm1d(channels),
                    nn.ReLU(),
                    nn.MaxPool1d(3),
                )
            )
            c_in = channels
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_out)
        self.embed_dim = channels
        self.min_frames = 3**3

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged output of the last block, ``(B, channels)``."""
        check_input(self, x)
        return self.blocks(x[:, : self.n_mels]).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class CNN2D(nn.Module):
    """The course's 2-D CNN over the mel spectrogram as a one-channel image.

    Four blocks of ``Conv2d(3x3, padding=1)`` - ``BatchNorm2d`` - ``ReLU`` - ``MaxPool2d``
    with 64, 128, 128, 64 channels and pools (4, 4), (3, 3), (3, 3), (2, 5); then a global
    max pool and ``Linear(64, n_out)``. For a ``1 x 96 x 188`` input the blocks give
    ``64x24x47``, ``128x8x15``, ``128x2x5`` and ``64x1x1``, so the global max pool is a
    no-op there; it only matters for other sizes, where the last map is larger than 1x1.

    Only the mel bins ``x[:, :n_mels]`` are used.

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Number of mel rows at the top of the input; at least 72 (= 4*3*3*2).
    n_out : int
        Number of tags.

    Attributes
    ----------
    blocks : torch.nn.Sequential
        The four conv blocks; ``blocks[i]`` maps ``(B, C, H, W)`` to the next map.
    head : torch.nn.Linear
    embed_dim : int
        64.
    min_frames : int
        180 (= 4*3*3*5).
    """

    channels = (64, 128, 128, 64)
    pools = ((4, 4), (3, 3), (3, 3), (2, 5))

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50):
        super().__init__()
        check_bins(n_bins, n_mels)
        _check_stack("CNN2D", self.pools, self.channels, n_mels)
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, n_out
        self.blocks = conv_stack(self.channels, self.pools)
        self.head = nn.Linear(self.channels[-1], n_out)
        self.embed_dim = self.channels[-1]
        self.min_frames = math.prod(p[1] for p in self.pools)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global max of the last block's map, ``(B, 64)``."""
        check_input(self, x)
        h = self.blocks(x[:, None, : self.n_mels])
        return h.amax(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class FCN(nn.Module):
    """Fully convolutional network (Choi, Fazekas & Sandler 2016, FCN-5), adapted to 3-s crops.

    Five :func:`conv_block` blocks (``Conv2d(3x3)`` - ``BatchNorm2d`` - ``ReLU`` - ``MaxPool2d``)
    over the mel spectrogram as a one-channel image, ``widths`` channels, then a global max
    pool, ``Dropout(dropout)`` and ``Linear(widths[-1], n_out)`` (the paper's sigmoid output
    layer; logits here). The paper's mel pools, (2, 4), (2, 4), (2, 4), (3, 5), (4, 4) over
    (mel, time), collapse its 96 x 1366 inputs (29 s) to 1 x 1. For our 96 x 188 crops the mel
    pools are kept and the time pools become 4, 3, 3, 5, 1: pools (2, 4), (2, 3), (2, 3),
    (3, 5), (4, 1), maps ``64x48x47``, ``128x24x15``, ``128x12x5``, ``128x4x1``, ``64x1x1``.
    The time pools multiply to 180, so the last map covers 180 of the 188 frames (as in
    :class:`CNN2D`); the paper's 4, 4, 4 would leave 2 frames after three blocks, from 128 of
    them. A longer input leaves a larger last map, which the global max pool reduces, so any
    ``T >= min_frames`` works. A fully convolutional network has the same parameters whatever
    the input size: the adaptation changes no count.

    Widths: the default (64, 128, 128, 128, 64), with ReLU and dropout 0.5 before the output,
    is the FCN of Won et al.'s reimplementation (``sota-music-tagging-models``, SMC 2020), the
    one commonly compared against. ``widths=(32, 128, 128, 192, 256)`` gives the first author's
    own Keras FCN-5 (``music_tagger_cnn.py`` of ``music-auto_tagging-keras``; it uses ELU). The
    paper's own tables, sized for 29-s inputs on a GPU, are wider; ``widths`` takes any five.

    Only the mel bins ``x[:, :n_mels]`` are used; extra MFCC/chroma rows are ignored.

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Number of mel rows at the top of the input; at least 96 (= 2*2*2*3*4).
    n_out : int
        Number of tags.
    widths : tuple of 5 int
        Channels of the five blocks.
    dropout : float
        Dropout before the output layer.

    Attributes
    ----------
    blocks : torch.nn.Sequential
        The five conv blocks; ``blocks[i]`` maps ``(B, C, H, W)`` to the next map.
    dropout : torch.nn.Dropout
    head : torch.nn.Linear
    embed_dim : int
        ``widths[-1]``.
    min_frames : int
        180 (= 4*3*3*5).

    Notes
    -----
    Parameter counts (96 mels, 50 tags): this network 447,730; Won et al.'s FCN 447,732 (the 2
    more are its BatchNorm2d(1) on the raw dB input, which our standardised features make
    redundant). With ``widths=(32, 128, 128, 192, 256)``: 863,218, the Keras FCN-5's 850,368
    listed without its top plus its 50-tag output layer, 256 x 50 + 50 = 12,850.

    References
    ----------
    Choi, Fazekas, Sandler, "Automatic tagging using deep convolutional neural networks",
    ISMIR 2016, arXiv:1606.00298.
    Won, Ferraro, Bogdanov, Serra, "Evaluation of CNN-based automatic music tagging models",
    SMC 2020, arXiv:2006.00751.
    """

    pools = ((2, 4), (2, 3), (2, 3), (3, 5), (4, 1))

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50,
                 widths: tuple[int, ...] = (64, 128, 128, 128, 64), dropout: float = 0.5):
        super().__init__()
        check_bins(n_bins, n_mels)
        _check_stack("FCN", self.pools, widths, n_mels)
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, n_out
        self.blocks = conv_stack(widths, self.pools)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], n_out)
        self.embed_dim = widths[-1]
        self.min_frames = math.prod(p[1] for p in self.pools)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global max of the last block's map (after dropout in training mode), ``(B, widths[-1])``."""
        check_input(self, x)
        return self.dropout(self.blocks(x[:, None, : self.n_mels]).amax(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class CRNN(nn.Module):
    """Convolutional recurrent network (Choi, Fazekas, Sandler & Cho 2017), adapted to 3-s crops.

    Four :func:`conv_block` blocks (``Conv2d(3x3)`` - ``BatchNorm2d`` - ``ELU`` - ``MaxPool2d`` -
    ``Dropout(conv_dropout)``) with ``channels`` channels collapse the mel axis; the remaining
    sequence of ``channels[-1]``-dim frames goes through an ``n_layers``-layer GRU of
    ``hidden`` units, whose last hidden state (the top layer's state after the last step),
    after ``Dropout(dropout)``, feeds ``Linear(hidden, n_out)`` (the paper's sigmoid outputs;
    logits here).

    The paper pools (2, 2), (3, 3), (4, 4), (4, 4) over (mel, time): its 96 x 1366 inputs (29 s,
    zero-padded to 1440 frames) become 1 x 15, 15 GRU steps. For our 96 x 188 crops the mel
    pools are kept and the time pools become 2, 3, 2, 1: pools (2, 2), (3, 3), (4, 2), (4, 1),
    maps ``64x48x94``, ``128x16x31``, ``128x4x15``, ``128x1x15``: the same 15 steps, each
    12 frames (0.19 s) apart instead of 96. Longer inputs give more steps; with more than
    191 mel rows the last map keeps more than one row, and its max is taken.

    Sizes: the paper scales its networks to 0.1M to 3M parameters; we take the ~0.4M network
    its first author released (``music_tagger_crnn.py`` of ``music-auto_tagging-keras``, trained
    on the Million Song Dataset): channels 64, 128, 128, 128, two GRU layers of 32 units, ELU,
    dropout 0.1 after each conv block and 0.3 before the output.

    Only the mel bins ``x[:, :n_mels]`` are used; extra MFCC/chroma rows are ignored.

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Number of mel rows at the top of the input; at least 96 (= 2*3*4*4).
    n_out : int
        Number of tags.
    channels : tuple of 4 int
        Channels of the four conv blocks.
    hidden : int
        GRU units per layer, i.e. ``embed_dim``.
    n_layers : int
        GRU layers.
    conv_dropout, dropout : float
        Dropout after each conv block and before the output layer.

    Attributes
    ----------
    blocks : torch.nn.Sequential
        The four conv blocks; ``blocks[i]`` maps ``(B, C, H, W)`` to the next map.
    gru : torch.nn.GRU
        ``batch_first``; input ``(B, steps, channels[-1])``.
    dropout : torch.nn.Dropout
    head : torch.nn.Linear
    embed_dim : int
        ``hidden``.
    min_frames : int
        12 (= 2*3*2*1), which gives one GRU step.

    Notes
    -----
    Parameter counts (96 mels, 50 tags): this network 394,098; the Keras CRNN 393,906 without
    its BatchNorm over the input's 1,440 time frames (which our standardised features make
    redundant). The 192 more are PyTorch's second GRU bias (``bias_hh``, 3 x 32 per layer),
    which Keras 1 GRUs lack.

    References
    ----------
    Choi, Fazekas, Sandler, Cho, "Convolutional recurrent neural networks for music
    classification", ICASSP 2017, arXiv:1609.04243.
    """

    pools = ((2, 2), (3, 3), (4, 2), (4, 1))

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50,
                 channels: tuple[int, ...] = (64, 128, 128, 128), hidden: int = 32, n_layers: int = 2,
                 conv_dropout: float = 0.1, dropout: float = 0.3):
        super().__init__()
        check_bins(n_bins, n_mels)
        _check_stack("CRNN", self.pools, channels, n_mels)
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, n_out
        self.blocks = conv_stack(channels, self.pools, act=nn.ELU, dropout=conv_dropout)
        self.gru = nn.GRU(channels[-1], hidden, num_layers=n_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_out)
        self.embed_dim = hidden
        self.min_frames = math.prod(p[1] for p in self.pools)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The conv blocks' output as the GRU's input sequence, ``(B, steps, channels[-1])``."""
        check_input(self, x)
        return self.blocks(x[:, None, : self.n_mels]).amax(dim=2).transpose(1, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The GRU's last hidden state (after dropout in training mode), ``(B, hidden)``."""
        out, _ = self.gru(self.sequence(x))
        return self.dropout(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class ShortChunkResNet(nn.Module):
    """Short-chunk CNN with residual connections (Won et al., 2020), for stored features.

    The mel rows go through ``n_layers`` :class:`ResBlock2d` blocks, each followed by a
    2x2 max pool, with channels ``width, width, 2*width, ..., 2*width, 4*width`` (the
    doubling pattern of the paper's model); the remaining map is max-pooled globally. If the
    input has more rows than ``n_mels`` (MFCC and/or chroma), those ``n_bins - n_mels`` rows
    go through a small 1-D conv branch over time whose max-pooled output is concatenated to
    the 2-D branch's vector. Then ``Linear`` - ``BatchNorm1d`` - ``ReLU`` - ``Dropout(dropout)``
    give the embedding and a last ``Linear`` the logits.

    In training mode the input is first masked by :class:`SpecAugment` (set ``specaugment=False``
    to turn it off); in eval mode the model is deterministic.

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Number of mel rows at the top of the input; at least ``2 ** n_layers``.
    n_out : int
        Number of tags.
    width : int
        Channels of the first blocks. The paper uses 128 on a GPU; the default 32 keeps an epoch
        of a few thousand 96x188 crops in minutes on two CPU cores.
    n_layers : int
        Number of residual blocks (each halves both axes). Six takes 96 mel rows to 1.
    dense : int or None
        Size of the dense layer, i.e. ``embed_dim``; default: the last block's channels.
    extra_channels : int
        Width of the 1-D branch for MFCC/chroma rows (unused when ``n_bins == n_mels``).
    dropout : float
        Dropout after the dense layer.
    specaugment : bool
        Mask the input in training mode.
    **augment
        Passed to :class:`SpecAugment` (``n_freq_masks``, ``freq_width``, ``n_time_masks``,
        ``time_width``).

    Attributes
    ----------
    augment : SpecAugment or None
    blocks : torch.nn.Sequential
        ``blocks[i]`` is ``Sequential(ResBlock2d, MaxPool2d(2))``.
    extra : torch.nn.Sequential or None
        The 1-D branch.
    dense : torch.nn.Sequential
        Linear-BN-ReLU-Dropout.
    head : torch.nn.Linear
    embed_dim : int
    min_frames : int
        ``2 ** n_layers``.

    Notes
    -----
    The dense layer's ``BatchNorm1d`` cannot train on a batch of one example: drop the last
    incomplete batch if it could hold a single crop.

    References
    ----------
    Won, Ferraro, Bogdanov, Serra, "Evaluation of CNN-based automatic music tagging models",
    SMC 2020, arXiv:2006.00751.
    """

    def __init__(
        self,
        n_bins: int,
        n_mels: int = 96,
        n_out: int = 50,
        width: int = 32,
        n_layers: int = 6,
        dense: int | None = None,
        extra_channels: int = 64,
        dropout: float = 0.5,
        specaugment: bool = True,
        **augment,
    ):
        super().__init__()
        check_bins(n_bins, n_mels)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_mels < 2**n_layers:
            raise ValueError(f"{n_layers} 2x2 pools need n_mels >= {2 ** n_layers}, got {n_mels}")
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, n_out
        self.augment = SpecAugment(n_mels, **augment) if specaugment else None

        widths = [width] * 2 + [2 * width] * max(n_layers - 3, 0) + [4 * width]
        widths = widths[-n_layers:] if n_layers < 3 else widths
        blocks, c_in = [], 1
        for c_out in widths:
            blocks.append(nn.Sequential(ResBlock2d(c_in, c_out), nn.MaxPool2d(2)))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        pooled = c_in

        n_extra = n_bins - n_mels
        if n_extra > 0:
            # MFCC/chroma rows are not a frequency axis one can convolve over, so they are
            # treated as channels of a 1-D conv over time, like the baseline does with mel bins.
            self.extra = nn.Sequential(
                nn.Conv1d(n_extra, extra_channels, 3, padding=1, bias=False),
                nn.BatchNorm1d(extra_channels),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Conv1d(extra_channels, extra_channels, 3, padding=1, bias=False),
                nn.BatchNorm1d(extra_channels),
                nn.ReLU(),
            )
            pooled += extra_channels
        else:
            self.extra = None

        dense = dense or widths[-1]
        self.dense = nn.Sequential(
            nn.Linear(pooled, dense, bias=False),
            nn.BatchNorm1d(dense),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(dense, n_out)
        self.embed_dim = dense
        self.min_frames = 2**n_layers

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the dense layer (after dropout in training mode), ``(B, embed_dim)``."""
        check_input(self, x)
        if self.augment is not None:
            x = self.augment(x)
        h = self.blocks(x[:, None, : self.n_mels]).amax(dim=(2, 3))
        if self.extra is not None:
            h = torch.cat([h, self.extra(x[:, self.n_mels :]).amax(dim=2)], dim=1)
        return self.dense(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits, ``(B, n_out)``."""
        return self.head(self.embed(x))


class LinearProjection(nn.Module):
    """The course's metric-learning baseline: time-averaged features through one linear map.

    ``embed(x) = Linear(F, dim)(x.mean(dim=2))`` over all ``F`` bins (mel, MFCC, chroma).
    There is no separate output layer: ``forward`` is ``embed``, because this model only
    exists to be trained with a triplet loss (``train/run.py`` offers it for ``--task metric``
    only; trained with BCE it would be a logistic regression on mean features).

    Parameters
    ----------
    n_bins : int
        Number of feature rows ``F`` in the input.
    n_mels : int
        Accepted for a uniform signature; unused.
    n_out : int
        Embedding size when ``dim`` is not given.
    dim : int or None
        Embedding size ``D``.

    Attributes
    ----------
    proj : torch.nn.Linear
    embed_dim : int
        ``dim``.
    min_frames : int
        1.
    """

    def __init__(self, n_bins: int, n_mels: int = 96, n_out: int = 50, dim: int | None = None):
        super().__init__()
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        dim = n_out if dim is None else dim
        self.n_bins, self.n_mels, self.n_out = n_bins, n_mels, dim
        self.proj = nn.Linear(n_bins, dim)
        self.embed_dim = dim
        self.min_frames = 1

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projected time average, ``(B, dim)``."""
        check_input(self, x)
        return self.proj(x.mean(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(x)


#: Model classes by name; each is called as ``cls(n_bins, n_mels=..., n_out=..., **kwargs)``.
#: ``musicnn`` and ``musicnn_vgg`` (Pons et al. 2018) live in :mod:`features.musicnn`, with the loader of
#: their published weights.
MODELS: dict[str, type[nn.Module]] = {
    "baseline": Baseline1D,
    "cnn2d": CNN2D,
    "fcn": FCN,
    "crnn": CRNN,
    "musicnn": Musicnn,
    "musicnn_vgg": MusicnnVGG,
    "shortres": ShortChunkResNet,
    "linear": LinearProjection,
}
assert set(MODELS) == set(MODEL_NAMES), "train.registry names the networks the command lines offer"


def build_model(name: str, n_bins: int, n_mels: int = 96, n_out: int = 50, **kwargs) -> nn.Module:
    """Build a network by name.

    Parameters
    ----------
    name : {'baseline', 'cnn2d', 'fcn', 'crnn', 'musicnn', 'musicnn_vgg', 'shortres', 'linear'}
        A key of ``MODELS``.
    n_bins : int
        Number of feature rows ``F`` of the input (e.g. 96, or 96 + 20 + 12 = 128 with MFCC
        and chroma).
    n_mels : int
        Number of mel rows at the top of the input.
    n_out : int
        Number of tags (for ``'linear'``: the embedding size unless ``dim`` is given).
    **kwargs
        Model-specific options, e.g. ``width`` for ``'shortres'``, ``dim`` for ``'linear'``.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        For an unknown name or inconsistent sizes.

    Examples
    --------
    >>> model = build_model("shortres", n_bins=96 + 20 + 12)
    >>> model(torch.zeros(2, 128, 188)).shape
    torch.Size([2, 50])
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](n_bins, n_mels=n_mels, n_out=n_out, **kwargs)


def build_embedding_model(name: str, n_bins: int, dim: int = 128, n_mels: int = 96, n_tags: int = 0,
                          **kwargs) -> nn.Module:
    """Build a metric-learning network by name.

    ``'linear'`` is :class:`LinearProjection` with ``dim`` outputs; the CNNs are wrapped in
    :class:`EmbeddingNet` with a ``dim``-dimensional projection. Every network gets a
    ``tag_head`` attribute: ``Linear(dim, n_tags)`` on the embedding when ``n_tags > 0``, for an
    auxiliary tag loss next to the triplet loss, else ``None``.

    Parameters
    ----------
    name : str
        A key of ``MODELS``.
    n_bins, n_mels : int
        As in :func:`build_model`.
    dim : int
        Embedding size.
    n_tags : int
        Outputs of ``tag_head``; 0 for none.
    **kwargs
        Passed to the model class.

    Returns
    -------
    torch.nn.Module
        ``forward(x) -> (B, dim)``; ``tag_head(forward(x)) -> (B, n_tags)`` when ``n_tags > 0``.
    """
    if n_tags < 0:
        raise ValueError(f"n_tags must be >= 0, got {n_tags}")
    if name == "linear":
        net = build_model(name, n_bins, n_mels=n_mels, dim=dim, **kwargs)
    else:
        net = EmbeddingNet(build_model(name, n_bins, n_mels=n_mels, **kwargs), dim)
    # Tags are dense supervision (every clip, every tag) where a batch yields few informative
    # triplets; predicting them linearly from the embedding shapes the space the triplets rank in.
    net.tag_head = nn.Linear(dim, n_tags) if n_tags else None
    return net
