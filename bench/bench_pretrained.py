"""musicnn's published networks in our pipeline: parity with musicnn's own outputs, and quality on a features file.

    python bench/bench_pretrained.py [--features cache/features.h5] [--audio SONG.mp3 ...]
                                     [--tf-reference cache/musicnn-tf] [--out cache/pretrained/bench.json]

Parity (when ``--tf-reference`` holds the dumps of ``bench/musicnn_tf_reference.py`` for the
``--audio`` files): the largest absolute difference of the clip scores (taggram mean) and of the
patch scores between musicnn's TensorFlow graph and (a) our port fed musicnn's own input patches,
(b) our whole path (``train/tag.py``: our decoding, our front-end in dB, the port's rescaling),
(c) the same with the features' 80-dB floor that extraction stores.

Quality: each network's clip embeddings (``train/embed.py``) on the test split of ``--features``,
scored with ``eval/`` (Recall@K for all, ROC-AUC / PR-AUC for the MTT ones, whose tags are MTAT's).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.auc import tag_auc  # noqa: E402
from eval.recall import DEFAULT_KS, recall_at_k  # noqa: E402
from features.frontend import FrontEnd  # noqa: E402
from train import embed, pretrained, tag  # noqa: E402


def parity(run: Path, name: str, audio: list[Path], ref: Path) -> dict:
    model, fe, mean, std, frames, _ = tag.load_run(run)
    floored = FrontEnd(fe.features, dataclasses.replace(fe.params, top_db=80.0))
    res = {}
    for f in audio:
        dump = np.load(ref / f"{name}__{f.name}.npz")
        want = dump["taggram"]
        model.logc_input.fill_(False)  # (a): musicnn's own logC patches straight in
        with torch.no_grad():
            own = torch.sigmoid(model(torch.from_numpy(dump["patches"]).transpose(1, 2))).numpy()
        model.logc_input.fill_(True)
        ours = tag.taggram(f, model, fe, mean, std, frames)
        db80 = tag.taggram(f, model, floored, mean, std, frames)
        res[f.name] = {k: {"clip": float(np.abs(v.mean(0) - want.mean(0)).max()),
                           "patch": float(np.abs(v - want).max()) if v.shape == want.shape else None}
                       for k, v in (("port_on_musicnn_input", own), ("our_path", ours), ("our_path_top_db_80", db80))}
    return res


def quality(run: Path, features: Path) -> dict:
    out = embed.embed(run, features, "test", run / f"embed-{features.stem}-test")
    emb, labels = np.load(out / "embeddings.npy"), np.load(out / "labels.npy")
    r = recall_at_k(emb, labels, ks=DEFAULT_KS, metric="cosine")
    res = {f"recall@{k}": float(r["recall"][k]) for k in DEFAULT_KS}
    if (out / "predictions.npy").exists():
        auc = tag_auc(np.load(out / "predictions.npy"), labels, tag_names=json.loads((out / "tags.json").read_text()))
        res.update(roc_auc=float(auc["roc_auc_macro"]), pr_auc=float(auc["pr_auc_macro"]))
    res["n_test"] = int(len(emb))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, default=Path("cache/features.h5"))
    p.add_argument("--audio", type=Path, nargs="*", default=sorted((REPO.parent / "shared" / "fixtures").glob("*.mp3")))
    p.add_argument("--tf-reference", type=Path, default=Path("cache/musicnn-tf"))
    p.add_argument("--out", type=Path, default=Path("cache/pretrained/bench.json"))
    a = p.parse_args()
    results = {}
    for name in pretrained.NAMES:
        run = pretrained.convert(name, Path("cache/pretrained") / name)
        results[name] = {"quality": quality(run, a.features) if a.features.exists() else None}
        if a.tf_reference.is_dir() and a.audio:
            results[name]["parity"] = parity(run, name, a.audio, a.tf_reference)
        q = results[name]["quality"] or {}
        print(f"{name:12s} " + "  ".join(f"{k} {v:.4f}" for k, v in q.items() if k != "n_test"))
        for f, d in results[name].get("parity", {}).items():
            print(f"    {f[:24]:24s} " + "  ".join(f"{k}: clip {v['clip']:.1e} patch {v['patch']:.1e}"
                                                  for k, v in d.items()))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
