"""Training throughput of cnn2d: our memory-mapped feature feed against the course's pipeline, one run.

    python bench/bench_train.py [--features cache/features.h5] [--batches 20] [--batch 16] [--device auto]

Both train the same ``cnn2d`` (forward, BCE, backward, SGD step) with the same batch size, on the
same device, on the same clips:

* course: a Dataset that ``np.load``s each clip's whole 16 kHz waveform (.npy, as in gct634.tar.gz),
  takes a random 3 s crop, and a model that computes the mel spectrogram (nnAudio, then dB) inside
  its forward pass on every step;
* ours: ``train.feed.Crops`` reading standardised 188-frame crops of stored log-mel through
  ``numpy.memmap``.

Reported: clips/s of each, the ratio, and the fraction of step time spent waiting for data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnAudio.features import MelSpectrogram
from torch import nn
from torch.utils.data import DataLoader, Dataset

from data.audio import load_audio
from features.device import bf16_supported, pick_device
from train.feed import Crops, FeatureFile, standardizer
from train.models import build_model

REPO = Path(__file__).resolve().parents[1]
FRAMES = 188
SAMPLES = (FRAMES - 1) * 256  # center=True: this many samples give 188 frames


class WaveCrops(Dataset):
    """The course's feed: load the whole waveform file, cut a random crop."""

    def __init__(self, paths, labels):
        self.paths, self.labels = paths, labels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        y = np.load(self.paths[i])
        start = np.random.randint(0, len(y) - SAMPLES + 1)
        return torch.from_numpy(y[start:start + SAMPLES].copy()), torch.from_numpy(self.labels[i])


class MelThenCNN(nn.Module):
    """The course's model layout: spectrogram inside the network, recomputed every step."""

    def __init__(self):
        super().__init__()
        self.mel = MelSpectrogram(sr=16000, n_fft=512, hop_length=256, n_mels=96, fmax=8000, verbose=False)
        self.bn = nn.BatchNorm1d(96)  # stands in for standardisation of the dB input
        self.cnn = build_model("cnn2d", 96)

    def forward(self, y):
        s = 10 * torch.log10(self.mel(y).clamp(min=1e-10))
        return self.cnn(self.bn(s))


def throughput(model, loader, n_batches: int, device, bf16: bool = False) -> tuple[float, float]:
    """Clips per second over ``n_batches`` training steps (after one warm-up step) and data-wait share.

    ``bf16``: the trainer's default where supported: channels-last weights and bfloat16 autocast.
    """
    if bf16:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model.train()
    it = iter(loader)
    clips, wait, t0 = 0, 0.0, None
    for step in range(n_batches + 1):
        t = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if step == 1:
            t0, wait, clips = t, 0.0, 0
        wait += time.perf_counter() - t
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        clips += len(x)
    total = time.perf_counter() - t0
    return clips / total, wait / total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=REPO / "cache/features.h5")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    ff = FeatureFile(a.features, ("mel",))
    idx = ff.indices("train")
    from data.mtat import find_audio
    layout = find_audio(ff.header.source, ff.header.audio_kind)
    torch.manual_seed(0)
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # The course ships waveforms pre-decoded to .npy; make them once for the clips used.
        paths = []
        for i in idx:
            path = Path(tmp) / f"{i}.npy"
            np.save(path, load_audio(layout.path(ff.mp3_path[i])))
            paths.append(path)
        labels = ff.labels[idx].astype(np.float32)
        kw = dict(batch_size=a.batch, shuffle=True, drop_last=True, num_workers=a.workers)
        mean, std = standardizer(ff, idx)
        course_loader = DataLoader(WaveCrops(paths, labels), **kw)
        ours_loader = DataLoader(Crops(ff, idx, FRAMES, mean, std), collate_fn=Crops.collate, **kw)
        rows = {}  # name -> (clips/s, data wait)
        for bf16 in ((False, True) if bf16_supported(device) else (False,)):
            tag = " (bf16, channels-last)" if bf16 else " (fp32)"
            torch.manual_seed(0)
            rows["course: np.load waveform + mel in model" + tag] = throughput(
                MelThenCNN().to(device), course_loader, a.batches, device, bf16)
            torch.manual_seed(0)
            rows["ours: memmap HDF5 log-mel crops" + tag] = throughput(
                build_model("cnn2d", 96).to(device), ours_loader, a.batches, device, bf16)
    course = rows["course: np.load waveform + mel in model (fp32)"][0]
    best = max(v[0] for k, v in rows.items() if k.startswith("ours"))
    res = {"device": str(device), "batch": a.batch, "batches": a.batches, "workers": a.workers,
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "rows": {k: {"clips_per_s": v[0], "data_wait": v[1]} for k, v in rows.items()},
           "speedup_trainer_default_vs_course": best / course}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"cnn2d, batch {a.batch}, {a.batches} steps, {device}, {a.workers} loader workers\n")
        print("| pipeline | clips/s | x course (fp32) | data wait |\n|---|---|---|---|")
        for k, (v, w) in rows.items():
            print(f"| {k} | {v:.1f} | {v / course:.2f} | {100 * w:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
