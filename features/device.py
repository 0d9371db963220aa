"""Where torch runs: the one device rule of every command (extraction, training, tagging)."""
from __future__ import annotations


def pick_device(name: str = "auto"):
    """``'auto'``: CUDA when available, else the CPU; ``'cpu'`` and ``'cuda'`` as given (a ``torch.device``)."""
    import torch  # here: the command lines check --device before their heavy imports

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_error(name: str) -> str | None:
    """The ``--device`` message for a CUDA device asked where there is none; ``None`` when ``name`` can run."""
    if name != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return "--device cuda: no CUDA device is available here; use --device auto or cpu"


def bf16_supported(device) -> bool:
    """Whether bfloat16 autocast runs natively on ``device`` (CUDA with bf16, or a CPU with AVX-512 BF16 / AMX)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
