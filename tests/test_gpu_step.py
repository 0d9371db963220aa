"""A training step queues its GPU work and moves on: nothing in it makes the host wait for the device.

On a GPU the host must run ahead of the device, or every step's Python and kernel launches leave the
GPU idle. An op that reads a value back (``.item()``, ``bool(t)``), whose output size depends on the
data (``nonzero``, boolean indexing) or that builds a tensor from Python data (a blocking copy) makes
the host wait for every kernel queued before it. The CPU test runs the step of every task, loss and
mining on the meta device, where reading data back raises; the CUDA test (skipped here) asks CUDA
itself, blocking copies and the resident feed included.
"""
import pytest
import torch

from tests.conftest import tiny_features
from train import run
from train.feed import Crops, FeatureFile, Resident, ResidentCrops, standardizer
from train.loop import place
from train.modes import TrainForward, make_mode

RUNS = {
    "tagging": [],
    "contrastive-overlap": ["--task", "metric"],  # metric learning's default
    "contrastive-instance": ["--task", "metric", "--sampler", "instance"],  # weights from the sampler's masks
    "triplet-semihard": ["--task", "metric", "--loss", "triplet"],
    "triplet-hard": ["--task", "metric", "--loss", "triplet", "--mining", "hard", "--negatives", "disjoint"],
    "sampled-triplets": ["--task", "metric", "--mining", "none"],  # the course's
}


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    return tiny_features(tmp_path_factory.mktemp("step"), "mel,mfcc,chroma", 4)


def step_parts(feats, argv, device, resident=False, bf16=False):
    """The mode, training pass and optimiser of ``argv``, and its first planned batch (crops, tags, masks)."""
    cfg = run.parse_args(["--features", str(feats), "--batch", "16", *argv])
    ff = FeatureFile(feats, cfg.inputs)
    idx = ff.indices("train")
    mode = make_mode(cfg)
    mode.prepare(ff, idx, ff.labels[idx])
    torch.manual_seed(0)
    model = mode.network(ff)
    place(model, device)  # channels-last, as the trainer places it
    net = TrainForward(model, bf16=bf16)
    opt = torch.optim.AdamW(model.parameters(), fused=device.type == "cuda")
    mean, std = standardizer(ff, idx)
    length = ff.params.frames(cfg.seconds)
    crops = ResidentCrops(ff, idx, length, mean, std, "random", Resident(ff, idx, device)) if resident \
        else Crops(ff, idx, length, mean, std, "random")
    batches = mode.plan(len(idx), 1, len(idx), epoch=1)
    share = mode.share(batches[0])
    return mode, net, opt, crops, share, next(mode.masks(batches, 1))


@pytest.mark.parametrize("name", RUNS)
def test_the_training_step_never_waits_for_the_device(feats, name):
    # On the meta device tensors have shapes but no data: an op that would read the device's data back
    # (.item(), bool(t), nonzero, boolean indexing) raises there. The sampler's masks stay on the host.
    mode, net, _, crops, share, masks = step_parts(feats, RUNS[name], torch.device("cpu"))
    meta = torch.device("meta")
    net.to(meta)
    x, y = (t.to(meta) for t in crops.__getitems__(share))
    loss = mode.loss(net, x, y, masks)
    loss.backward()
    assert loss.shape == () and all(p.grad is None or p.grad.device == meta for p in net.parameters())
    assert any(p.grad is not None for p in net.parameters())


def test_the_meta_device_raises_where_a_gpu_would_wait():
    x = torch.randn(6, 3, device="meta")
    for waits in (lambda: x[x > 0], lambda: bool(x.any()), lambda: float(x.sum()), lambda: x.nonzero()):
        with pytest.raises((RuntimeError, NotImplementedError)):
            waits()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", RUNS)
def test_the_training_step_never_waits_on_cuda(feats, name):
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    # as the trainer runs on a GPU: the resident feed, channels-last, bf16 autocast, the fused optimiser
    mode, net, opt, crops, share, masks = step_parts(feats, RUNS[name], device, resident=True, bf16=True)
    for check in (False, True):  # the first step allocates the optimiser's state and tunes cuDNN: not checked
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if check else "default")
        try:
            x, y = crops.__getitems__(share)  # gathered on the GPU
            loss = mode.loss(net, x, y, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


def test_the_start_line_says_which_flags_keep_a_gpu_busy():
    from train.loop import gpu_hint

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert "--compile" in gpu_hint(run.parse_args([]), cuda) and "--batch 256" in gpu_hint(run.parse_args([]), cuda)
    assert gpu_hint(run.parse_args([]), cpu) == ""  # nothing to say on the CPU
    assert gpu_hint(run.parse_args(["--compile"]), cuda) == gpu_hint(run.parse_args(["--batch", "256"]), cuda) == ""
