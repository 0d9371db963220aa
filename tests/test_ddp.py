"""Distributed training under torchrun on the CPU (gloo): shares of an epoch, gathered mining, whole runs.

The runs start ``python -m torch.distributed.run`` in a subprocess, with a timeout so that a hang
fails the test instead of stalling the suite.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import test_train
from train import dist, run, runfolder
from train.metric import batch_triplet_loss, make_sampler
from train.losses import contrastive_loss, jaccard_weights
from train.modes import make_mode

REPO = Path(__file__).resolve().parents[1]
feats = test_train.feats  # the tiny features file (a module-scoped fixture)
FAST = ["--epochs", "2", "--crops-per-clip", "1", "--batch", "8", "--quiet"]


def torchrun(n: int, args, script=REPO / "train/run.py", timeout: float = 240, module: str | None = None
             ) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node n --standalone script args`` (or ``-m module args``); a hang raises TimeoutExpired."""
    target = ["-m", module] if module else [str(script)]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--standalone",
                           *target, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the shares of an epoch

def _items(batch, triplets: bool):
    """A batch as a sorted list of its items (clips, or (anchor, positive, negative) triplets)."""
    if triplets:
        return sorted(map(tuple, np.asarray(batch).reshape(3, -1).T.tolist()))
    return sorted(batch)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("kind", ["tagging", "pk", "triplets"])
def test_rank_shares_are_disjoint_and_cover_the_epoch(kind, world):
    labels = (np.random.default_rng(0).random((40, 50)) < 0.15).astype(np.uint8)
    n_items = 83  # a short tail batch of 3
    argv = {"tagging": [], "pk": ["--task", "metric"], "triplets": ["--task", "metric", "--mining", "none"]}[kind]
    mode = make_mode(run.parse_args([*argv, "--batch", "8", "--seed", "5"]))
    mode.sampler = None if kind == "tagging" else make_sampler("overlap", labels, seed=5)

    def plan(rank=0, world=1, epoch=3):
        return [mode.share(b, rank, world) for b in mode.plan(len(labels), 3, n_items, epoch, world)]

    triplets = kind == "triplets"
    shares = [plan(r, world) for r in range(world)]
    assert shares == [plan(r, world) for r in range(world)] != [plan(r, world, epoch=4) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # the same number of steps on every rank
    whole = plan()  # one process: the global plan itself
    steps = list(zip(*shares))
    for k, parts in enumerate(steps):
        sizes = [len(_items(p, triplets)) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= (1 if triplets else 2)
        if len(steps) == len(whole) or k < len(steps) - 1:  # a merged tail aside, the same batches
            assert sorted(sum((_items(p, triplets) for p in parts), [])) == _items(whole[k], triplets)
    # Over the epoch: every item of the global plan on exactly one rank.
    assert sorted(sum((_items(b, triplets) for s in shares for b in s), [])) == \
        sorted(sum((_items(b, triplets) for b in whole), []))
    assert dist.shard([0, 1, 2, 3, 4], 1, 2) == [1, 3]


# ---------------------------------------------------------------- gathered mining

def _loss(kind: str, emb, labels):
    if kind == "contrastive":
        return contrastive_loss(emb, jaccard_weights(labels), temperature=0.1)
    return batch_triplet_loss(emb, labels, mining="semihard", graded=True)


def _gathered_gradient(out: str, kind: str) -> None:
    """One rank of the gradient check (run by torchrun): a DDP linear embedding, mining over the gathered batch.

    It joins the job through ``dist.init`` as ``train/run.py`` does, so that the check runs the
    code path of a real job (env:// rendezvous, the TCP store torchrun starts).
    """
    import torch.distributed as td
    from torch.nn.parallel import DistributedDataParallel

    dist.init("cpu")
    x, y = _gradient_batch()
    torch.manual_seed(0)
    net = DistributedDataParallel(torch.nn.Linear(x.shape[1], 4))
    mine = dist.shard(torch.arange(len(x)), dist.rank(), dist.world())
    res = {}
    for sizes in (None, [len(dist.shard(list(range(len(x))), r, dist.world())) for r in range(dist.world())]):
        net.zero_grad()
        emb, labels = dist.gather_rows(net(x[mine]), y[mine], sizes=sizes)  # sizes asked, or given (5, 4)
        loss = _loss(kind, emb, labels)
        loss.backward()
        res["given" if sizes else "asked"] = {"loss": loss.detach(), "rows": len(emb),
                                              "grads": [p.grad.clone() for p in net.parameters()]}
    torch.save(res, f"{out}.{dist.rank()}")
    td.barrier()  # both ranks done before either tears its connections down
    dist.close()
    dist.exit(0)  # as train/run.py ends under torchrun


def _gradient_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 6, generator=g)  # 9 rows: shares of 5 and 4
    y = (torch.rand(9, 5, generator=g) < 0.4).float()
    y[:, 0] = 1  # every clip has a positive
    return x, y


@pytest.mark.parametrize("kind", ["triplet", "contrastive"])
def test_gathered_mining_gives_the_single_process_gradient(tmp_path, kind):
    res = torchrun(2, [tmp_path / "out", kind], module="tests.test_ddp", timeout=120)
    assert res.returncode == 0, res.stderr
    x, y = _gradient_batch()
    torch.manual_seed(0)
    ref = torch.nn.Linear(6, 4)
    loss = _loss(kind, ref(x), y)
    loss.backward()
    for rank in (0, 1):
        for how, got in torch.load(tmp_path / f"out.{rank}").items():  # the ranks' sizes asked or given
            assert got["rows"] == 9, how  # every rank mined over the whole batch
            torch.testing.assert_close(got["loss"], loss.detach())
            for p, grad in zip(ref.parameters(), got["grads"]):
                torch.testing.assert_close(grad, p.grad)


# ---------------------------------------------------------------- whole runs

def test_two_ranks_train_resume_and_load_into_a_plain_run(feats, tmp_path):
    base = ["--features", feats, "--model", "cnn2d", *FAST, "--precision", "fp32"]
    res = torchrun(2, [*base, "--out", tmp_path / "full"])
    assert res.returncode == 0, res.stderr
    log = (tmp_path / "full" / "train.log").read_text()
    assert log.count("epoch   1 ") == 1 and "2 ranks sharing each batch of 8" in log  # rank 0 alone writes
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    assert [h["steps"] for h in last["history"]] == [3, 3]  # 20 clips in batches of 8: the plain run's steps
    from train.models import build_model

    cfg, ckpt = runfolder.load_best(tmp_path / "full", "cpu", "tagging", "cnn2d")
    model = build_model("cnn2d", 96)
    model.load_state_dict(ckpt["model"])  # the unwrapped network's keys
    m = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert 0 <= m["test_roc_auc"] <= 1 and len(np.load(tmp_path / "full" / "predictions.npy")) == 4
    # Cut after one epoch and resumed under torchrun: the uninterrupted run, to float rounding (DDP
    # reduces the first step after a start in other gradient buckets than later ones).
    assert torchrun(2, [*base, "--out", tmp_path / "cut", "--epochs", "1"]).returncode == 0
    res = torchrun(2, [*base, "--out", tmp_path / "cut", "--resume"])
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert [h["epoch"] for h in cut["history"]] == [1, 2]
    for a, b in zip(cut["history"], last["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # The weights; not the conv biases ahead of BatchNorm (their gradient is rounding noise, which
    # AdamW turns into lr-sized steps) nor the running means that follow them.
    for k in (k for k in last["model"] if k.endswith("weight")):
        torch.testing.assert_close(cut["model"][k], last["model"][k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model,mining", [("cnn2d", "semihard"), ("linear", "none")])
def test_two_rank_metric_learning(feats, tmp_path, model, mining):
    res = torchrun(2, ["--features", feats, "--task", "metric", "--model", model, "--mining", mining,
                       "--out", tmp_path / "m", *FAST])
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert 0 <= m["test_recall@1"] <= m["test_recall@2"] <= 1
    from train.models import build_embedding_model

    cfg, ckpt = runfolder.load_best(tmp_path / "m", "cpu", "metric", model)
    net = build_embedding_model(model, 96, dim=128, n_tags=50)
    net.load_state_dict(ckpt["model"])


@pytest.mark.parametrize("task", ["tagging", "metric"])
def test_one_rank_torchrun_equals_the_plain_run(feats, tmp_path, task):
    args = ["--features", str(feats), "--task", task, "--model", "cnn2d", *FAST, "--steps-per-epoch", "2"]
    assert run.main([*args, "--out", str(tmp_path / "plain")]) == 0
    res = torchrun(1, [*args, "--out", tmp_path / "one"])
    assert res.returncode == 0, res.stderr
    plain, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("plain", "one"))
    assert {k: v for k, v in plain.items() if k.startswith("test_")} == \
        {k: v for k, v in one.items() if k.startswith("test_")}
    np.testing.assert_array_equal(np.load(tmp_path / "plain" / "embeddings.npy"),
                                  np.load(tmp_path / "one" / "embeddings.npy"))


FLAKY = """
import os, sys
from train import feed, run
if os.environ["RANK"] == "1":
    if {where!r} == "features":
        sys.argv[sys.argv.index("--features") + 1] = "no-such-features.h5"
    else:
        def broken(self, ks):
            raise OSError("rank 1 cannot read its crops")
        feed.Crops.__getitems__ = broken
sys.exit(run.main())
"""


@pytest.mark.parametrize("where,message", [
    ("features", "error (rank 1 of 2): no-such-features.h5: features file not found"),
    ("training", "OSError: rank 1 cannot read its crops"),
])
def test_a_failing_rank_ends_the_job_with_its_message(feats, tmp_path, where, message):
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY.format(where=where))
    res = torchrun(2, ["--features", feats, "--model", "baseline", "--out", tmp_path / "r", *FAST],
                   script=script, timeout=120)  # a hang would raise TimeoutExpired
    assert res.returncode != 0
    assert message in res.stderr
    # Which rank torchrun's report calls the root cause depends on which exit it observes first (rank 0
    # can lose its connection to rank 1 before rank 1 has reported), so it is not asserted.


if __name__ == "__main__":  # a rank of test_gathered_mining_gives_the_single_process_gradient
    _gathered_gradient(sys.argv[1], sys.argv[2])
