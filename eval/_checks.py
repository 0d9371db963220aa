"""Input checks and file loading shared by the evaluators.

Every check raises ``ValueError`` with a message that starts with the name of the offending
array or file and says what is wrong; the command-line tools turn it into exit status 2.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

#: File names the trainer writes in a run folder.
LABELS_FILE = "labels.npy"
CLIP_IDS_FILE = "clip_ids.npy"
TAGS_FILE = "tags.json"


def real_array(a, name: str) -> np.ndarray:
    """Check that ``a`` holds real numbers (bool, integer or float up to 64 bits).

    Parameters
    ----------
    a : array_like
    name : str
        Used in the error message.

    Returns
    -------
    np.ndarray
        ``a`` as an array, not copied when it already is one.

    Raises
    ------
    ValueError
        For complex, object, string, date or structured data, or floats wider than 64 bits
        (they would be rounded).
    """
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise ValueError(f"{name}: dtype {arr.dtype} is not a real number type "
                         "(expected bool, integer, float32 or float64)")
    return arr


def finite_matrix(a, name: str, what: str) -> np.ndarray:
    """Check a 2-D array of finite real numbers with at least one row and one column.

    Parameters
    ----------
    a : array_like
    name : str
        Used in the error message.
    what : str
        What the axes are, e.g. ``'clips x dimensions'``.

    Returns
    -------
    np.ndarray
        ``a`` as an array (not converted).

    Raises
    ------
    ValueError
        Wrong dtype, not 2-D, empty, or containing NaN or infinity.
    """
    arr = real_array(a, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array ({what}), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {arr.shape} ({what})")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            n_nan = int(np.isnan(arr).sum())
            raise ValueError(f"{name}: {int(bad.sum())} non-finite values ({n_nan} NaN), "
                             f"the first at row {r}, column {c}")
    return arr


def binary_labels(a, name: str, shape: tuple[int, ...], shape_of: str) -> np.ndarray:
    """Check a 0/1 (or bool) label array of a given shape.

    Parameters
    ----------
    a : array_like
    name : str
        Used in the error message.
    shape : tuple of int
        Required shape.
    shape_of : str
        Name of the array whose shape must be matched, for the message.

    Returns
    -------
    np.ndarray [dtype=uint8]
        C-contiguous 0/1 labels.

    Raises
    ------
    ValueError
        Wrong dtype or shape, or a value other than 0 and 1.
    """
    arr = real_array(a, name)
    if arr.shape != shape:
        if arr.ndim == len(shape) and arr.shape[1:] == shape[1:]:
            raise ValueError(f"{name}: {arr.shape[0]} rows but {shape_of} has {shape[0]}")
        raise ValueError(f"{name}: shape {arr.shape} does not match {shape_of} {shape}")
    if arr.dtype.kind != "b":
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            at = f"row {where[0]}, column {where[1]}" if len(where) == 2 else f"index {where}"
            raise ValueError(f"{name}: labels must be 0 or 1; found {arr[where].item()!r} at "
                             f"{at} ({int(bad.sum())} such values)")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def load_npy(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Load one array from a ``.npy`` file without unpickling anything.

    Parameters
    ----------
    path : path
    name : str, optional
        Used in the error message; defaults to the path.

    Returns
    -------
    np.ndarray

    Raises
    ------
    ValueError
        Missing, empty, unreadable or not an ``.npy`` array (an ``.npz`` archive, a pickle,
        an object array).
    """
    p = Path(path)
    name = name or str(p)
    if not p.exists():
        raise ValueError(f"{name}: no such file")
    if not p.is_file():
        raise ValueError(f"{name}: not a file")
    if p.stat().st_size == 0:
        raise ValueError(f"{name}: empty file")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if magic.startswith(b"PK"):
        raise ValueError(f"{name}: is an .npz (zip) archive, expected a single .npy array")
    if magic != b"\x93NUMPY":
        raise ValueError(f"{name}: not a .npy file (no NumPy header)")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read as a .npy array ({exc})") from None
    return arr


def beside(path: str | os.PathLike, filename: str) -> Path:
    """``filename`` in the folder of ``path`` (where the trainer writes its run files)."""
    return Path(path).resolve().parent / filename


def labels_beside(path: str | os.PathLike, given: str | None) -> tuple[str, np.ndarray]:
    """The labels that go with a run file: ``given``, else ``labels.npy`` beside ``path``.

    Returns
    -------
    labels_path : str
    labels : np.ndarray
        As :func:`load_npy` reads it (checked by the caller).

    Raises
    ------
    ValueError
        When no ``given`` path and no labels file beside ``path``, or the file cannot be read.
    """
    labels_path = given or str(beside(path, LABELS_FILE))
    if given is None and not Path(labels_path).is_file():
        raise ValueError(f"{path}: no --labels given and no {LABELS_FILE} beside it ({labels_path})")
    return labels_path, load_npy(labels_path)


def check_same_clips(path: str | os.PathLike, other: str | os.PathLike) -> None:
    """Refuse to pair two run files whose ``clip_ids.npy`` (beside each, as the trainer and
    ``train/embed.py`` write them) say they score other clips, or the same in another order.

    Raises
    ------
    ValueError
        Naming both files, when both have clip ids and these differ.
    """
    a, b = beside(path, CLIP_IDS_FILE), beside(other, CLIP_IDS_FILE)
    if a == b or not (a.is_file() and b.is_file()):
        return
    ia, ib = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
    if not np.array_equal(ia, ib):  # other shapes too
        raise ValueError(f"{other}: its clips ({b}) are not those of {path} ({a}), in the same order; a paired "
                         "difference compares two systems on the same clips (make both from one features file "
                         "and split)")


def tag_names_beside(path: str | os.PathLike, n_tags: int) -> list[str] | None:
    """Tag names from ``tags.json`` beside ``path``, or ``None`` when there is no such file.

    Parameters
    ----------
    path : path
        A file of the run folder (predictions or embeddings).
    n_tags : int
        Number of label columns the names must match.

    Returns
    -------
    list of str or None

    Raises
    ------
    ValueError
        When the file exists but is not a JSON list of ``n_tags`` strings.
    """
    p = beside(path, TAGS_FILE)
    if not p.is_file():
        return None
    try:
        names = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read as JSON ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise ValueError(f"{p}: expected a JSON list of tag names")
    if len(names) != n_tags:
        raise ValueError(f"{p}: {len(names)} tag names but the labels have {n_tags} columns")
    return names


def parse_ks(text: str) -> tuple[int, ...]:
    """Parse ``'1,2,4,8'`` into increasing distinct positive integers.

    Parameters
    ----------
    text : str

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        Empty, non-integer or non-positive entries.
    """
    parts = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in parts):
        raise ValueError(f"--k: expected comma-separated positive integers, got {text!r}")
    try:
        ks = [int(s) for s in parts]
    except ValueError:
        raise ValueError(f"--k: expected comma-separated positive integers, got {text!r}") from None
    if min(ks) < 1:
        raise ValueError(f"--k: K must be at least 1, got {min(ks)}")
    return tuple(sorted(set(ks)))
