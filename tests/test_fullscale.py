"""The full-scale corpus builder, on rows of the real annotation file (the broken clips among them)."""
from __future__ import annotations

import pytest

from data import fullscale
from data.audio import AudioError, load_audio
from data.mtat import ANNOTATIONS, BROKEN_CLIPS, read_annotations
from pipeline import extract
from tests.test_mtat_real import CSV


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory):
    """The header and some rows of the real file, byte for byte (CRLF), with the three broken clips."""
    if not CSV.is_file():
        pytest.skip(f"real annotation file not found: {CSV}")
    lines = CSV.read_bytes().split(b"\r\n")
    broken = [ln for ln in lines if any(ln.startswith(f'"{c}"\t'.encode()) for c in BROKEN_CLIPS)]
    # Every 400th row: all 16 folders, so both split schemes have every split.
    rows = lines[1:-1][::400] + broken
    path = tmp_path_factory.mktemp("real") / ANNOTATIONS
    path.write_bytes(b"\r\n".join([lines[0], *rows, b""]))
    return path, len(rows)


def test_every_row_gets_a_file_and_the_broken_ones_break(real_subset, tmp_path):
    csv, n_rows = real_subset
    out = tmp_path / "full"
    assert fullscale.main([str(csv), "--out", str(out), "--seconds", "4", "--pool", "16", "--quiet"]) == 0
    assert (out / ANNOTATIONS).read_bytes() == csv.read_bytes()
    table = read_annotations(csv, None)
    files = sorted((out / "mp3").rglob("*.mp3"))
    assert len(files) == n_rows
    inodes = {f.stat().st_ino for f in files if f.stat().st_size > 4000}
    assert len(inodes) <= 16  # hard links to the pool, not copies
    y = load_audio(out / "mp3" / table["mp3_path"][0])
    assert abs(len(y) / 16000 - 4) < 0.2
    broken = {int(c): p for c, p in zip(table["clip_id"], table["mp3_path"]) if c in BROKEN_CLIPS}
    assert len(broken) == 3
    for path in broken.values():
        try:
            assert len(load_audio(out / "mp3" / path)) < 3 * 16000
        except AudioError:
            pass
    # Re-running finishes nothing new; other arguments are refused.
    assert fullscale.main([str(csv), "--out", str(out), "--seconds", "4", "--pool", "16", "--quiet"]) == 0
    assert fullscale.main([str(csv), "--out", str(out), "--seconds", "5", "--pool", "16", "--quiet"]) == 2


def test_extraction_reports_the_broken_clips_and_goes_on(real_subset, tmp_path, capsys):
    csv, _ = real_subset
    out = tmp_path / "full"
    assert fullscale.main([str(csv), "--out", str(out), "--seconds", "4", "--pool", "16", "--quiet"]) == 0
    h5 = tmp_path / "f.h5"
    assert extract.main(["--data", str(out), "--split", "standard", "--features", "mel", "--out", str(h5),
                         "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    log = h5.with_suffix(".log").read_text().splitlines()
    assert len(log) == 3 and "skipped    3" in text
    for name in ("norine_braun-now_and_zen-08-gently", "jacob_heringman-josquin_des_prez",
                 "american_baroque-dances_and_suites"):
        assert sum(name in line for line in log) == 1
