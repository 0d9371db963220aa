"""Size and CPU training-step cost of every tagging network, as a ratio against cnn2d, in one run.

    python bench/bench_models.py [--models baseline,cnn2d,shortres,fcn,crnn,musicnn] [--batch 32]
                                 [--steps 10] [--threads N] [--precision fp32|bf16|both] [--json]

Each model is built as ``train/run.py --model NAME`` builds it for tagging (its default inputs, 96
mel bands plus MFCC and chroma rows where it reads them, 50 tags, channels-last) and timed on a
fixed random batch of 3-s crops (188 frames): forward, BCE on the logits, backward, after two
warm-up steps; the median of ``--steps`` steps is reported (no optimiser step, no data feed).
Models run interleaved, one step of each in turn, so that a change in the machine's load (other
processes) falls on all of them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from features.device import bf16_supported
from train.models import build_model, count_parameters
from train.registry import DEFAULT_INPUTS

BINS = {"mel": 96, "mfcc": 20, "chroma": 12}
FRAMES = 188


def step_time(model, x, y, bf16: bool) -> float:
    """Seconds of one forward + BCE + backward on ``x``."""
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    F.binary_cross_entropy_with_logits(out.float(), y).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="baseline,cnn2d,shortres,fcn,crnn,musicnn")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads; default torch's")
    p.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = a.models.split(",")
    if "cnn2d" not in names:
        p.error("--models must include cnn2d, the reference of the ratios")
    precisions = {"fp32": [False], "bf16": [True], "both": [False, True]}[a.precision]
    if True in precisions and not bf16_supported(torch.device("cpu")):
        p.error("this CPU has no native bfloat16")
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(a.batch, 50, generator=g) < 0.1).float()
    models, inputs = {}, {}
    for name in names:
        bins = sum(BINS[f] for f in DEFAULT_INPUTS[name].split(","))
        torch.manual_seed(0)
        models[name] = build_model(name, bins, n_mels=96, n_out=50).to(memory_format=torch.channels_last).train()
        inputs[name] = torch.randn(a.batch, bins, FRAMES, generator=g)
    res = {"batch": a.batch, "frames": FRAMES, "steps": a.steps, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "torch": torch.__version__, "models": {}}
    for bf16 in precisions:
        times = {n: [] for n in names}
        for step in range(a.steps + 2):
            for n in names:
                s = step_time(models[n], inputs[n], y, bf16)
                if step >= 2:
                    times[n].append(s)
        key = "bf16" if bf16 else "fp32"
        for n in names:
            row = res["models"].setdefault(n, {"inputs": DEFAULT_INPUTS[n], "bins": inputs[n].shape[1],
                                               "parameters": count_parameters(models[n])})
            row[f"{key}_s"] = statistics.median(times[n])
        for n in names:
            res["models"][n][f"{key}_x_cnn2d"] = res["models"][n][f"{key}_s"] / res["models"]["cnn2d"][f"{key}_s"]
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    keys = ["fp32", "bf16"] if a.precision == "both" else [a.precision]
    print(f"batch {a.batch} x {FRAMES} frames, forward + BCE + backward, median of {a.steps} steps, "
          f"{res['torch_threads']} torch threads, {res['cpus']} CPUs\n")
    print("| model | inputs (rows) | parameters | params x cnn2d |" + "".join(f" {k} s/batch | {k} x cnn2d |" for k in keys))
    print("|---" * (4 + 2 * len(keys)) + "|")
    ref = res["models"]["cnn2d"]["parameters"]
    for n, r in res["models"].items():
        cells = "".join(f" {r[f'{k}_s']:.3f} | {r[f'{k}_x_cnn2d']:.2f} |" for k in keys)
        print(f"| {n} | {r['inputs']} ({r['bins']}) | {r['parameters']:,} | {r['parameters'] / ref:.2f} |{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
