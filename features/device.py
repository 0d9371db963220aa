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


def to_device(x, device):
    """``x`` (an array or tensor) on ``device``, without making the host wait for the GPU.

    A plain ``tensor.to('cuda')`` from ordinary host memory waits until the copy is done, and with
    it every kernel queued before it, so a training step that copies a few indices stalls the
    host. From the CPU to CUDA the data goes through pinned memory (torch's caching host
    allocator, which keeps the buffer until the copy has run) with a non-blocking copy; anywhere
    else it is an ordinary ``.to``.

    Parameters
    ----------
    x : array-like or torch.Tensor
    device : torch.device

    Returns
    -------
    torch.Tensor
        On ``device``; ``x`` itself when it is a tensor there already.
    """
    import torch

    t = torch.as_tensor(x)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
