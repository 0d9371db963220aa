"""Training throughput with 1 and N processes under torchrun (DistributedDataParallel), one script.

    python bench/bench_ddp.py [--features cache/features-300.h5] [--nproc 1,2] [--model cnn2d]
                              [--batch 16] [--steps 20] [--device auto] [--json]

Each configuration is a real ``train/run.py`` run of two epochs capped at ``--steps`` steps
(validation and test still run, but are not timed); the figure is the second epoch's training
clips/s over all ranks (``history[-1]['clips_per_s']`` of ``last.pt``), so start-up and the first
epoch's warm-up are left out. The reference is a plain one-process ``python train/run.py``; then
for every N of ``--nproc`` a torchrun run with the same global ``--batch`` (strong scaling: the
same steps, each rank computes batch/N) and, for N > 1, one with ``--batch`` x N (weak scaling:
each rank computes ``--batch``, N times the clips per step). torchrun gives each of N > 1 processes
one OpenMP thread unless ``OMP_NUM_THREADS`` is set; the plain run uses every core.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clips_per_s(cmd: list[str], out: Path) -> float:
    """Run one training command; the last epoch's training clips/s (over all ranks)."""
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    import torch

    return float(torch.load(out / "last.pt", weights_only=False)["history"][-1]["clips_per_s"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=REPO / "cache/features-300.h5")
    p.add_argument("--nproc", default="1,2", help="process counts to run under torchrun, e.g. 1,2,4,8")
    p.add_argument("--model", default="cnn2d")
    p.add_argument("--batch", type=int, default=16, help="global batch of the reference and strong-scaling runs")
    p.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    nprocs = [int(n) for n in a.nproc.split(",")]
    if not a.features.is_file():
        p.error(f"--features {a.features}: not found; run `make demo DEMO_CLIPS=300` or pass a features file")
    common = ["--features", str(a.features), "--model", a.model, "--epochs", "2", "--steps-per-epoch",
              str(a.steps), "--crops-per-clip", "1", "--device", a.device, "--quiet"]
    rows = []  # (launch, processes, global batch, clips/s)
    with tempfile.TemporaryDirectory() as tmp:
        def one(name: str, launcher: list[str], n: int, batch: int) -> None:
            out = Path(tmp) / name
            rate = clips_per_s([*launcher, "train/run.py", *common, "--batch", str(batch), "--out", str(out)], out)
            rows.append((name, n, batch, rate))

        one("plain", [sys.executable], 1, a.batch)
        for n in nprocs:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
            one(f"torchrun-{n}", torchrun, n, a.batch)
            if n > 1:
                one(f"torchrun-{n}-weak", torchrun, n, a.batch * n)
    ref = rows[0][3]
    res = {"model": a.model, "device": a.device, "steps": a.steps, "cpus": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "rows": [{"run": r, "processes": n, "global_batch": b, "per_rank_batch": b // n, "clips_per_s": v,
                     "x_plain": v / ref} for r, n, b, v in rows]}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{a.model}, {a.steps} steps per epoch, device {a.device}, {os.cpu_count()} CPUs\n")
        print("| run | processes | global batch | per-rank batch | clips/s | x plain |\n|---|---|---|---|---|---|")
        for r in res["rows"]:
            print(f"| {r['run']} | {r['processes']} | {r['global_batch']} | {r['per_rank_batch']} | "
                  f"{r['clips_per_s']:.1f} | {r['x_plain']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
