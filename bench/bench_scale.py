"""Every stage of the pipeline at MTAT's full size: wall time, clips/s and peak memory per stage.

    python bench/bench_scale.py [--data cache/mtat-full] [--work cache/scale] [--dtype float32|float16]
                                [--steps 50] [--kill-at 0.3] [--stages extract,feed,tagging,metric,auc,recall]

``--data`` is a full-size MTAT-shaped corpus (``python data/fullscale.py
../shared/mtat-real/annotations_final.csv`` makes one: the real annotation file, every clip a 29.1-s
MP3). On it, each stage runs as its own process, the way users run it, on the ``standard`` split:

* extract: ``pipeline/extract.py --features mel,mfcc,chroma``, killed with SIGKILL once ``--kill-at``
  of the clips are done and run again, which must resume and finish;
* feed: random training crops through ``train.feed.Crops`` and a DataLoader, as the trainer reads them;
* tagging and metric: ``train/run.py`` (default model) for one epoch capped at ``--steps`` steps,
  with full validation (1,529 clips) and full test (4,332 clips);
* auc and recall: ``eval/auc.py`` and ``eval/recall.py`` on the runs' saved outputs.

Peak memory is sampled every 0.5 s from ``/proc`` over the stage's whole process tree (decoding
workers included): ``anon`` is private memory (RssAnon + RssShmem, what the stage allocates),
``rss`` adds the file pages mapped in (the features file's page cache, which the kernel can drop).
The 4-GiB target is on ``anon`` summed over all processes of a stage.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("extract", "feed", "tagging", "metric", "auc", "recall")


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """(anonymous, resident) bytes summed over ``pids``."""
    anon = rss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, val = line.partition(":")
                if key in ("RssAnon", "RssShmem"):
                    anon += int(val.split()[0]) * 1024
                elif key == "VmRSS":
                    rss += int(val.split()[0]) * 1024
        except OSError:
            pass
    return anon, rss


def run_stage(cmd: list[str], log: Path, stop_when=None) -> dict:
    """Run ``cmd`` from the repository root, sampling its memory; ``stop_when()`` true kills it (SIGKILL)."""
    peak = {"anon": 0, "rss": 0}
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        killed = False

        def sample():
            while proc.poll() is None:
                anon, rss = _memory(_tree(proc.pid))
                peak["anon"], peak["rss"] = max(peak["anon"], anon), max(peak["rss"], rss)
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        while proc.poll() is None:
            if stop_when is not None and stop_when():
                for p in reversed(_tree(proc.pid)):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = True
                break
            time.sleep(0.5)
        rc = proc.wait()
        th.join()
    return {"seconds": time.perf_counter() - t0, "rc": rc, "killed": killed,
            "peak_anon_gib": peak["anon"] / 2**30, "peak_rss_gib": peak["rss"] / 2**30}


def _done_fraction(part: Path) -> float:
    import h5py
    import numpy as np
    try:
        with h5py.File(part, "r", locking=False) as f:
            s = f["status"][:]
        return float(np.mean(s != 0))
    except (OSError, KeyError):
        return 0.0


def feed_stage(features: Path, batches: int) -> None:
    """Child process: time ``batches`` training batches of random crops; clips/s to ``FEATURES.feed.json``."""
    import numpy as np
    from torch.utils.data import DataLoader

    from train.feed import Crops, FeatureFile, standardizer
    ff = FeatureFile(features, ("mel", "mfcc", "chroma"))
    idx = ff.indices("train")
    mean, std = standardizer(ff, idx)
    crops = Crops(ff, idx, ff.params.frames(3.0), mean, std, "random")
    order = np.random.default_rng(0).permutation(len(idx))[: batches * 32]
    loader = DataLoader(crops, batch_sampler=[order[i:i + 32].tolist() for i in range(0, len(order), 32)],
                        collate_fn=Crops.collate)
    t = time.perf_counter()
    n = sum(len(x) for x, _ in loader)
    features.with_suffix(".feed.json").write_text(json.dumps({"clips": n, "clips_per_s": n / (time.perf_counter() - t)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/bench_scale.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "cache/mtat-full", help="full-size corpus (data/fullscale.py)")
    p.add_argument("--work", type=Path, default=REPO / "cache/scale", help="folder for the features and runs")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--steps", type=int, default=50, help="training steps of each run (--steps-per-epoch)")
    p.add_argument("--feed-batches", type=int, default=300, help="batches of 32 crops timed by the feed stage")
    p.add_argument("--kill-at", type=float, default=0.3, help="kill extraction once this share is done (0: never)")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--_feed", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._feed:
        feed_stage(a._feed, a.feed_batches)
        return 0
    stages = [s for s in a.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        p.error(f"--stages: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    if "extract" in stages and not (a.data / "annotations_final.csv").is_file():
        p.error(f"--data {a.data}: no annotations_final.csv; make the corpus with "
                "`python data/fullscale.py ../shared/mtat-real/annotations_final.csv`")
    a.work.mkdir(parents=True, exist_ok=True)
    feats = a.work / f"features-{a.dtype}.h5"
    log = a.work / "bench_scale.log"
    py = sys.executable
    res: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                 "dtype": a.dtype, "stages": {}}

    import h5py
    import numpy as np

    def clips_in(split=None):
        with h5py.File(feats, "r") as f:
            ok = f["status"][:] == 1
            return int(ok.sum()) if split is None else int((ok & (f["split"].asstr()[:] == split)).sum())

    if "extract" in stages:
        cmd = [py, "pipeline/extract.py", "--data", str(a.data), "--split", "standard", "--features",
               "mel,mfcc,chroma", "--out", str(feats), "--dtype", a.dtype, "--quiet", "--overwrite"]
        part = feats.with_name(feats.name + ".part")
        feats.unlink(missing_ok=True)  # a finished file of an earlier run would stop the resumed run (exit 2)
        first = run_stage(cmd, log, (lambda: _done_fraction(part) >= a.kill_at) if a.kill_at > 0 else None)
        done_at_kill = _done_fraction(part) if first["killed"] else None
        second = run_stage(cmd[:-1], log) if first["killed"] else None  # no --overwrite: resume
        last = second or first
        if last["rc"] != 0:
            print(f"extraction failed (rc {last['rc']}); see {log}", file=sys.stderr)
            return 1
        n = clips_in()
        with h5py.File(feats, "r") as f:
            skipped = int((f["status"][:] == -1).sum())
        total = first["seconds"] + (second["seconds"] if second else 0)
        res["stages"]["extract"] = {
            "clips": n, "skipped": skipped, "seconds": total, "clips_per_s": n / total,
            "peak_anon_gib": max(first["peak_anon_gib"], (second or first)["peak_anon_gib"]),
            "peak_rss_gib": max(first["peak_rss_gib"], (second or first)["peak_rss_gib"]),
            "killed_at_done_fraction": done_at_kill, "resumed": bool(second),
            "file_gib": feats.stat().st_size / 2**30}
    if "feed" in stages:
        st = run_stage([py, "bench/bench_scale.py", "--_feed", str(feats), "--feed-batches", str(a.feed_batches)],
                       log)
        timed = json.loads(feats.with_suffix(".feed.json").read_text())
        res["stages"]["feed"] = {**st, **timed, "seconds": st["seconds"]}
    runs = {"tagging": a.work / f"run-tagging-{a.dtype}", "metric": a.work / f"run-metric-{a.dtype}"}
    for task in ("tagging", "metric"):
        if task not in stages:
            continue
        cmd = [py, "train/run.py", "--features", str(feats), "--task", task, "--epochs", "1",
               "--steps-per-epoch", str(a.steps), "--out", str(runs[task]), "--quiet"]
        if (runs[task] / "last.pt").exists():
            shutil.rmtree(runs[task])
        st = run_stage(cmd, log)
        if st["rc"] != 0:
            print(f"{task} run failed (rc {st['rc']}); see {log}", file=sys.stderr)
            return 1
        m = json.loads((runs[task] / "metrics.json").read_text())
        n = clips_in("valid") + clips_in("test")
        res["stages"][task] = {**st, "train_steps": a.steps, "valid_clips": clips_in("valid"),
                               "test_clips": clips_in("test"), "clips_per_s": n / st["seconds"],
                               **{k: v for k, v in m.items() if k.startswith("test_") and not isinstance(v, dict)}}
    for name, cmd, run in (("auc", "eval/auc.py", runs["tagging"] / "predictions.npy"),
                           ("recall", "eval/recall.py", runs["metric"] / "embeddings.npy")):
        if name not in stages:
            continue
        st = run_stage([py, cmd, str(run), "--json"], log)
        res["stages"][name] = {**st, "clips": len(np.load(run, mmap_mode="r")),
                               "clips_per_s": len(np.load(run, mmap_mode="r")) / st["seconds"]}

    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    print(f"\n{res['machine']}, features {a.dtype}\n")
    print("| stage | clips | wall s | clips/s | peak anon GiB (all processes) | peak RSS GiB incl. mapped file |")
    print("|---|---|---|---|---|---|")
    for name, s in res["stages"].items():
        clips = s.get("clips", s.get("valid_clips", 0) + s.get("test_clips", 0))
        print(f"| {name} | {clips} | {s['seconds']:.1f} | {s['clips_per_s']:.1f} | {s['peak_anon_gib']:.2f} | "
              f"{s['peak_rss_gib']:.2f} |")
    print(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
