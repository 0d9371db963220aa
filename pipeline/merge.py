"""Join the shards of a sharded extraction into one features file, without copying the features.

    python pipeline/merge.py OUT SHARD... [--force]

The shards (``pipeline/extract.py --shard I/N``, or one torchrun rank each) must be all N parts of
one clip list, finished, made with the same settings from the same annotation file. ``OUT`` gets the
small per-clip tables (clip ids, paths, splits, labels, rooms, frame counts, status) concatenated, with
``frame_start`` moved past the frames of the shards before, and one HDF5 *virtual dataset* per
feature that maps each shard's frames in turn: readers see the file an unsharded run writes, in the
same clip order. Augmented versions (``extract.py --augment``) are joined the same way: the
``/augmented`` tables concatenated (``row`` and ``frame_start`` moved past the shards before) and a
virtual dataset per feature over the shards' ``/augmented`` datasets; ``/rhythm`` is copied.

Why virtual datasets, not a copy: MTAT's features are about 18 GB (float32), and a copy would need
as much again on disk and the time to write it, for bytes the shards already hold in the very layout
the feed reads (uncompressed time-major chunks). The feed (``train/feed.py``) memory-maps each shard
at its own chunk offsets (``pipeline.store.sources``), so crops cost what they cost in an unsharded
file. The price: ``OUT`` reads the shards by path (relative to its folder where possible), so they
must stay beside it; a features file whose shard is missing is refused when opened, rather than
read as fill values.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from data.files import atomic_path, write_atomically
from pipeline import store

#: Per-clip tables copied into the merged file, in the order the store's spec lists them.
TABLES = ("clip_id", "mp3_path", "split", "labels", "room", "n_frames", "status")


class MergeError(ValueError):
    """Shards that cannot be joined; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Shard:
    """One input: its path, header, part of the clip list and shard index/count."""

    path: Path
    head: store.Header
    part: store.Part
    index: int
    count: int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python pipeline/merge.py",
        description="Join the features files of a sharded extraction (pipeline/extract.py --shard I/N) into "
                    "one, whose features are HDF5 virtual datasets over the shards: nothing is copied, so "
                    "the shards must stay beside OUT.")
    p.add_argument("out", type=Path, metavar="OUT", help="the merged features file to write")
    p.add_argument("shards", type=Path, nargs="+", metavar="SHARD", help="every shard's file, in any order")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no summary")
    return p


def read_shard(path: Path) -> Shard:
    """The header and place of one shard file; :class:`MergeError` when it is not a finished shard."""
    part_file = path.with_name(path.name + ".part")
    if not path.is_file() and part_file.is_file():
        raise MergeError(f"{path}: not finished ({part_file} is its partial run); re-run that shard's "
                         "extraction with the same arguments to finish it")
    try:
        head = store.header(path)
    except store.StoreError as exc:
        raise MergeError(str(exc)) from exc
    if not head.shard:
        raise MergeError(f"{path}: not a shard (made without --shard, or a merged file); "
                         "merge the files of one `extract.py --shard I/N` run")
    index, count = store.parse_shard(head.shard)
    part = store.read_part(path)
    with h5py.File(path, "r") as f:
        status = f["status"][:]
        v_status = f[store.AUGMENTED]["status"][:] if store.AUGMENTED in f else np.zeros(0)
    if (status == 0).any() or (v_status == 0).any():
        raise MergeError(f"{path}: not finished, {int((status == 0).sum())} of {len(status)} clips "
                         f"(and {int((v_status == 0).sum())} augmented versions) not yet extracted; re-run that "
                         "shard's extraction with the same arguments")
    if part is None or len(status) != part.stop - part.start:
        raise MergeError(f"{path}: its clip table does not match the block it records; re-extract it")
    return Shard(path, head, part, index, count)


def check(shards: list[Shard]) -> list[Shard]:
    """The shards in index order, once checked to be every part of one extraction.

    Raises
    ------
    MergeError
        Naming the first shard that differs from the first one given (settings, annotation file,
        shard count), or the parts that overlap or are missing.
    """
    first = shards[0]
    for s in shards[1:]:
        diff = replace(first.head, shard="").changed(replace(s.head, shard=""))
        if diff:
            raise MergeError(f"{s.path}: made with other settings than {first.path} ({', '.join(diff)}); "
                             "every shard must come from the same extraction arguments")
        if (s.part.sha256, s.part.total) != (first.part.sha256, first.part.total):
            raise MergeError(f"{s.path}: made from another annotation file than {first.path} "
                             f"({s.part.annotations}, sha256 {s.part.sha256[:12]}, {s.part.total} clips; "
                             f"{first.part.annotations}, sha256 {first.part.sha256[:12]}, {first.part.total} clips)")
        if s.count != first.count:
            raise MergeError(f"{s.path}: shard {s.index}/{s.count}, one of {s.count} parts, but {first.path} "
                             f"is one of {first.count}; merge the shards of one run")
    by_index: dict[int, Shard] = {}
    for s in shards:
        if s.index in by_index:
            raise MergeError(f"{s.path}: shard {s.index}/{s.count} overlaps {by_index[s.index].path}, the same "
                             f"part (clips {s.part.start}-{s.part.stop - 1}); give each part once")
        by_index[s.index] = s
    missing = [k for k in range(first.count) if k not in by_index]
    if missing:
        raise MergeError(f"{len(shards)} shard(s) given, but the run has {first.count}: missing "
                         + ", ".join(f"{k}/{first.count}" for k in missing)
                         + f" (clips {', '.join('%d-%d' % _span(k, first) for k in missing)} of {first.part.total})")
    ordered = [by_index[k] for k in range(first.count)]
    for s in ordered:
        if (s.part.start, s.part.stop) != store.shard_bounds(s.index, s.count, s.part.total):
            raise MergeError(f"{s.path}: holds clips {s.part.start}-{s.part.stop - 1}, not the block of shard "
                             f"{s.index}/{s.count}; re-extract it")
    return ordered


def _span(index: int, like: Shard) -> tuple[int, int]:
    start, stop = store.shard_bounds(index, like.count, like.part.total)
    return start, stop - 1


def reference(shard: Path, out: Path) -> str:
    """The name the merged file records for a shard: relative to ``out``'s folder where possible."""
    try:
        return os.path.relpath(shard.resolve(), out.resolve().parent)
    except ValueError:  # another drive (Windows): no relative path exists
        return str(shard.resolve())


def _gather(shards: list[Shard], group: str, tables: tuple, features) -> tuple[dict, list, tuple]:
    """The tables of ``group`` ('' the root, or ``/augmented``) of every shard concatenated, with
    ``frame_start`` (and a version's clip ``row``) moved past the shards before; the frames each shard's
    feature datasets hold, and their shapes and dtype."""
    out = {k: [] for k in (*tables, "frame_start")}
    frames, clips = [], 0
    for s in shards:
        with h5py.File(s.path, "r") as f:
            g = f[group] if group else f
            for k in tables:
                out[k].append(g[k].asstr()[:] if g[k].dtype.kind == "O" else g[k][:])
            if "row" in out:  # a version's clip: past the clips of the shards before
                out["row"][-1] = out["row"][-1] + clips
            clips += len(f["clip_id"])
            # Each shard's rooms start at its frame 0: past the frames of the shards before it here.
            out["frame_start"].append(g["frame_start"][:] + sum(frames))
            frames.append(int(out["room"][-1].sum(dtype=np.int64)))
            shapes = {name: g[name].shape for name in features}
            dtype = g[features[0]].dtype
            if any(n != max(frames[-1], 1) for n, _ in shapes.values()):  # an empty one holds 1 frame
                raise MergeError(f"{s.path}: its {group or 'root'} feature datasets do not hold its rooms; "
                                 "re-extract it")
    return out, frames, (shapes, dtype)


def _virtual(group, name, shape_dtype, frames, names, source: str) -> None:
    """A virtual dataset ``name`` in ``group`` over each shard's ``source`` dataset, in turn."""
    (shapes, dtype) = shape_dtype
    bins = shapes[name][1]
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
    layout = h5py.VirtualLayout(shape=(max(sum(frames), 1), bins), dtype=dtype)
    for at, n, ref in zip(starts, frames, names):
        if n:  # a shard without training clips has no versions
            layout[at:at + n] = h5py.VirtualSource(ref, source, shape=(n, bins))
    # NaN, not zeros, where h5py cannot read a shard: a lost shard never passes for silence.
    group.create_virtual_dataset(name, layout, fillvalue=np.nan)


def write_merged(path: Path, out: Path, shards: list[Shard]) -> dict:
    """Write the merged file at ``path`` (a temporary beside ``out``); return its figures for the summary."""
    head, names = shards[0].head, [reference(s.path, out) for s in shards]
    tables, frames, shape_dtype = _gather(shards, "", TABLES, head.features)
    versions = None
    if head.augment:
        versions = _gather(shards, store.AUGMENTED, tuple(k for k in store.VERSION_TABLES if k != "frame_start"),
                           head.features)
    rhythm = []
    with h5py.File(shards[0].path, "r") as f:
        tags = f["tags"].asstr()[:]
        fields = f["rhythm"].attrs["fields"] if "rhythm" in f else None
    for s in shards:
        with h5py.File(s.path, "r") as f:
            rhythm.append(f["rhythm"][:] if "rhythm" in f else None)
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        part = replace(shards[0].part, start=0, stop=shards[0].part.total)
        f.attrs.update(format=store.FORMAT, version=store.VERSION, **replace(head, shard="").attrs(), **part.attrs())
        f.attrs["shards"] = np.array(names, dtype=object).astype(text)
        f.create_dataset("tags", data=tags, dtype=text)
        for group, got in [(f, (tables, frames, shape_dtype))] + (
                [(f.create_group(store.AUGMENTED), versions)] if versions else []):
            for k, parts in got[0].items():
                data = np.concatenate(parts)
                group.create_dataset(k, data=data, dtype=text if data.dtype == object else data.dtype)
            for name in head.features:
                _virtual(group, name, got[2], got[1], names, f"{group.name.rstrip('/')}/{name}")
        if fields is not None and all(r is not None for r in rhythm):  # shards made before it have none
            f.create_dataset("rhythm", data=np.concatenate(rhythm))
            f["rhythm"].attrs["fields"] = fields
    return dict(status=np.concatenate(tables["status"]), split=np.concatenate(tables["split"]),
                frames=sum(frames), names=names,
                v_status=np.concatenate(versions[0]["status"]) if versions else None)


def merge_logs(out: Path, shards: list[Shard]) -> bool:
    """``OUT.log``: the shards' lists of skipped clips, in shard order; True when any clip was skipped."""
    text = "".join(s.path.with_suffix(".log").read_text() for s in shards if s.path.with_suffix(".log").is_file())
    write_atomically(out.with_suffix(".log"), text)
    return bool(text.strip())


def summary(out: Path, shards: list[Shard], got: dict, logged: bool) -> None:
    ok = got["status"] == 1
    shard_bytes = sum(s.path.stat().st_size for s in shards)
    head = shards[0].head
    lines = [
        "",
        f"merged     {out}  ({_size(out.stat().st_size)} of tables; the {_size(shard_bytes)} of features "
        "stay in the shards)",
        f"shards     {len(shards)}: " + ", ".join(f"{n} ({s.part.start}-{s.part.stop - 1})"
                                                  for n, s in list(zip(got["names"], shards))[:4])
        + (f", ... {got['names'][-1]}" if len(shards) > 4 else ""),
        "clips      " + "  ".join(f"{k} {int((got['split'][ok] == k).sum())}" for k in ("train", "valid", "test"))
        + f"  (total {int(ok.sum())} of {shards[0].part.total})",
        f"skipped    {int((got['status'] == -1).sum())}" + (f"  listed in {out.with_suffix('.log')}" if logged else ""),
        f"features   {','.join(head.features)} {head.dtype}, {got['frames']} frames, virtual datasets over the shards",
        *([f"versions   {head.augment} per train clip: {int((got['v_status'] == 1).sum())} stored, "
           f"{int((got['v_status'] == -1).sum())} skipped, virtual datasets over the shards' /augmented"]
          if got["v_status"] is not None else []),
        f"keep       the shards beside {out.name}: it reads them by these relative paths (move the folder as a "
        "whole); a missing shard makes it unreadable",
    ]
    print("\n".join(lines))


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out
    try:
        if any(out.resolve() == s.resolve() for s in args.shards):
            raise MergeError(f"{out}: OUT is one of the shards; name a new file")
        if out.is_dir():
            raise MergeError(f"{out}: a folder; OUT is the name of the merged file to write")
        if out.exists() and not args.force:
            raise MergeError(f"{out}: already exists; pass --force to replace it")
        shards = check([read_shard(p) for p in args.shards])
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary sits beside OUT, so the shards' relative names hold for it and after the rename.
    with atomic_path(out, sync=True, sweep=True) as tmp:
        got = write_merged(tmp, out, shards)
    logged = merge_logs(out, shards)
    if not args.quiet:
        summary(out, shards, got, logged)
    return 0


if __name__ == "__main__":
    sys.exit(main())
