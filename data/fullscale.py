"""An MTAT-shaped corpus at full size for any annotation file, to run the pipeline at the real scale.

    python data/fullscale.py CSV [--out cache/mtat-full] [--seconds 29.1] [--pool 256] [--seed 0]

Every row of the annotation file ``CSV`` (all of them, with or without a top-50 tag) gets an MP3 at
``OUT/mp3/<mp3_path>``: a hard link to one of ``--pool`` demo clips rendered at ``--seconds``
(16 kHz mono, 32 kbit/s, as the release), so extraction decodes every file while the corpus costs
the time and disk of the pool alone. The release's three broken clips (``data.mtat.BROKEN_CLIPS``)
get broken files: an empty one, one that is not audio and a truncated MP3. ``OUT/annotations_final.csv``
is a byte copy of ``CSV``; labels are the file's own and have nothing to do with the audio.

A killed run re-run with the same arguments finishes the job; ``OUT/fullscale.json`` is written
last and marks the corpus complete.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from data.cli import HelpFormatter
from data.files import atomic_path, write_atomically
from data.mtat import ANNOTATIONS, BROKEN_CLIPS

MARKER = "fullscale.json"
POOL = ".pool"


def _broken(kind: str, sample: bytes) -> bytes:
    """Bytes of a broken clip: ``'empty'``, ``'garbage'`` (not audio) or ``'truncated'`` (about 1 s of MP3)."""
    return {"empty": b"", "garbage": b"this is not an MP3 file\n" * 40, "truncated": sample[:4000]}[kind]


def _link(src: Path, dst: Path) -> bool:
    """Hard-link ``dst`` to ``src`` (a copy where the folders are on different file systems)."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
            return True
        except OSError:
            shutil.copyfile(src, tmp)
            return False


def build(csv_path, out, seconds: float = 29.1, pool: int = 256, seed: int = 0, progress: bool = True) -> dict:
    """Lay out the corpus (see the module docstring); return what was made.

    Parameters
    ----------
    csv_path : path
        An annotation file in MTAT's format (``clip_id``, tag columns, ``mp3_path``).
    out : path
        Output folder: new, empty, or an unfinished or finished run of this with the same arguments.
    seconds : float
        Duration of the pool clips.
    pool : int >= 16
        Distinct clips rendered; row ``k`` of the file gets clip ``k % pool``.
    seed : int
        Seed of the pool (a demo corpus).

    Returns
    -------
    dict
        The parameters and counts that ``OUT/fullscale.json`` records.

    Raises
    ------
    FileExistsError
        When ``out`` holds something else (another run of this, or other files).
    ValueError
        When ``csv_path`` has no ``clip_id`` or ``mp3_path`` column, or for bad arguments.
    """
    import pandas as pd
    from tqdm import tqdm

    from data import demo

    csv_path, out = Path(csv_path), Path(out)
    params = {"annotations": str(csv_path.resolve()), "seconds": seconds, "pool": pool, "seed": seed}
    marker = out / MARKER
    if marker.exists():
        old = json.loads(marker.read_text())
        if {k: old.get(k) for k in params} != params:
            raise FileExistsError(f"{out} holds a full-scale corpus made with {old}; pick another --out or delete it")
        return old
    if out.exists() and any(p.name not in (POOL, "mp3", ANNOTATIONS) for p in out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a full-scale corpus; pick another --out or delete it")
    table = pd.read_csv(csv_path, sep="\t", usecols=lambda c: c in ("clip_id", "mp3_path"), dtype={"mp3_path": str})
    if list(table.columns) != ["clip_id", "mp3_path"]:
        raise ValueError(f"{csv_path}: needs the columns clip_id and mp3_path, has {list(table.columns)}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    demo.generate(out / POOL, n_clips=pool, seconds=seconds, seed=seed, progress=progress)
    clips = sorted((out / POOL / "mp3").rglob("*.mp3"))
    with atomic_path(out / ANNOTATIONS) as tmp:
        shutil.copyfile(csv_path, tmp)
    kinds = dict(zip(BROKEN_CLIPS, ("empty", "garbage", "truncated")))
    sample = clips[0].read_bytes()
    linked = copied = broken = 0
    for k, (clip_id, rel) in enumerate(tqdm(list(zip(table["clip_id"], table["mp3_path"])), unit="file",
                                            desc=f"layout -> {out}", disable=not progress)):
        dst = out / "mp3" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if int(clip_id) in kinds:
            write_atomically(dst, _broken(kinds[int(clip_id)], sample))
            broken += 1
        elif not dst.exists():
            if _link(clips[k % len(clips)], dst):
                linked += 1
            else:
                copied += 1
    done = dict(params, rows=len(table), broken=broken, linked=linked, copied=copied,
                seconds_taken=round(time.perf_counter() - t0, 1))
    write_atomically(marker, json.dumps(done, indent=1))  # last: the corpus is complete
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python data/fullscale.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("csv", type=Path, help="annotation file, e.g. ../shared/mtat-real/annotations_final.csv")
    p.add_argument("--out", type=Path, default=Path("cache/mtat-full"), help="corpus folder")
    p.add_argument("--seconds", type=float, default=29.1, help="duration of the pool clips")
    p.add_argument("--pool", type=int, default=256, help="distinct clips rendered (at least 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rendered pool of clips")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if not a.csv.is_file():
        p.error(f"{a.csv}: annotation file not found")
    if a.pool < 16 or a.seconds <= 0:
        p.error(f"need --pool >= 16 and --seconds > 0, got {a.pool} and {a.seconds}")
    try:
        done = build(a.csv, a.out, a.seconds, a.pool, a.seed, progress=not a.quiet)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.out}: {done['rows']} clips ({done['broken']} broken on purpose) over a pool of {done['pool']} "
          f"clips of {done['seconds']} s; extract it with\n"
          f"  python pipeline/extract.py --data {a.out} --split standard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
