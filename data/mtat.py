"""MagnaTagATune facts: the 50 tags, the splits, the annotation file and the audio layouts."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The 50 most frequent MTAT tags, in the label order used everywhere in the project.
TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)

#: Split schemes, keyed by the first character of ``mp3_path``.
SPLITS: dict[str, dict[str, str]] = {
    "gct634": {"train": "012ab", "valid": "c", "test": "d"},
    "standard": {"train": "0123456789ab", "valid": "c", "test": "def"},
}

#: The 16 top-level audio folders of the release.
FOLDERS = "0123456789abcdef"

ANNOTATIONS = "annotations_final.csv"

#: clip_id of the three clips of the release whose MP3s are empty or fail to decode (all in training
#: folders; musicnn-training and jukemir leave them out, extraction reports and skips them).
BROKEN_CLIPS: tuple[int, ...] = (35644, 55753, 57881)


class DatasetError(ValueError):
    """A dataset file or folder that cannot be used as it is; the message names it and says why."""


def split_of(mp3_path: str, scheme: str = "gct634") -> str | None:
    """Split (``'train'``, ``'valid'``, ``'test'``) of one clip, or ``None`` when the scheme leaves it out.

    Parameters
    ----------
    mp3_path : str
        Path relative to the MP3 folder, e.g. ``'f/artist-album-01-title-30-59.mp3'``.
    scheme : {'gct634', 'standard'}
        Split scheme, see ``SPLITS``.
    """
    if scheme not in SPLITS:
        raise ValueError(f"unknown split scheme {scheme!r}; choose one of {', '.join(SPLITS)}")
    first = mp3_path[:1].lower()
    for name, folders in SPLITS[scheme].items():
        if first and first in folders:
            return name
    return None


def _shown(value) -> str:
    """A cell of the annotation file as a message shows it: a number as such, a path quoted."""
    return repr(value) if isinstance(value, str) else str(value)


def read_annotations(csv_path: str | os.PathLike, scheme: str | None = "gct634") -> pd.DataFrame:
    """Read ``annotations_final.csv`` as distributed and keep the 50 tags.

    Parameters
    ----------
    csv_path : path
        The tab-separated, quoted annotation file (``clip_id``, 188 tag columns, ``mp3_path``).
    scheme : {'gct634', 'standard'} or None
        When given, add a ``split`` column and drop the clips the scheme does not use.

    Returns
    -------
    pandas.DataFrame
        One row per clip that has at least one of the 50 tags, in file order, with columns
        ``clip_id`` (int), ``mp3_path`` (str), the 50 tags in ``TAGS`` order (uint8) and, with a
        scheme, ``split``.

    Raises
    ------
    DatasetError
        When the file is missing, unreadable or lacks ``clip_id``, ``mp3_path`` or any of the 50 tags,
        or a row lacks its ``clip_id`` or ``mp3_path``, or one of them is on two rows.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        df = pd.read_csv(path, sep="\t", dtype={"mp3_path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as a tab-separated annotation file ({exc})") from exc
    missing = [c for c in ("clip_id", "mp3_path", *TAGS) if c not in df.columns]
    if missing and len(df.columns) == 1:
        raise DatasetError(f"{path}: one column only; the annotation file is tab-separated (as distributed)")
    if missing:
        shown = ", ".join(repr(c) for c in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise DatasetError(f"{path}: missing {len(missing)} required column(s): {shown}")
    for col in ("clip_id", "mp3_path"):  # rows are numbered as a spreadsheet shows them (the header is row 1)
        empty = np.flatnonzero(df[col].isna().to_numpy())
        if len(empty):
            raise DatasetError(f"{path}: row {empty[0] + 2} has no {col}" + (f" (and {len(empty) - 1} more rows)"
                                                                            if len(empty) > 1 else ""))
        twice = df[col].duplicated(keep=False).to_numpy()
        if twice.any():  # a clip twice is its own nearest neighbour: Recall@K would count it
            rows = np.flatnonzero(twice)[:2] + 2
            raise DatasetError(f"{path}: {col} {_shown(df[col].iloc[rows[0] - 2])} is on rows {rows[0]} and {rows[1]}"
                               + (f" ({int(twice.sum())} rows share a {col})" if twice.sum() > 2 else "")
                               + "; each clip once")
    labels = df[list(TAGS)]
    bad = ~labels.isin([0, 1]).all(axis=0)
    if bad.any():
        raise DatasetError(f"{path}: tag columns must hold 0 or 1; not so in {', '.join(labels.columns[bad][:5])}")
    try:
        ids = df["clip_id"].astype(np.int64)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: clip_id must be whole numbers ({exc})") from exc
    out = pd.DataFrame({"clip_id": ids, "mp3_path": df["mp3_path"].astype(str)})
    out = pd.concat([out, labels.astype(np.uint8)], axis=1)
    out = out[out[list(TAGS)].sum(axis=1) > 0]
    if scheme is not None:
        out = out.assign(split=[split_of(p, scheme) for p in out["mp3_path"]])
        out = out[out["split"].notna()]
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class AudioLayout:
    """Where a dataset root keeps its audio: ``kind`` is ``'mp3'`` or ``'npy'``, ``base`` the folder."""

    kind: str
    base: Path

    def path(self, mp3_path: str) -> Path:
        """Audio file of the clip whose annotation says ``mp3_path``."""
        rel = mp3_path[:-4] + ".npy" if self.kind == "npy" and mp3_path.endswith(".mp3") else mp3_path
        return self.base / rel


def find_audio(root: str | os.PathLike, kind: str = "auto") -> AudioLayout:
    """Find the audio folder of a dataset root.

    Looks, in order, for ``ROOT/waveform/<f>`` (pre-decoded 16 kHz ``.npy``), ``ROOT/mp3/<f>`` and
    ``ROOT/<f>`` (MP3), where ``<f>`` is one of the 16 folders ``0``-``f``.

    Parameters
    ----------
    root : path
        Dataset root, the folder holding ``annotations_final.csv``.
    kind : {'auto', 'mp3', 'npy'}
        Force one layout instead of detecting it.
    """
    root = Path(root)
    candidates = {"npy": [root / "waveform"], "mp3": [root / "mp3", root]}
    if kind not in ("auto", "mp3", "npy"):
        raise ValueError(f"unknown audio kind {kind!r}; choose auto, mp3 or npy")
    kinds = ["npy", "mp3"] if kind == "auto" else [kind]
    for k in kinds:
        for base in candidates[k]:
            if any((base / f).is_dir() for f in FOLDERS):
                return AudioLayout(k, base)
    looked = ", ".join(str(b) for k in kinds for b in candidates[k])
    raise DatasetError(f"{root}: no audio folders 0-9/a-f found (looked in {looked})")
