"""train/library.py: index a folder, update it, resume it, query it; exact search; bounded memory.

Most tests index a few short tone clips (one 3-s crop each) and the real MP3 fixtures with musicnn's
published network (``train.pretrained.convert``), and skip where the musicnn package is absent.
"""
import csv
import os
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import MSD_MP3, MTAT_MP3, tiny_features
from train import library, library_store
from train.library_store import Searcher, load_library


def lib_main(*args) -> int:
    return library.main([str(a) for a in args])


@pytest.fixture(scope="module")
def musicnn_run(tmp_path_factory):
    from train import pretrained

    try:
        pretrained.package_dir()
    except pretrained.RunError:
        pytest.skip("the musicnn package is not installed")
    return pretrained.convert("MTT_musicnn", tmp_path_factory.mktemp("runs") / "MTT_musicnn")


def tone(path: Path, freq: float, sr: int = 16000, seconds: float = 3.5, channels: int = 1, seed: int = 0,
         fmt: str | None = None) -> Path:
    """A short tone with noise (one 3-s crop), in any format, rate and channel count."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t)[:, None] + 0.02 * rng.standard_normal((len(t), channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr, format=fmt)
    return path


def small_folder(root: Path) -> Path:
    """Six tone clips in four formats, rates and channel counts, one of them in a subfolder."""
    tone(root / "a_low.wav", 110, 44100, channels=2)
    tone(root / "b_mid.flac", 440, 22050, seed=1)
    tone(root / "c_high.ogg", 1760, 48000, channels=2, seed=2)
    tone(root / "sub" / "d_noise.mp3", 220, 16000, seed=3, fmt="MP3")
    tone(root / "sub" / "e_fifth.wav", 660, 16000, seed=4)
    tone(root / "f_long.wav", 330, 16000, seconds=7.0, seed=5)  # two crops
    return root


def as_dict(index: Path) -> dict:
    lib = load_library(index)
    return {p: (lib.embedding[i], lib.scores[i]) for i, p in enumerate(lib.path)}


def assert_same_index(a: Path, b: Path) -> None:
    da, db = as_dict(a), as_dict(b)
    assert sorted(da) == sorted(db)
    for p in da:
        np.testing.assert_allclose(da[p][0], db[p][0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(da[p][1], db[p][1], rtol=0, atol=1e-6)


def count_decodes(monkeypatch) -> list:
    seen, real = [], library._decode
    monkeypatch.setattr(library, "_decode", lambda task: seen.append(Path(task[0]).name) or real(task))
    return seen


def test_index_real_files_tags_as_tag_py_and_copy_is_nearest(fixtures_dir, musicnn_run, tmp_path, capsys):
    from train import tag

    music = tmp_path / "music"
    small_folder(music)
    shutil.copy(MTAT_MP3, music / "solipsism.mp3")
    shutil.copy(MSD_MP3, music / "msd.mp3")
    (music / "copies").mkdir()
    shutil.copy(MTAT_MP3, music / "copies" / "solipsism_copy.mp3")
    (music / "broken.mp3").write_text("not audio at all")
    (music / "notes.txt").write_text("ignored")
    (music / "cover.m4a").write_bytes(b"\0" * 10)
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 2, "--quiet") == 0
    text = capsys.readouterr()
    assert "skipped: " in text.err and "broken.mp3" in text.err
    assert "failed     1 this run" in text.out and "1 .m4a files the decoder cannot read" in text.out
    lib = load_library(out)
    assert len(lib) == 9 and list(lib.path) == sorted(lib.path) and list(lib.failed) == [str(music / "broken.mp3")]
    assert lib.embedding.shape == (9, 200) and lib.scores.shape == (9, 50)
    # Tag scores: train/tag.py's clip scores (the mean over the non-overlapping crops).
    model, fe, mean, std, frames, tags = tag.load_run(musicnn_run)
    row = list(lib.path).index(str(music / "msd.mp3"))
    want = tag.tag_file(MSD_MP3, model, fe, mean, std, frames)
    np.testing.assert_allclose(lib.scores[row], want, atol=2e-5)
    assert lib.tags == tags and abs(lib.duration[row] - sf.info(MSD_MP3).duration) < 0.05
    assert lib.n_crops[row] == 10 and lib.n_crops[list(lib.path).index(str(music / "f_long.wav"))] == 2
    # A duplicated file is its copy's nearest track, at distance ~0.
    assert lib_main("similar", "solipsism_copy", "--index", out, "--k", 3, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"]["in_index"] and res["neighbours"][0]["path"] == str(music / "solipsism.mp3")
    assert res["neighbours"][0]["distance"] < 1e-6 and len(res["neighbours"]) == 3
    assert all(n["path"] != res["query"]["path"] for n in res["neighbours"])
    # A file outside the index is embedded on the fly: the index's copy of it is at distance ~0.
    assert lib_main("similar", MSD_MP3, "--index", out, "--k", 2, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert not res["query"]["in_index"] and res["neighbours"][0]["path"] == str(music / "msd.mp3")
    assert res["neighbours"][0]["distance"] < 1e-5


def test_update_adds_drops_and_redoes_only_what_changed(musicnn_run, tmp_path, monkeypatch, capsys):
    music = small_folder(tmp_path / "music")
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    before = as_dict(out)
    (music / "b_mid.flac").unlink()
    tone(music / "sub" / "d_noise.mp3", 250, 16000, seconds=4.0, seed=9, fmt="MP3")  # changed: other size
    tone(music / "g_new.wav", 880, 16000, seed=7)
    seen = count_decodes(monkeypatch)
    capsys.readouterr()
    assert lib_main("index", music, "--out", out, "--workers", 0, "--quiet", "--json") == 0  # --run: the index's
    stats = json.loads(capsys.readouterr().out)
    assert sorted(seen) == ["d_noise.mp3", "g_new.wav"]
    assert (stats["new"], stats["changed"], stats["kept"], len(stats["removed"]), stats["indexed"]) == (1, 1, 4, 1, 2)
    after = as_dict(out)
    assert str(music / "b_mid.flac") not in after and str(music / "g_new.wav") in after
    for name in ("a_low.wav", "c_high.ogg", "f_long.wav"):
        np.testing.assert_array_equal(after[str(music / name)][0], before[str(music / name)][0])
    changed = str(music / "sub" / "d_noise.mp3")
    assert not np.allclose(after[changed][0], before[changed][0])
    # Nothing changed: nothing decoded, the index kept as it is.
    seen.clear()
    assert lib_main("index", music, "--out", out, "--quiet") == 0
    assert seen == [] and "nothing to index" in capsys.readouterr().out


def test_bad_files_are_listed_and_not_retried_until_they_change(musicnn_run, tmp_path, monkeypatch, capsys):
    music = small_folder(tmp_path / "music")
    (music / "empty.wav").write_bytes(b"")
    (music / "text.flac").write_text("hello")
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    err = capsys.readouterr().err.splitlines()
    bad = [line for line in err if line.startswith("skipped: ")]
    assert len(bad) == 2 and any("empty.wav" in b and "empty" in b for b in bad) and any("text.flac" in b for b in bad)
    seen = count_decodes(monkeypatch)
    assert lib_main("index", music, "--out", out, "--workers", 0, "--quiet") == 0
    assert seen == [] and "2 earlier and unchanged" in capsys.readouterr().out
    assert lib_main("index", music, "--out", out, "--workers", 0, "--quiet", "--retry-failed") == 0
    assert sorted(seen) == ["empty.wav", "text.flac"]
    tone(music / "text.flac", 500, 16000, fmt="FLAC")  # fixed: now it is audio
    seen.clear()
    assert lib_main("index", music, "--out", out, "--workers", 0, "--quiet") == 0
    lib = load_library(out)
    assert seen == ["text.flac"] and len(lib) == 7 and list(lib.failed) == [str(music / "empty.wav")]


def interrupt_forward(monkeypatch, after: int, exc) -> None:
    real, calls = library.Embedder.forward, {"n": 0}

    def forward(self, crops):
        if calls["n"] == after:
            raise exc
        calls["n"] += 1
        return real(self, crops)

    monkeypatch.setattr(library.Embedder, "forward", forward)


def folder_and_reference(tmp_path, run):
    """The small folder, its index made without interruption (the reference), and the path of the one to test."""
    music = small_folder(tmp_path / "music")
    ref = tmp_path / "ref.h5"
    assert lib_main("index", music, "--run", run, "--out", ref, "--workers", 0, "--batch", 1, "--quiet") == 0
    return music, ref, tmp_path / "lib.h5"


def test_ctrl_c_keeps_what_was_done_and_a_rerun_finishes(musicnn_run, tmp_path, monkeypatch, capsys):
    music, ref, out = folder_and_reference(tmp_path, musicnn_run)
    with monkeypatch.context() as m:
        interrupt_forward(m, 3, KeyboardInterrupt)
        code = lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--batch", 1, "--quiet")
    assert code == 130
    text = capsys.readouterr().out
    assert "stopped    by Ctrl-C: the 3 tracks done are kept" in text and "the 3 left" in text
    assert len(load_library(out)) == 3 and not library_store.journal_dir(out).exists()
    seen = count_decodes(monkeypatch)
    assert lib_main("index", music, "--out", out, "--workers", 0, "--batch", 1, "--quiet") == 0
    assert len(seen) == 3
    assert_same_index(out, ref)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_killed_run_resumes_from_its_journal(musicnn_run, tmp_path, monkeypatch, capsys):
    music, ref, out = folder_and_reference(tmp_path, musicnn_run)
    with monkeypatch.context() as m:
        interrupt_forward(m, 4, Killed())
        with pytest.raises(Killed):
            lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--batch", 1, "--quiet",
                     "--checkpoint", 0)
    # 4 passes of one crop: a, b, c and the first of f_long's two crops; a part after each finished track.
    assert not out.exists() and len(list(library_store.journal_dir(out).glob("part-*.npz"))) == 3
    assert len(load_library(out)) == 3  # the journal is readable (queries see the work done)
    seen = count_decodes(monkeypatch)
    assert lib_main("index", music, "--out", out, "--workers", 0, "--batch", 1, "--quiet") == 0
    assert sorted(seen) == ["d_noise.mp3", "e_fifth.wav", "f_long.wav"] and not library_store.journal_dir(out).exists()
    assert_same_index(out, ref)


def test_an_index_refuses_another_run(musicnn_run, tmp_path, capsys):
    from train import pretrained

    music = small_folder(tmp_path / "music")
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    other = pretrained.convert("MTT_vgg", tmp_path / "vgg")
    capsys.readouterr()
    assert lib_main("index", music, "--run", other, "--out", out, "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was made with the run" in err[0] and "another" in err[0]


def test_errors_are_one_line_and_exit_2(musicnn_run, tmp_path, capsys):
    music = small_folder(tmp_path / "music")
    out = tmp_path / "lib.h5"
    cases = [(("index", tmp_path / "nowhere", "--run", musicnn_run, "--out", out), "no such folder"),
             (("index", music, "--out", out), "needs --run"),
             (("similar", "a_low", "--index", out), "no library index there"),
             (("tag", "rock", "--index", out), "no library index there")]
    for args, words in cases:
        assert lib_main(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    (tmp_path / "not_audio.mp3").write_text("text")
    capsys.readouterr()
    assert lib_main("similar", tmp_path / "not_audio.mp3", "--index", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not_audio.mp3" in err[0] and "not an audio file" in err[0]
    assert lib_main("similar", ".wav", "--index", out) == 2  # ambiguous: the candidates are listed
    err = capsys.readouterr().err
    assert "ambiguous: 3 tracks match" in err and str(music / "a_low.wav") in err
    assert lib_main("similar", "zzz", "--index", out) == 2
    assert lib_main("tag", "ambiant", "--index", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown tag 'ambiant'" in err[-1] and "ambient" in err[-1]


def test_tag_export_and_map(musicnn_run, tmp_path, capsys):
    music = small_folder(tmp_path / "music")
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    lib = load_library(out)
    capsys.readouterr()
    assert lib_main("tag", "Ambient", "--index", out, "--k", 3, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    t = lib.tags.index("ambient")
    assert [r["path"] for r in res["tracks"]] == [lib.path[i] for i in np.argsort(-lib.scores[:, t], kind="stable")[:3]]
    assert lib_main("export", tmp_path / "tags.csv", "--index", out, "--top", 3) == 0
    with open(tmp_path / "tags.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(lib) and rows[0]["path"] == lib.path[0]
    assert rows[0]["tag_1"] == lib.tags[int(np.argmax(lib.scores[0]))]
    assert lib_main("map", tmp_path / "map.png", "--index", out, "--query", "a_low", "--k", 2) == 0
    assert (tmp_path / "map.png").stat().st_size > 10_000 and "nearest marked" in capsys.readouterr().out


def test_a_ten_minute_file_goes_through_in_batches(musicnn_run, tmp_path, monkeypatch):
    """600 s = 200 crops of 3 s: never more than --batch crops per forward pass, nor a copy of them all."""
    import torch

    long = tone(tmp_path / "music" / "long.wav", 220, 16000, seconds=600.0)
    tone(tmp_path / "music" / "short.wav", 440, 16000)
    sizes, held, batchers = [], [], []

    def cheap(self, crops):  # the network is not what is measured: shapes only, instantly
        sizes.append(len(crops))
        held.append(len(batchers[-1].tracks))
        return torch.zeros(len(crops), 200), torch.zeros(len(crops), 50)

    real_init = library.Batcher.__init__
    monkeypatch.setattr(library.Batcher, "__init__", lambda self, e: real_init(self, e) or batchers.append(self))
    monkeypatch.setattr(library.Embedder, "forward", cheap)
    out = tmp_path / "lib.h5"
    assert lib_main("index", long.parent, "--run", musicnn_run, "--out", out, "--workers", 0, "--batch", 16,
                    "--quiet") == 0
    assert sum(sizes) == 200 + 1 and max(sizes) <= 16 and len(sizes) == -(-201 // 16)
    assert max(held) <= 2  # only the tracks with crops waiting are held
    lib = load_library(out)
    assert lib.n_crops.tolist() == [200, 1] and abs(lib.duration[0] - 600.0) < 0.01


def test_metric_run_gives_embed_py_embeddings_and_recall(tmp_path):
    """A metric run's library embeddings are train/embed.py's on the same clips, and so is Recall@K."""
    from eval.recall import recall_at_k
    from train import embed, run

    feats = tiny_features(tmp_path, "mel", 2)
    out_run = tmp_path / "metric"
    assert run.main(["--features", str(feats), "--task", "metric", "--model", "linear", "--epochs", "1",
                     "--crops-per-clip", "1", "--batch", "8", "--quiet", "--out", str(out_run)]) == 0
    emb_dir = embed.embed(out_run, feats, "all", tmp_path / "emb")
    ref, labels, ids = (np.load(emb_dir / f) for f in ("embeddings.npy", "labels.npy", "clip_ids.npy"))
    with h5py.File(feats, "r") as f:
        path_of = dict(zip(f["clip_id"][()], (p.decode() for p in f["mp3_path"][()])))
    index = tmp_path / "lib.h5"
    assert lib_main("index", tmp_path / "corpus" / "mp3", "--run", out_run, "--out", index, "--workers", 0,
                    "--quiet") == 0
    lib = load_library(index)
    row = {p: i for i, p in enumerate(lib.path)}
    got = lib.embedding[[row[str(tmp_path / "corpus" / "mp3" / path_of[i])] for i in ids]]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    a, b = recall_at_k(got, labels, ks=(1, 2, 4)), recall_at_k(ref, labels, ks=(1, 2, 4))
    assert a["recall"] == pytest.approx(b["recall"], abs=1e-12)
    assert lib.meta["task"] == "metric" and lib.scores.shape == (len(lib), 50)  # the run's tag layer


def test_searcher_is_exact_with_ties_to_the_lower_row():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    x[2000] = x[10]  # duplicates: a tie, to the lower row
    x[2001] = 3 * x[10]
    s = Searcher(x, chunk=512)
    x64 = x.astype(np.float64)
    unit = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    for q, exclude in ((10, 10), (5, 5), (-1, -1)):
        qv = x64[q] if q >= 0 else rng.standard_normal(24)
        cos = unit @ (qv / np.linalg.norm(qv))
        if exclude >= 0:
            cos[exclude] = -np.inf
        want = np.lexsort((np.arange(len(x)), -np.round(cos, 12)))[:7]
        rows, got = s.nearest(qv, 7, exclude=exclude)
        assert rows.tolist() == want.tolist()
        np.testing.assert_allclose(got, cos[want], atol=1e-12)
    rows, got = s.nearest(x64[10], 2, exclude=10)
    assert rows.tolist() == [2000, 2001] and np.allclose(got, 1.0)
    assert s.nearest(x64[0], 5000, exclude=0)[0].shape == (2999,)


def test_every_command_has_help(capsys):
    for cmd in ("index", "similar", "tag", "export", "map"):
        with pytest.raises(SystemExit) as exc:
            library.main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert f"python train/library.py {cmd}" in text and len(text) > 400


def test_one_index_run_at_a_time(musicnn_run, tmp_path, capsys):
    import os

    music = small_folder(tmp_path / "music")
    out = tmp_path / "lib.h5"
    lock = tmp_path / ".lib.h5.lock"
    lock.write_text(str(os.getpid()))  # a live process holds it
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--quiet") == 2
    assert "another index run" in capsys.readouterr().err and not out.exists()
    lock.write_text("999999999")  # left by a killed run: taken over
    assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
    assert len(load_library(out)) == 6 and not lock.exists()


def test_a_folder_without_audio_is_said_to_have_none(musicnn_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no music here")
    assert lib_main("index", tmp_path / "empty", "--run", musicnn_run, "--out", tmp_path / "lib.h5") == 0
    out = capsys.readouterr().out
    assert "no audio file" in out and "already" not in out


def test_a_name_that_is_not_utf8_is_left_out_and_said(musicnn_run, tmp_path, capsys):
    # Such a name broke every later run: its failure, kept in the journal, could not be written to the index.
    from data.audio import AudioError, load_audio

    music = tmp_path / "music"
    tone(music / "good.wav", 440, 16000)
    bad = os.path.join(os.fsencode(music), b"caf\xe9.wav")
    shutil.copy(music / "good.wav", bad)
    with pytest.raises(AudioError, match="its name is not UTF-8"):
        load_audio(os.fsdecode(bad))
    out = tmp_path / "lib.h5"
    for _ in range(2):  # and again: nothing was kept that cannot be written
        assert lib_main("index", music, "--run", musicnn_run, "--out", out, "--workers", 0, "--quiet") == 0
        assert "1 whose names are not UTF-8, left out" in capsys.readouterr().out
    assert len(load_library(out)) == 1
    # a library of one track maps on its embedding's dimensions (there is no PCA of one point)
    assert lib_main("map", tmp_path / "m.png", "--index", out) == 0
    assert "1 track on two embedding dimensions" in capsys.readouterr().out
    assert lib_main("tag", "", "--index", out) == 2
    assert "no tag given" in capsys.readouterr().err


def test_an_index_whose_run_is_gone_says_so(musicnn_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(musicnn_run, run)
    music = tmp_path / "music"
    tone(music / "a.wav", 440, 16000)
    out = tmp_path / "lib.h5"
    assert lib_main("index", music, "--run", run, "--out", out, "--workers", 0, "--quiet") == 0
    shutil.rmtree(run)
    capsys.readouterr()
    assert lib_main("index", music, "--out", out, "--quiet") == 2
    assert f"the index's run {run} is gone" in capsys.readouterr().err


def test_a_query_finds_a_name_in_either_unicode_form():
    import unicodedata

    from train.library_store import Library, find_track

    lib = Library.empty({"run": "r", "run_sha256": "x"}, 0)
    decomposed = unicodedata.normalize("NFD", "/music/café/song.mp3")  # as some file systems keep it
    lib.path = np.array([decomposed, "/music/other.mp3"])
    assert find_track(lib, "café/song.mp3") == 0 and find_track(lib, "CAFÉ") == 0
