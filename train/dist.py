"""Distributed training with torch.distributed, launched by torchrun; a plain run is one rank of one.

    torchrun --nproc-per-node N train/run.py ...                       # N processes on this machine
    torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT train/run.py ...

torchrun starts one process per device and tells each who it is through ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` (its device on its machine); without them every helper here answers as the one
process of a world of one and calls no collective, so a plain ``python train/run.py`` runs exactly
as before. The process group uses NCCL on CUDA (one GPU per local rank) and gloo on the CPU.

Everything else is what the training loop needs on top of ``DistributedDataParallel``: this rank's
share of a list (:func:`shard`), rank 0's answer handed to all (:func:`broadcast`,
:func:`from_main`, which also carries its exception), agreement on a flag (:func:`all_true`), sums
(:func:`sum_all`), the rows of a batch from every rank with the local rows' gradient kept
(:func:`gather_rows`), and torch.distributed.elastic's error report (:func:`record`).
"""
from __future__ import annotations

import functools
import os
import pickle
import sys

# torch loads inside the functions, so that the commands answer --help without it.


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``RANK``) started this process."""
    return int(os.environ.get("RANK", -1)) != -1


def rank() -> int:
    """This process's rank among all processes of the job (0 in a plain run)."""
    return int(os.environ.get("RANK", 0))


def world() -> int:
    """Number of processes of the job (1 in a plain run)."""
    return int(os.environ.get("WORLD_SIZE", 1)) if launched() else 1


def local_rank() -> int:
    """This process's rank on its machine, the index of its GPU (0 in a plain run)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Whether this is rank 0, the one process that logs, writes the run folder and evaluates."""
    return rank() == 0


def where() -> str:
    """``' (rank R of W)'`` under torchrun, for messages that must say which process failed; else ``''``."""
    return f" (rank {rank()} of {world()})" if launched() else ""


def shard(items, rank: int, world: int):
    """Share ``rank`` of ``world`` of ``items``: every ``world``-th item from position ``rank``.

    The shares of all ranks are disjoint, cover ``items`` and differ in length by at most one;
    strided rather than contiguous, so that each share of a P x K batch holds clips of every tag.

    Parameters
    ----------
    items : list or np.ndarray
    rank, world : int
        ``0 <= rank < world``.

    Returns
    -------
    list or np.ndarray
        Same type as ``items``.

    Examples
    --------
    >>> shard([0, 1, 2, 3, 4], 1, 2)
    [1, 3]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return items[rank::world]


def init(device: str = "auto", timeout_minutes: float = 10.0):
    """The device of this process, after joining the process group when torchrun started it.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}
        ``--device``; under torchrun CUDA means GPU ``LOCAL_RANK`` of this machine.
    timeout_minutes : float
        How long a collective waits for the other ranks before the job fails with an error, not a
        hang: a rank that dies ends the job at once (torchrun stops the others), this bounds a rank
        that is stuck.

    Returns
    -------
    torch.device

    Raises
    ------
    RuntimeError
        When this machine has fewer GPUs than processes.
    """
    from datetime import timedelta

    import torch
    import torch.distributed as td

    from features.device import pick_device

    dev = pick_device(device)
    if not launched():
        return dev
    if dev.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank()} has no GPU: this machine has "
                               f"{torch.cuda.device_count()}; start at most that many processes per node")
        dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)  # collectives and broadcast objects go through this GPU
    td.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return dev


def close() -> None:
    """Leave the process group (nothing in a plain run)."""
    if launched():
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def _active() -> bool:
    if world() == 1:
        return False
    import torch.distributed as td

    return td.is_initialized()


def broadcast(value):
    """Rank 0's ``value`` (any picklable object), returned on every rank; the others wait for it."""
    if not _active():
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def from_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on rank 0 alone; its result, or the exception it raised, on every rank.

    For what reads the run folder (which then needs to exist on rank 0's machine only) or needs
    doing once; an error there ends every rank with rank 0's message instead of leaving them waiting.
    """
    if not _active():
        return fn(*args, **kwargs)
    ok, value = True, None
    if is_main():
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # handed to the other ranks, then raised here with its traceback
            try:
                pickle.dumps(exc)
                shared = exc
            except Exception:
                shared = RuntimeError(f"{type(exc).__name__}: {exc}")
            broadcast((False, shared))
            raise
    ok, value = broadcast((ok, value))
    if not ok:
        raise value
    return value


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank: one decision that all ranks take together."""
    return sum_all(0 if flag else 1)[0] == 0  # the count of ranks where it fails


def sum_all(*values: float) -> list[float]:
    """``values`` summed over all ranks (float64), returned on every rank."""
    if not _active():
        return [float(v) for v in values]
    import torch
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=_device())
    td.all_reduce(t)
    return t.tolist()


def _device():
    import torch
    import torch.distributed as td

    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(*tensors, sizes=None):
    """The rows of every rank's ``tensors``, concatenated in rank order; ranks may hold different counts.

    The local rows are this rank's own tensors, so gradients flow through them (rows from other ranks
    carry none), scaled by the world size: when every rank computes the same loss over the whole
    gathered batch, DistributedDataParallel's mean of the ranks' gradients then equals the gradient
    of that loss in one process. (A rank's loss over only its own anchors would lose the terms
    where its clips serve another rank's anchors as positives or negatives.)

    Parameters
    ----------
    *tensors : torch.Tensor
        Each ``(B, ...)`` with the same ``B`` on this rank, on this rank's device.
    sizes : list of int, optional
        Every rank's ``B``, where the caller knows them (the ranks' shares of a planned batch). Without
        them the ranks exchange their sizes first, and the host waits for that to read them.

    Returns
    -------
    tuple of torch.Tensor
        Each ``(sum of all ranks' B, ...)``; the tensors themselves in a world of one.
    """
    if not _active():
        return tensors
    import torch
    import torch.distributed as td

    n, r, first = world(), rank(), tensors[0]
    if sizes is None:
        size = torch.tensor([len(first)], dtype=torch.int64, device=first.device)
        sizes = [torch.empty_like(size) for _ in range(n)]
        td.all_gather(sizes, size)
        sizes = [int(s) for s in sizes]
    elif len(sizes) != n or sizes[r] != len(first):
        raise ValueError(f"sizes {list(sizes)} are not {n} ranks' rows with {len(first)} on rank {r}")
    out = []
    for t in tensors:
        # all_gather needs equal shapes: pad to the largest share, cut each back to its size.
        pad = torch.cat([t.detach(), t.new_zeros((max(sizes) - len(t), *t.shape[1:]))])
        parts = [torch.empty_like(pad) for _ in range(n)]
        td.all_gather(parts, pad)
        parts = [p[:k] for p, k in zip(parts, sizes)]
        # Value t exactly, gradient n times t's: t - t.detach() is 0 with t's gradient.
        parts[r] = t + (n - 1) * (t - t.detach()) if t.requires_grad else t
        out.append(torch.cat(parts))
    return tuple(out)


def exit(code: int) -> None:
    """End the process with ``code``: ``sys.exit`` in a plain run, ``os._exit`` after a flush under torchrun.

    Call it last, once everything is written, closed and the process group is left. Under torchrun the
    interpreter's own shutdown is skipped because torch.distributed's C++ objects can abort the
    process in their exit-time destructors: twice in CI runs of the test suite a two-rank gloo job
    that had finished its work died with SIGABRT ("terminate called without an active exception",
    no Python frame left), which torchrun reports as a failed job. Nothing of ours is pending by
    then: logs are closed, and checkpoints and outputs were written atomically.
    """
    if not launched():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def report(exc: BaseException) -> None:
    """Under torchrun, leave ``exc`` in the error file that torchrun reads (nothing in a plain run).

    For an error the command answers with a message and an exit status rather than a traceback:
    torchrun's failure report then still names this rank, with this message, as the first failure
    (the other ranks fail after it, when their next collective finds it gone).
    """
    if launched() and os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)


def record(fn):
    """``fn`` under torch.distributed.elastic's ``@record`` when torchrun started it, as is otherwise.

    ``@record`` writes an uncaught exception's traceback to the file torchrun reads, so the job's
    failure report names the rank and shows its error; torch loads only under torchrun.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not launched():
            return fn(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record as elastic_record

        return elastic_record(fn)(*args, **kwargs)

    return wrapper
