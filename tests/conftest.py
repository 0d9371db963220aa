"""Shared test material: the real MP3 fixtures and a tiny MTAT-shaped corpus built from tones."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.mtat import FOLDERS, TAGS

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
MTAT_MP3 = FIXTURES / "mtat_joram-moments_of_clarity-08-solipsism-59-88.mp3"
MSD_MP3 = FIXTURES / "msd_TRWJAZW128F42760DD_preview_22k_stereo.mp3"


@pytest.fixture(scope="session", autouse=True)
def away_from_cache(tmp_path_factory):
    """Run every test in a scratch folder: a command's default paths (cache/...) never reach the user's cache."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(here)


@pytest.fixture
def fixtures_dir():
    if not MTAT_MP3.is_file() or not MSD_MP3.is_file():
        pytest.skip(f"real MP3 fixtures not found in {FIXTURES}")
    return FIXTURES


def write_csv(path: Path, rows: list[list[str]], columns=None) -> None:
    """Write an annotation file as MTAT distributes it: tab-separated, every field quoted."""
    columns = columns or ["clip_id", *TAGS, "mp3_path"]
    with open(path, "w", newline="") as fh:
        csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_ALL).writerows([columns, *rows])


def make_corpus(root: Path, per_folder: int = 2, layout: str = "mp3", seed: int = 0) -> list[str]:
    """A tiny MTAT-shaped corpus of tone clips, 3.5-5.5 s long, in every folder 0-f.

    ``layout``: ``'mp3'`` (ROOT/mp3/<f>), ``'flat'`` (ROOT/<f>) or ``'npy'`` (ROOT/waveform/<f>, the
    decoded MP3 saved as float32). Returns the ``mp3_path`` of every clip, in CSV order. Clip 1 of
    every folder has a tag; clip 0 of folder 'e' has none of the 50 tags (it must be dropped).
    """
    rng = np.random.default_rng(seed)
    rows, names = [], []
    base = {"mp3": root / "mp3", "flat": root, "npy": root / "waveform"}[layout]
    for k, f in enumerate(FOLDERS):
        (base / f).mkdir(parents=True, exist_ok=True)
        for j in range(per_folder):
            name = f"{f}/artist_{k}-album-{j:02d}-track_{j}-0-29.mp3"
            t = np.arange(int(16000 * (3.5 + (k + j) % 3))) / 16000
            y = (0.2 + 0.1 * j) * np.sin(2 * np.pi * (110 * (1 + k % 5) + 30 * j) * t) + 0.01 * rng.standard_normal(len(t))
            mp3 = (root / "mp3" / name) if layout == "npy" else base / name
            mp3.parent.mkdir(parents=True, exist_ok=True)
            sf.write(mp3, y.astype(np.float32), 16000, format="MP3")
            if layout == "npy":
                np.save((base / name).with_suffix(".npy"), sf.read(mp3, dtype="float32")[0])
            labels = (rng.random(len(TAGS)) < 0.08).astype(int)
            labels[(k + j) % len(TAGS)] = 1
            if f == "e" and j == 0:
                labels[:] = 0
            rows.append([str(1000 + len(rows)), *map(str, labels), name])
            names.append(name)
    write_csv(root / "annotations_final.csv", rows)
    return names


def tiny_features(root: Path, features: str, per_folder: int = 2, *extra: str, name: str = "f.h5") -> Path:
    """:func:`make_corpus` under ``root/corpus`` and its features file ``root/name``, extracted in-process.

    ``features`` is ``--features``; ``extra`` more arguments of ``pipeline/extract.py``.
    """
    from pipeline import extract

    make_corpus(root / "corpus", per_folder=per_folder)
    out = root / name
    assert extract.main(["--data", str(root / "corpus"), "--out", str(out), "--workers", "0", "--quiet",
                         "--features", features, *extra]) == 0
    return out


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    make_corpus(root)
    return root


def die_after_writes(monkeypatch, n: int) -> None:
    """Make extraction's writer raise KeyboardInterrupt after ``n`` batches, as if killed between two."""
    from pipeline import store

    real_write, calls = store.Writer.write, {"n": 0}

    def write_then_die(self, *a, **k):
        if calls["n"] == n:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_write(self, *a, **k)

    monkeypatch.setattr(store.Writer, "write", write_then_die)
