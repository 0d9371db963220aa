"""The GPU machine's benchmark, in one command: MTAT's full size from raw MP3s to a trained model.

    python bench/bench_gpu.py [--csv ../shared/mtat-real/annotations_final.csv] [--work cache/gpu]
                              [--rows 0] [--pool 128] [--stages corpus,decode,extract,tests,train,ceiling]
                              [--json cache/gpu/gpu.json] [--md cache/gpu/gpu.md]

On a GPU machine (``bench/gpu.sh`` sets one up from carried wheels) it runs, each stage timed, in
this order:

* corpus: ``data/fullscale.py`` lays out MTAT's 25,863 clips of 29.1 s (hard links to ``--pool``
  rendered clips; ``--rows N`` keeps the first N rows for a dry run on a small machine);
* decode: the decode floor, clips/s of the decoder alone in as many worker processes as cores
  (``pipeline.engine.ClipSource`` in a DataLoader), the rate extraction cannot beat;
* extract: ``pipeline/extract.py`` (mel+MFCC+chroma, float16, standard split), killed with SIGKILL
  at 30 % and resumed, with the GPU's utilisation sampled by ``nvidia-smi``: clips/s against the floor;
* ceiling: the default network's FLOPs per crop (forward and backward, ``FlopCounterMode``)
  against the GPU's measured bf16 matrix rate: how far the trainer is from the hardware;
* train: ``train/run.py`` for one whole epoch with validation and test, at the defaults, for
  ``--task metric`` and at ``--batch 256``, each with its crops/s, data wait and seconds; with
  ``--compile`` at both batches (two capped epochs, the second timed, after compiling); under
  ``torchrun --nproc-per-node 1`` (NCCL); a 20-epoch run and MTAT from MP3s to test scores are
  projected from them;
* tests: the CUDA tests (``pytest -k cuda``), which skip on a machine without a GPU.

A lent GPU machine gives a command minutes, not hours: past ``--budget`` seconds (less 90 s kept for
the tests) a training run is cut (its last whole epoch still counts) and what is left is not run,
and the results so far are written after every stage and run, so a command killed from outside
still returns them. Everything lands in one JSON and a markdown table for ``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from bench_scale import _done_fraction, run_stage  # noqa: E402

STAGES = ("corpus", "decode", "extract", "ceiling", "train", "tests")
PY = sys.executable


def gpu_sampler(stop: threading.Event, samples: list) -> None:
    """Append the GPU's utilisation (%) every second until ``stop``; nothing where there is no nvidia-smi."""
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.split()
            samples.append(float(out[0]))
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return
        stop.wait(1.0)


def corpus(a) -> dict:
    csv = a.csv
    if a.rows:  # a dry run: the first rows of the annotation file
        lines = csv.read_text().splitlines(keepends=True)
        csv = a.work / "annotations_head.csv"
        csv.write_text("".join(lines[:a.rows + 1]))
    t = time.perf_counter()
    subprocess.run([PY, "data/fullscale.py", str(csv), "--out", str(a.data), "--pool", str(a.pool), "--quiet"],
                   cwd=REPO, check=True)
    return {"seconds": time.perf_counter() - t, "rows": sum(1 for _ in open(csv)) - 1}


def decode_floor(a, limit: int = 4000) -> dict:
    """Clips/s of decoding alone, in ``os.cpu_count()`` DataLoader workers."""
    from torch.utils.data import DataLoader

    from data.mtat import find_audio, read_annotations
    from pipeline.engine import ClipSource

    layout = find_audio(a.data, "auto")
    paths = [layout.path(p) for p in read_annotations(a.data / "annotations_final.csv", "standard")["mp3_path"]]
    paths = paths[:limit]
    workers = os.cpu_count() or 1
    source = ClipSource(paths, 16000, 600 * 16000, {})
    t = time.perf_counter()
    n = sum(1 for _ in DataLoader(source, batch_size=None, num_workers=workers, prefetch_factor=4))
    seconds = time.perf_counter() - t
    return {"clips": n, "workers": workers, "seconds": seconds, "clips_per_s": n / seconds}


def log_tail(log: Path, start: int, lines: int = 30) -> str:
    """The last ``lines`` lines ``log`` got after byte ``start``: what a failed command said."""
    with open(log, "rb") as fh:
        fh.seek(start)
        return "\n".join(fh.read().decode(errors="replace").strip().splitlines()[-lines:])


def extract_stage(a, feats: Path, log: Path) -> dict:
    """:func:`extract` on the device the pipeline picks; if that breaks, what it said and a CPU run after it,
    so that the training runs are still measured."""
    r = extract(a, feats, log)
    if "error" in r:
        r = {"first_try": r, **extract(a, feats, log, device="cpu")}
        if "error" in r:
            a.save()
            raise SystemExit(f"extraction failed on the GPU and on the CPU: see {log}")
    return r


def extract(a, feats: Path, log: Path, device: str = "auto") -> dict:
    cmd = [PY, "pipeline/extract.py", "--data", str(a.data), "--split", "standard", "--features", "mel,mfcc,chroma",
           "--out", str(feats), "--dtype", "float16", "--device", device, "--quiet"]
    part = feats.with_name(feats.name + ".part")
    feats.unlink(missing_ok=True)
    part.unlink(missing_ok=True)
    stop, util = threading.Event(), []
    th = threading.Thread(target=gpu_sampler, args=(stop, util), daemon=True)
    th.start()
    start = log.stat().st_size if log.exists() else 0
    first = run_stage(cmd, log, lambda: _done_fraction(part) >= 0.3)
    second = run_stage(cmd, log) if first["killed"] else None
    stop.set()
    last = second or first
    if last["rc"] != 0:
        return {"device": device, "rc": last["rc"], "error": log_tail(log, start)}
    import h5py

    with h5py.File(feats, "r") as f:
        n = int((f["status"][:] == 1).sum())
    seconds = first["seconds"] + (second["seconds"] if second else 0.0)
    tail = [ln for ln in log.read_text().splitlines() if ln.startswith(("time ", "rhythm ", "start-up"))][-3:]
    return {"device": device, "clips": n, "seconds": seconds, "clips_per_s": n / seconds, "resumed": bool(second),
            "peak_anon_gib": max(first["peak_anon_gib"], last["peak_anon_gib"]),
            "gpu_util_mean": sum(util) / len(util) if util else None,
            "gpu_util_median": sorted(util)[len(util) // 2] if util else None, "summary": tail,
            "file_gib": feats.stat().st_size / 2**30}


def cuda_tests(a) -> dict:
    t = time.perf_counter()
    cmd = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/test_extract.py",
           "tests/test_train.py", "tests/test_gpu_step.py"]
    try:
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(1.0, a.left()))
    except subprocess.TimeoutExpired as exc:
        return {"rc": None, "summary": f"cut at the budget after {time.perf_counter() - t:.0f} s",
                "tail": (exc.stdout or b"")[-2000:].decode(errors="replace")}
    lines = res.stdout.strip().splitlines() or [""]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    out = {"rc": res.returncode, "summary": lines[-1], "failed": failed, "seconds": time.perf_counter() - t}
    if res.returncode not in (0, 1) or not lines[-1]:  # pytest itself broke (an import, a usage error): say how
        err = res.stderr.strip().splitlines()
        out.update(summary=f"pytest broke (rc {res.returncode}): {(err or lines)[-1]}", tail="\n".join(err[-30:]))
    return out


#: name: (extra arguments, epochs), in the order they run (the most wanted first: a run past the budget
#: is cut and the later ones are left out); the compiled runs are timed on their second epoch (after
#: compiling); torchrun1 runs under ``torchrun --nproc-per-node 1`` (NCCL).
TRAIN_RUNS = {"default": ([], 1), "metric": (["--task", "metric"], 1), "batch256": (["--batch", "256"], 1),
              "compile": (["--compile", "--steps-per-epoch", "1500"], 2),
              "batch256-compile": (["--batch", "256", "--compile", "--steps-per-epoch", "300"], 2),
              "torchrun1": (["--steps-per-epoch", "300"], 1)}
#: Seconds of the budget the training runs leave to the CUDA tests.
TESTS_RESERVE = 90.0
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]


def last_epoch(log: Path) -> dict:
    """Number, crops/s and data wait of the last epoch line of a run's ``train.log``."""
    import re

    lines = [ln for ln in log.read_text().splitlines() if re.match(r"epoch +\d+ +train_loss", ln)]
    m = re.search(r"epoch +(\d+) .*?(\d+) clips/s +data wait ([\d.]+)%", lines[-1]) if lines else None
    return {"last_epoch": int(m[1]), "last_epoch_crops_per_s": float(m[2]),
            "last_epoch_data_wait": float(m[3]) / 100} if m else {}


def train_runs(a, feats: Path, log: Path, out: dict) -> dict:
    """Each of ``TRAIN_RUNS`` in turn into ``out``, saved after each; a run past the budget is cut (its
    last whole epoch still counts), and the runs after it are left out."""
    for name, (extra, epochs) in TRAIN_RUNS.items():
        if a.left() - a.reserve <= 0:
            out[name] = {"skipped": "no budget left"}
            continue
        folder = a.work / f"run-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        launch = [PY, *TORCHRUN] if name == "torchrun1" else [PY]
        start = log.stat().st_size if log.exists() else 0
        st = run_stage([*launch, "train/run.py", "--features", str(feats), "--epochs", str(epochs),
                        "--out", str(folder), "--quiet", *extra], log, lambda: a.left() - a.reserve <= 0)
        r = out[name] = {"rc": st["rc"], "cut": st["killed"], "seconds": st["seconds"], "epochs": epochs}
        if st["rc"] != 0 and not st["killed"]:
            r["error"] = log_tail(log, start)
        if (folder / "train.log").is_file():
            first = (folder / "train.log").read_text().splitlines()[:1]  # empty if cut before its first line
            r.update(start_line=(first or [""])[0], **last_epoch(folder / "train.log"))
        if st["rc"] == 0:
            m = json.loads((folder / "metrics.json").read_text())
            r.update(crops_per_s=m["train_clips_per_s"], data_wait=m["data_wait_mean"], run_seconds=m["seconds"],
                     **{k: v for k, v in m.items() if k.startswith("test_") and not isinstance(v, dict)})
        a.save()
    return out


def ceiling() -> dict:
    """FLOPs of one training crop of the default network, and the device's measured bf16 matrix rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from train.models import build_model

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model("shortres", 96 + 20 + 12).to(dev)
    x = torch.randn(8, 128, 188, device=dev)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    flops = fc.get_total_flops() / 8
    n = 8192 if dev.type == "cuda" else 1024
    m1 = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        m1 @ m1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        m1 @ m1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    rate = 2 * n ** 3 * reps / (time.perf_counter() - t)
    return {"device": str(dev), "gflop_per_crop": flops / 1e9, "bf16_tflops": rate / 1e12,
            "crops_per_s_at_ceiling": rate / flops}


def table(res: dict) -> str:
    rows = ["| measured | figure |", "|---|---|"]
    st = res["stages"]
    if "decode" in st:
        d = st["decode"]
        rows.append(f"| decode floor, {d['workers']} workers | {d['clips_per_s']:.0f} clips/s |")
    if "extract" in st and "first_try" in st["extract"]:
        rows.append(f"| extract on the GPU | failed (rc {st['extract']['first_try']['rc']}): "
                    f"{(st['extract']['first_try']['error'].splitlines() or [''])[-1]}; extracted on the CPU instead |")
    if "extract" in st:
        e = st["extract"]
        floor = st.get("decode", {}).get("clips_per_s")
        vs = f" ({100 * e['clips_per_s'] / floor:.0f} % of the floor)" if floor else ""
        util = f"; GPU busy {e['gpu_util_mean']:.0f} % on average" if e.get("gpu_util_mean") is not None else ""
        rows.append(f"| extract {e['clips']} clips, float16, device {e['device']}, killed at 30 % and resumed | "
                    f"{e['seconds']:.1f} s = {e['clips_per_s']:.0f} clips/s{vs}{util}; "
                    f"peak {e['peak_anon_gib']:.2f} GiB |")
    for name, r in st.get("train", {}).items():
        why = f": {r['error'].splitlines()[-1]}" if r.get("error") else ""
        if "crops_per_s" in r:
            what = "one epoch + validation + test" if r.get("epochs", 1) == 1 else \
                f"{r['epochs']} capped epochs, the last timed"
            rate = r.get("last_epoch_crops_per_s", r["crops_per_s"])
            wait = r.get("last_epoch_data_wait", r["data_wait"])
            rows.append(f"| train {name}: {what} | {r['seconds']:.1f} s; {rate:.0f} crops/s, "
                        f"data wait {100 * wait:.1f} % |")
        elif "skipped" in r:
            rows.append(f"| train {name} | not run: {r['skipped']} |")
        elif "last_epoch_crops_per_s" in r:
            compiling = " (the compiling epoch)" if "compile" in name and r["last_epoch"] == 1 else ""
            rows.append(f"| train {name} | {'cut at the budget' if r['cut'] else 'failed'} after {r['seconds']:.0f} s;"
                        f" its last whole epoch, {r['last_epoch']}{compiling}: {r['last_epoch_crops_per_s']:.0f} "
                        f"crops/s, data wait {100 * r['last_epoch_data_wait']:.1f} %{why} |")
        else:
            rows.append(f"| train {name} | {'cut at the budget' if r.get('cut') else 'failed'} after "
                        f"{r.get('seconds', 0):.0f} s (rc {r.get('rc')}), before an epoch ended{why} |")
    if "ceiling" in st:
        c = st["ceiling"]
        rows.append(f"| ceiling | shortres {c['gflop_per_crop']:.2f} GFLOP per crop (fwd+bwd); bf16 matmul "
                    f"{c['bf16_tflops']:.0f} TFLOP/s = {c['crops_per_s_at_ceiling']:.0f} crops/s |")
    if "projected" in res:
        p = res["projected"]
        rows.append(f"| projected | 20 epochs {p['twenty_epochs_s']:.0f} s; MP3s to test scores "
                    f"{p['mp3_to_scores_s']:.0f} s |")
    if "tests" in st:
        failed = "".join("; " + f for f in st["tests"].get("failed", []))
        rows.append(f"| CUDA tests | {st['tests']['summary']}{failed} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_gpu.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--csv", type=Path, default=REPO.parent / "shared/mtat-real/annotations_final.csv",
                   help="the real annotation file")
    p.add_argument("--work", type=Path, default=REPO / "cache/gpu", help="folder for the corpus, features, runs")
    p.add_argument("--rows", type=int, default=0, help="keep the first N rows of the annotation file (0: all)")
    p.add_argument("--pool", type=int, default=128, help="distinct rendered clips of the corpus")
    p.add_argument("--stages", default=",".join(STAGES), help=f"any of {', '.join(STAGES)}")
    p.add_argument("--json", type=Path, default=None, help="default WORK/gpu.json")
    p.add_argument("--md", type=Path, default=None, help="default WORK/gpu.md")
    p.add_argument("--log", type=Path, default=None,
                   help="what the timed commands print, tracebacks included; default WORK/bench_gpu.log")
    p.add_argument("--budget", type=float, default=420,
                   help="seconds for the whole benchmark: a training run still going 90 s before it is cut and later "
                        "runs are left out, so that the CUDA tests have those 90 s (the results so far are written "
                        "after every stage and run)")
    a = p.parse_args(argv)
    stages = [s for s in a.stages.split(",") if s]
    if set(stages) - set(STAGES):
        p.error(f"--stages: unknown {', '.join(sorted(set(stages) - set(STAGES)))}")
    if "corpus" in stages and not a.csv.is_file():
        p.error(f"--csv {a.csv}: not found")
    a.work.mkdir(parents=True, exist_ok=True)
    a.data, feats, log = a.work / "mtat-full", a.work / "features.h5", a.log or a.work / "bench_gpu.log"
    import torch

    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
           "torch": torch.__version__, "budget_s": a.budget, "stages": {}}
    t0 = time.perf_counter()
    a.left = lambda: a.budget - (time.perf_counter() - t0)
    a.reserve = TESTS_RESERVE if "tests" in stages else 0.0  # the training runs leave this to the tests
    a.save = lambda: save(res, a.json or a.work / "gpu.json", a.md or a.work / "gpu.md")
    for stage, fn in (("corpus", lambda: corpus(a)), ("decode", lambda: decode_floor(a)),
                      ("extract", lambda: extract_stage(a, feats, log)), ("ceiling", ceiling),
                      ("train", lambda: train_runs(a, feats, log, res["stages"].setdefault("train", {}))),
                      ("tests", lambda: cuda_tests(a))):
        if stage in stages:
            res["stages"][stage] = fn() if stage != "tests" or a.left() > 0 else {"summary": "not run: no budget left"}
            a.save()
            print(f"{stage}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(res))
    return 0


def save(res: dict, json_path: Path, md_path: Path) -> None:
    """``res`` (with the projections its figures allow) as JSON and as the markdown table, replaced whole."""
    tr, ex = res["stages"].get("train", {}).get("default", {}), res["stages"].get("extract")
    if "run_seconds" in tr and ex:
        res["projected"] = {"twenty_epochs_s": 20 * tr["run_seconds"],
                            "mp3_to_scores_s": ex["seconds"] + 20 * tr["run_seconds"]}
    for path, text in ((json_path, json.dumps(res, indent=2, default=float)),
                       (md_path, f"{res['machine']}, torch {res['torch']}\n\n{table(res)}\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
