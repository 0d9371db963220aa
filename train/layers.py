"""Layers shared by the networks of ``train.models``: convolution blocks, SpecAugment, a residual
block, the embedding wrapper of metric learning, and what every network's set-up uses (parameter
count, the tag layer's prior init).

A new building block belongs here; a new architecture in ``train.models``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["conv_block", "conv_stack", "SpecAugment", "ResBlock2d", "EmbeddingNet", "count_parameters",
           "init_tag_prior"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of a model.

    Parameters
    ----------
    model : torch.nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def init_tag_prior(model: nn.Module, labels) -> bool:
    """Set the biases of a network's tag layer to the log-odds of each tag in ``labels``.

    A freshly initialised tag layer predicts 0.5 for every tag, while most tags are rare (a few
    per cent of MTAT's clips); the first steps then spend themselves on learning the base rates.
    A network can learn them by saturating its features instead of through the biases: the CRNN
    did, its GRU states pinned at +-1 and the same for every clip, and never recovered (validation
    ROC-AUC 0.60 -> 0.49 over 6 epochs on the demo corpus; 0.74 after 3 with this init). Starting
    from the base rates ("init well", Karpathy's recipe; the prior init of Lin et al.'s focal loss)
    removes that first phase for every network.

    Parameters
    ----------
    model : torch.nn.Module
        A tagging network (its ``head``, a ``Linear`` or a ``Sequential`` ending in one) or an
        embedding network with a ``tag_head``.
    labels : np.ndarray, shape (n_clips, n_tags)
        The training clips' 0/1 labels. A tag's rate is smoothed to ``(positives + 0.5) /
        (n_clips + 1)``, so that a tag absent from the split gets a finite bias.

    Returns
    -------
    bool
        Whether the network had a tag layer (an embedding network without ``tag_head`` has none).
    """
    layer = getattr(model, "tag_head", None) or getattr(model, "head", None)
    if isinstance(layer, nn.Sequential):
        layer = layer[-1]
    if not isinstance(layer, nn.Linear):
        return False
    labels = torch.as_tensor(labels, dtype=torch.float64)
    if labels.shape[1] != layer.out_features:
        raise ValueError(f"labels have {labels.shape[1]} tags, the tag layer {layer.out_features}")
    rate = (labels.sum(0) + 0.5) / (len(labels) + 1)
    with torch.no_grad():
        layer.bias.copy_(torch.log(rate / (1 - rate)))
    return True


def conv_block(c_in: int, c_out: int, pool: tuple[int, int], act: type[nn.Module] = nn.ReLU,
               dropout: float = 0.0) -> nn.Sequential:
    """``Conv2d(3x3, padding=1)`` - ``BatchNorm2d`` - ``act()`` - ``MaxPool2d(pool)`` [- ``Dropout``].

    The 2-D block of :class:`CNN2D`, :class:`FCN` and :class:`CRNN`. ``padding=1`` keeps the map
    size through the convolution, so only the pool shrinks it: ``(H, W) -> (H // p0, W // p1)``.
    Index 0 is the conv and 1 the batch norm, whatever the activation (checkpoint keys rely on it).

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    pool : tuple of int
        Max-pool size (and stride) over (mel, time).
    act : type
        Activation class, called without arguments.
    dropout : float
        Dropout after the pool; none when 0.

    Returns
    -------
    torch.nn.Sequential
    """
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), act(), nn.MaxPool2d(pool)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def conv_stack(channels, pools, act: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """:func:`conv_block` after :func:`conv_block` over a one-channel image, ``channels[i]`` wide.

    ``stack[i]`` maps ``(B, C, H, W)`` to the next map, so the blocks can be run one by one.
    """
    c_in = [1, *channels[:-1]]
    return nn.Sequential(*(conv_block(a, b, p, act, dropout) for a, b, p in zip(c_in, channels, pools)))


def _check_stack(model: str, pools, channels, n_mels: int) -> None:
    # One width per pool, and enough mel rows for the pools to leave at least one.
    if len(channels) != len(pools):
        raise ValueError(f"{model} has {len(pools)} conv blocks, got {len(channels)} channel sizes")
    mel_pool = math.prod(p[0] for p in pools)
    if n_mels < mel_pool:
        raise ValueError(f"{model} pools the mel axis by {mel_pool}, so it needs n_mels >= {mel_pool}, got {n_mels}")


class SpecAugment(nn.Module):
    """SpecAugment-style masking of standardised features, active only in training mode.

    Each example gets ``n_freq_masks`` bands of up to ``freq_width`` consecutive mel rows and
    ``n_time_masks`` spans of up to ``time_width`` consecutive frames set to 0, which is the
    training-set mean after standardisation. Widths and positions are drawn uniformly from
    torch's default RNG, so ``torch.manual_seed`` makes them reproducible. Frequency masks
    touch only the first ``n_mels`` rows (masking MFCC/chroma rows as "frequency" would mean
    nothing); time masks cover all rows so every feature loses the same frames.

    In eval mode the input is returned unchanged.

    Parameters
    ----------
    n_mels : int
        Number of mel rows at the top of the input.
    n_freq_masks, freq_width : int
        Number of frequency masks and their maximum width in rows.
    n_time_masks, time_width : int
        Number of time masks and their maximum width in frames.

    References
    ----------
    Park et al., "SpecAugment: A simple data augmentation method for automatic speech
    recognition", Interspeech 2019.
    """

    def __init__(
        self,
        n_mels: int,
        n_freq_masks: int = 2,
        freq_width: int = 12,
        n_time_masks: int = 2,
        time_width: int = 20,
    ):
        super().__init__()
        self.n_mels = n_mels
        self.n_freq_masks, self.freq_width = n_freq_masks, freq_width
        self.n_time_masks, self.time_width = n_time_masks, time_width

    @staticmethod
    def _band_mask(batch: int, n_masks: int, max_width: int, size: int, device) -> torch.Tensor:
        # (batch, size) boolean mask, the union of n_masks random bands per row.
        max_width = min(max_width, size)
        if n_masks <= 0 or max_width <= 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        width = (torch.rand(batch, n_masks, 1, device=device) * (max_width + 1)).floor()
        start = (torch.rand(batch, n_masks, 1, device=device) * (size - width + 1)).floor()
        pos = torch.arange(size, device=device)
        return ((pos >= start) & (pos < start + width)).any(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Masked copy of ``x`` ``(B, F, T)`` in training mode, ``x`` itself in eval mode."""
        if not self.training:
            return x
        b, f, t = x.shape
        n_mels = min(self.n_mels, f)
        freq = self._band_mask(b, self.n_freq_masks, self.freq_width, n_mels, x.device)
        if n_mels < f:
            freq = torch.cat([freq, freq.new_zeros(b, f - n_mels)], dim=1)
        time = self._band_mask(b, self.n_time_masks, self.time_width, t, x.device)
        return x.masked_fill(freq[:, :, None] | time[:, None, :], 0.0)

    def extra_repr(self) -> str:
        return (
            f"n_mels={self.n_mels}, freq={self.n_freq_masks}x{self.freq_width}, "
            f"time={self.n_time_masks}x{self.time_width}"
        )


class ResBlock2d(nn.Module):
    """Residual block: two 3x3 conv-BN layers, a shortcut, ReLU after the sum.

    The shortcut is a 1x1 conv + BN when the channel count changes, the identity otherwise.
    Convolutions have no bias because BatchNorm follows each of them.

    Parameters
    ----------
    c_in, c_out : int
        Input and output channels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class EmbeddingNet(nn.Module):
    """A backbone's ``embed`` followed by a linear map to a ``dim``-dimensional embedding.

    Turns any tagging network of this module into a metric-learning network; the backbone's
    tag head is left unused. The output is not L2-normalised: the cosine triplet loss
    normalises, and a Euclidean one should not.

    Parameters
    ----------
    backbone : torch.nn.Module
        Has ``embed(x) -> (B, backbone.embed_dim)``.
    dim : int
        Output embedding size.

    Attributes
    ----------
    backbone : torch.nn.Module
    proj : torch.nn.Linear
    embed_dim : int
        ``dim``.
    """

    def __init__(self, backbone: nn.Module, dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.embed_dim, dim)
        self.embed_dim = dim
        self.n_bins = getattr(backbone, "n_bins", None)
        self.min_frames = getattr(backbone, "min_frames", 1)
        if hasattr(backbone, "max_frames"):  # a network of fixed-length patches (musicnn_vgg)
            self.max_frames = backbone.max_frames
        self.channels_last = getattr(backbone, "channels_last", True)  # the memory format the backbone runs best in

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding, ``(B, dim)``."""
        return self.proj(self.backbone.embed(x))

    @torch.no_grad()
    def start_at_backbone(self, feats: torch.Tensor | None = None) -> None:
        """Start the embedding where the backbone's own is: the usual start of metric learning kept, not scrambled.

        A backbone trained for tagging already embeds clips well (its penultimate layer is a good
        similarity space); a random ``proj`` would throw that geometry away and the metric stage
        would spend its epochs getting back to it. ``proj`` becomes ``[I; 0]`` when ``dim`` is at
        least the backbone's width (cosine distances unchanged), else the projection on the top
        ``dim`` right singular vectors of ``feats`` (backbone embeddings of training clips, the
        closest rank-``dim`` map). A ``tag_head`` starts as the backbone's tag layer seen through it.
        """
        w_in, dim = self.proj.in_features, self.proj.out_features
        if w_in <= dim:
            w = torch.zeros(dim, w_in)
            w[:w_in] = torch.eye(w_in)
        else:
            if feats is None:
                raise ValueError(f"the backbone is {w_in} wide, more than dim={dim}: pass embeddings to project")
            # full matrices only for fewer clips than the width, where the reduced Vh has too few rows;
            # else they would build an unused N x N U (MTAT: 15k training clips, GBs)
            w = torch.linalg.svd(feats.double(), full_matrices=len(feats) < w_in)[2][:dim].float()
        self.proj.weight.copy_(w.to(self.proj.weight.device))
        self.proj.bias.zero_()
        head = getattr(self.backbone, "head", None)
        head = head[-1] if isinstance(head, nn.Sequential) else head
        tag_head = getattr(self, "tag_head", None)
        if isinstance(head, nn.Linear) and isinstance(tag_head, nn.Linear) and \
                head.out_features == tag_head.out_features:
            tag_head.weight.copy_(head.weight @ self.proj.weight.T)  # head(proj^T proj e): proj is orthonormal
            tag_head.bias.copy_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(x)
