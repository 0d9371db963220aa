"""musicnn's taggram as a stored feature (features/taggram.py; extract --features ...,musicnn; train --inputs)."""
import json

import h5py
import numpy as np
import pytest
import torch

from features import taggram
from features.frontend import FrontEnd
from tests.conftest import MTAT_MP3, tiny_features

try:
    taggram.package_dir()
    HAVE = True
except taggram.PretrainedError:
    HAVE = False
needs_pkg = pytest.mark.skipif(not HAVE, reason="the musicnn package is not installed "
                                                "(pip install --no-deps musicnn==0.1.0, as make setup does)")
# musicnn's README: top_tags('joram-moments_of_clarity-08-solipsism-59-88.mp3', model='MTT', topN=10)
DOCUMENTED_MTAT = ['techno', 'electronic', 'synth', 'fast', 'beat', 'drums', 'no vocals', 'no vocal', 'dance',
                   'ambient']


@pytest.fixture(scope="module")
def net():
    if not HAVE:
        pytest.skip("the musicnn package is not installed")
    return taggram.load_network()


@pytest.mark.parametrize("n,starts", [(1, [0]), (187, [0]), (188, [0, 1]), (374, [0, 187]), (500, [0, 187, 313])])
def test_windows_cover_every_frame_once_from_the_start(n, starts):
    got = taggram.window_starts(n)
    assert got == starts
    covered = np.zeros(n, bool)
    for s in got:
        covered[s:s + min(n, taggram.WINDOW)] = True
    assert covered.all()


@needs_pkg
def test_taggram_frames_are_each_windows_probabilities_and_batch_free(net):
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(3, 96, 450, generator=g) * 12 - 40
    lengths = [450, 300, 100]  # a tail window, a tail window, one short window
    for i, n in enumerate(lengths):
        mel[i, :, n:] = 0
    rows = taggram.taggram_frames(net, mel, lengths, batch=4)
    assert rows.shape == (3, 450, 50)
    with torch.no_grad():
        def p(i, s, n=taggram.WINDOW):
            return torch.sigmoid(net(mel[i:i + 1, :, s:s + n]))[0]
        torch.testing.assert_close(rows[0, :187], p(0, 0).expand(187, -1))
        torch.testing.assert_close(rows[0, 187:374], p(0, 187).expand(187, -1))
        torch.testing.assert_close(rows[0, 374:], p(0, 450 - 187).expand(76, -1))  # the tail window
        torch.testing.assert_close(rows[1, 187:300], p(1, 300 - 187).expand(113, -1))
        torch.testing.assert_close(rows[2, :100], p(2, 0, 100).expand(100, -1))
    assert (rows[1, 300:] == 0).all() and (rows[2, 100:] == 0).all()
    alone = taggram.taggram_frames(net, mel[1:2, :, :300], [300])
    torch.testing.assert_close(alone[0], rows[1, :300])


@needs_pkg
def test_taggram_of_the_real_fixture_gives_musicnns_documented_tags(fixtures_dir):
    from data.audio import load_audio

    y = torch.from_numpy(load_audio(MTAT_MP3))[None]
    out = FrontEnd(("mel", "musicnn"))(y)
    rows = out["musicnn"][0]
    assert rows.shape == (out["mel"].shape[1], 50) and float(rows.min()) >= 0 and float(rows.max()) <= 1
    tags = taggram.labels("MTT_musicnn")
    top = [tags[i] for i in rows.mean(dim=0).argsort(descending=True)[:3]]
    assert set(top) <= set(DOCUMENTED_MTAT), top


@needs_pkg
def test_extract_stores_musicnn_and_the_trainer_takes_it(tmp_path):
    from train import run

    feats = tiny_features(tmp_path, "mel,musicnn", 4)
    with h5py.File(feats, "r") as f:
        mel, rows = f["mel"][:], f["musicnn"][:]
        start, n = int(f["frame_start"][0]), int(f["n_frames"][0])
    assert rows.shape == (len(mel), 50) and np.isfinite(rows).all()
    # The stored rows are the network's on the stored log-mel (float32 file: the same numbers).
    clip = torch.from_numpy(mel[start:start + n].T[None].copy())
    again = taggram.taggram_frames(taggram.load_network(), clip, [n])[0].numpy()
    np.testing.assert_allclose(rows[start:start + n], again, atol=1e-5)
    out = tmp_path / "run"
    assert run.main(["--features", str(feats), "--inputs", "mel,musicnn", "--out", str(out), "--epochs", "1",
                     "--crops-per-clip", "1", "--batch", "4", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["inputs"] == ["mel", "musicnn"]


def test_missing_package_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from pipeline import extract
    from tests.conftest import make_corpus

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    make_corpus(tmp_path / "c", per_folder=1)
    code = extract.main(["--data", str(tmp_path / "c"), "--out", str(tmp_path / "f.h5"), "--workers", "0",
                         "--quiet", "--features", "mel,musicnn"])
    assert code == 2 and "pip install --no-deps musicnn==0.1.0" in capsys.readouterr().err
    assert not (tmp_path / "f.h5").exists()
