"""The real MTAT annotation file and the published split of Won et al. 2020 (``../shared/mtat-real``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.mtat import TAGS, read_annotations

REAL = Path(__file__).resolve().parents[2] / "shared" / "mtat-real"
CSV = REAL / "annotations_final.csv"
BROKEN = {35644, 55753, 57881}  # the release's clips without a usable MP3


@pytest.fixture(scope="module")
def real_csv():
    if not CSV.is_file():
        pytest.skip(f"real annotation file not found in {REAL}")
    return CSV


@pytest.fixture(scope="module")
def rows_of(real_csv):
    """0-based CSV row of each clip_id (the row that ``sota-split`` and ``binary.npy`` index)."""
    ids = pd.read_csv(real_csv, sep="\t", usecols=["clip_id"])["clip_id"].to_numpy()
    return pd.Series(np.arange(len(ids)), index=ids)


def test_file_is_as_distributed(real_csv):
    raw = real_csv.read_bytes()
    header = raw.split(b"\r\n", 1)[0].decode().split("\t")
    assert raw.count(b"\r\n") == 25_864 and raw.count(b"\n") == 25_864  # CRLF, header + 25,863 clips
    assert len(header) == 190 and header[0] == '"clip_id"' and header[-1] == '"mp3_path"'
    tags = [h.strip('"') for h in header[1:-1]]
    assert tags[:50] != list(TAGS) and set(TAGS) <= set(tags)  # the top-50 are not the first columns


@pytest.mark.parametrize("scheme, counts", [("gct634", (6206, 1529, 1339)), ("standard", (15250, 1529, 4332))])
def test_split_sizes(real_csv, scheme, counts):
    df = read_annotations(real_csv, scheme)
    assert tuple(int((df["split"] == s).sum()) for s in ("train", "valid", "test")) == counts
    assert list(df.columns[2:52]) == list(TAGS)


def test_labels_equal_published_binary(real_csv, rows_of):
    df = read_annotations(real_csv, None)
    assert len(df) == 21_111
    binary = np.load(REAL / "sota-split" / "binary.npy")
    assert binary.shape == (25_863, 50)
    rows = rows_of[df["clip_id"]].to_numpy()
    np.testing.assert_array_equal(df[list(TAGS)].to_numpy(), binary[rows].astype(np.uint8))
    # Every clip left out has none of the 50 tags.
    dropped = np.setdiff1d(np.arange(len(binary)), rows)
    assert binary[dropped].sum() == 0


def test_tag_order_equals_published(real_csv):
    assert list(np.load(REAL / "sota-split" / "tags.npy", allow_pickle=True)) == list(TAGS)


def _published(name: str) -> tuple[np.ndarray, np.ndarray]:
    entries = np.load(REAL / "sota-split" / f"{name}.npy", allow_pickle=True)
    rows, paths = zip(*(e.split("\t") for e in entries))
    return np.array(rows, dtype=np.int64), np.array(paths)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_standard_split_equals_published(real_csv, rows_of, split):
    df = read_annotations(real_csv, "standard")
    part = df[df["split"] == split]
    mine = set(zip(rows_of[part["clip_id"]].to_numpy().tolist(), part["mp3_path"]))
    rows, paths = _published(split)
    theirs = set(zip(rows.tolist(), paths.tolist()))
    if split == "train":  # the published list leaves out the three broken clips; extraction skips them
        broken = {(int(rows_of[c]), p) for c, p in zip(part["clip_id"], part["mp3_path"]) if c in BROKEN}
        assert len(broken) == 3 and mine - theirs == broken and theirs <= mine
    else:
        assert mine == theirs
