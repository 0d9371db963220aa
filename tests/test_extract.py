import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from data.audio import load_audio
from data.mtat import TAGS, find_audio, read_annotations
from features.frontend import FeatureParams, FrontEnd
from pipeline import engine, extract, store
from tests.conftest import die_after_writes, make_corpus, write_csv

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--features", "mel,mfcc,chroma", "--workers", "0", "--batch", "4", "--quiet"]


def run(corpus, out, *extra):
    return extract.main([*ARGS, "--data", str(corpus), "--out", str(out), *extra])


def read_all(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def test_extract_round_trip(corpus, tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert run(corpus, out, "--split", "standard") == 0
    assert not out.with_name("f.h5.part").exists()
    text = capsys.readouterr().out
    assert "train" in text and "clips/s" in text
    clips = read_annotations(corpus / "annotations_final.csv", "standard")
    data, attrs = read_all(out)
    assert attrs["features"] == "mel,mfcc,chroma" and attrs["n_mels"] == 96 and attrs["split_scheme"] == "standard"
    assert attrs["hop_length"] == 256 and attrs["source"] == str(corpus.resolve()) and attrs["audio_kind"] == "mp3"
    assert attrs["stft"] == "fft"  # auto on the CPU
    assert [t.decode() for t in data["tags"]] == list(TAGS)
    np.testing.assert_array_equal(data["clip_id"], clips["clip_id"])
    np.testing.assert_array_equal(data["labels"], clips[list(TAGS)].to_numpy())
    assert [s.decode() for s in data["split"]] == clips["split"].tolist()
    assert (data["status"] == 1).all()
    # Every stored clip equals the front-end applied to that clip alone, padding zeroed.
    fe = FrontEnd(("mel", "mfcc", "chroma"), FeatureParams(stft="fft"))
    layout = find_audio(corpus)
    with h5py.File(out, "r") as f:
        for i in (0, 7, len(clips) - 1):
            y = load_audio(layout.path(clips["mp3_path"][i]))
            ref = fe(torch.from_numpy(y)[None])
            n = int(ref["n_frames"][0])
            assert data["n_frames"][i] == n
            for name in ("mel", "mfcc", "chroma"):
                np.testing.assert_allclose(store.read_clip(f, name, i), ref[name][0].numpy(), atol=1e-3)
                assert (store.read_clip(f, name, i, valid=False)[n:] == 0).all()
    # Each clip has the room its own header length needs (not the longest clip's), back to back.
    room, n_frames = data["room"], data["n_frames"]
    assert len(set(n_frames)) > 1 and (room >= n_frames).all() and (room - n_frames < 63).all()
    np.testing.assert_array_equal(data["frame_start"], np.concatenate([[0], np.cumsum(room)[:-1]]))
    assert len(data["mel"]) == room.sum() and attrs["dtype"] == "float32"


def test_memmap_offsets_equal_h5py(corpus, tmp_path):
    out = tmp_path / "f.h5"
    assert run(corpus, out, "--features", "mel,chroma") == 0
    data, attrs = read_all(out)
    for name, bins in (("mel", 96), ("chroma", 12)):
        offsets, step = store.chunk_offsets(out, name)
        assert step == store.CHUNK_FRAMES and len(offsets) == -(-len(data[name]) // step) > 2
        mm = np.memmap(out, dtype=np.float32, mode="r")
        for k in range(len(offsets)):
            ref = data[name][k * step:(k + 1) * step]
            chunk = np.asarray(mm[offsets[k] // 4:offsets[k] // 4 + ref.size]).reshape(-1, bins)
            np.testing.assert_array_equal(chunk, ref)
    with pytest.raises(store.StoreError, match="holds no 'mfcc' features"):
        store.chunk_offsets(out, "mfcc")


def test_both_audio_layouts_give_the_same_features(tmp_path):
    for layout in ("flat", "npy"):
        make_corpus(tmp_path / layout, per_folder=1, layout=layout)
        assert run(tmp_path / layout, tmp_path / f"{layout}.h5", "--features", "mel") == 0
    a, attrs_a = read_all(tmp_path / "flat.h5")
    b, attrs_b = read_all(tmp_path / "npy.h5")
    assert attrs_a["audio_kind"] == "mp3" and attrs_b["audio_kind"] == "npy"
    np.testing.assert_array_equal(a["n_frames"], b["n_frames"])
    with h5py.File(tmp_path / "flat.h5", "r") as fa, h5py.File(tmp_path / "npy.h5", "r") as fb:
        for i in range(len(a["n_frames"])):
            np.testing.assert_allclose(store.read_clip(fa, "mel", i), store.read_clip(fb, "mel", i), atol=1e-4)


def test_bad_clips_are_reported_and_skipped(corpus, tmp_path, capsys):
    mp3 = corpus / "mp3"
    (mp3 / "0/artist_0-album-00-track_0-0-29.mp3").write_bytes(b"")
    (mp3 / "1/artist_1-album-00-track_0-0-29.mp3").write_text("not an mp3 file at all\n" * 10)
    (mp3 / "2/artist_2-album-01-track_1-0-29.mp3").unlink()
    d_clip = mp3 / "d/artist_13-album-00-track_0-0-29.mp3"
    d_clip.write_bytes(d_clip.read_bytes()[:2000])  # truncated: too short once decoded
    out = tmp_path / "f.h5"
    assert run(corpus, out) == 0
    captured = capsys.readouterr()
    log = out.with_suffix(".log").read_text().splitlines()
    assert len(log) == 4
    for name, why in [("0/artist_0-album-00", "file is empty"), ("1/artist_1-album-00", "not an audio file the decoder can read"),
                      ("2/artist_2-album-01", "file not found"), ("d/artist_13-album-00", "too short")]:
        assert any(name in line and why in line for line in log), (name, why)
        assert name in captured.out  # named in the end summary too
    data, _ = read_all(out)
    assert (data["status"] == -1).sum() == 4 and (data["status"] == 1).sum() == len(data["status"]) - 4


def test_nothing_extracted_fails(tmp_path):
    make_corpus(tmp_path, per_folder=1)
    for p in (tmp_path / "mp3").rglob("*.mp3"):
        p.write_bytes(b"")
    assert run(tmp_path, tmp_path / "f.h5") == 2
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("argv,message", [
    (["--features", "mel,tempo"], "unknown feature"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--split", "random"], "invalid choice: 'random'"),
    (["--data", "/no/such/folder"], "--data /no/such/folder: not a folder"),
    (["--min-seconds", "10", "--max-seconds", "5"], "--min-seconds"),
    (["--f-max", "12000"], "f_max"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        extract.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_csv_missing_columns_exit_2(corpus, tmp_path, capsys):
    write_csv(corpus / "annotations_final.csv", [["1", *["0"] * 50]], ["clip_id", *TAGS])
    assert run(corpus, tmp_path / "f.h5") == 2
    assert "annotations_final.csv: missing 1 required column(s): 'mp3_path'" in capsys.readouterr().err


def test_other_parameters_never_mix(corpus, tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert run(corpus, out, "--features", "mel") == 0
    before = out.read_bytes()
    assert run(corpus, out, "--features", "mel") == 0  # same settings: nothing to do
    assert "already complete" in capsys.readouterr().out
    assert run(corpus, out, "--features", "mel", "--n-mels", "64") == 2
    assert "other settings (n_mels)" in capsys.readouterr().err
    assert run(corpus, out, "--features", "mel,mfcc") == 2
    assert run(corpus, out, "--features", "mel", "--stft", "nnaudio") == 2  # the CPU's auto is fft
    assert "other settings (stft)" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert run(corpus, out, "--features", "mel", "--max-seconds", "4") == 2  # clips cut to other lengths
    assert "max_seconds 600.0 in the file, 4.0 asked" in capsys.readouterr().err
    # the same clips of another version of the annotation file (a label changed)
    csv = corpus / "annotations_final.csv"
    rows = csv.read_text().splitlines()
    cells = rows[1].split("\t")
    cells[1] = "1" if cells[1] == "0" else "0"
    csv.write_text("\n".join([rows[0], "\t".join(cells), *rows[2:]]) + "\n")
    assert run(corpus, out, "--features", "mel") == 2
    assert f"{out} was made from another annotation file or version of it" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert run(corpus, out, "--features", "mel", "--n-mels", "64", "--overwrite") == 0
    assert read_all(out)[1]["n_mels"] == 64
    with h5py.File(out, "a") as f:  # a file made before the lengths were recorded: they are not known
        del f.attrs["min_seconds"], f.attrs["max_seconds"]
    capsys.readouterr()
    assert run(corpus, out, "--features", "mel", "--n-mels", "64", "--max-seconds", "30") == 0
    assert "already complete" in capsys.readouterr().out


def test_resume_after_interruption_equals_uninterrupted(corpus, tmp_path, monkeypatch, capsys):
    full = tmp_path / "full.h5"
    assert run(corpus, full) == 0
    out = tmp_path / "f.h5"
    die_after_writes(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out)
    monkeypatch.undo()
    part = out.with_name("f.h5.part")
    assert not out.exists() and part.exists()
    assert (store.read_table(part)["status"] == 1).sum() == 12  # three batches of 4 were kept
    assert run(corpus, out, "--n-mfcc", "13") == 2  # a partial run is not mixed with other settings either
    assert run(corpus, out, "--max-seconds", "4") == 2  # nor cut to other lengths
    assert "other settings (max_seconds)" in capsys.readouterr().err
    # --overwrite discards a partial run it cannot continue; this one it can, and continues
    assert run(corpus, out, "--overwrite") == 0
    assert "resumed    12 clips were already done" in capsys.readouterr().out
    a, attrs_a = read_all(full)
    b, attrs_b = read_all(out)
    assert attrs_a == attrs_b and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


SLOW_WRITES = """
import runpy, sys, time
from pipeline import store
write = store.Writer.write
def slow(*a, **k):
    time.sleep(0.2)
    return write(*a, **k)
store.Writer.write = slow
sys.argv[0] = "pipeline/extract.py"
runpy.run_path("pipeline/extract.py", run_name="__main__")
"""


def test_resume_after_sigkill(tmp_path):
    """A real kill -9 at an arbitrary moment: the re-run completes and equals a clean run."""
    corpus = tmp_path / "c"
    make_corpus(corpus, per_folder=3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "pipeline/extract.py", "--data", str(corpus), "--features", "mel",
           "--workers", "0", "--batch", "2", "--quiet"]
    clean = subprocess.run([*cmd, "--out", str(tmp_path / "clean.h5")], cwd=REPO, env=env, capture_output=True)
    assert clean.returncode == 0, clean.stderr.decode()
    out = tmp_path / "killed.h5"
    # The same command with each write held 0.2 s, so that the kill lands mid-run however fast the
    # machine (on a fast one the whole run once ended within the 0.3 s below).
    slowed = [sys.executable, "-c", SLOW_WRITES, *cmd[2:]]
    proc = subprocess.Popen([*slowed, "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = out.with_name("killed.h5.part")
    deadline = time.time() + 60
    while not part.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # let it write some batches
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    done = subprocess.run([*cmd, "--out", str(out)], cwd=REPO, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    a, b = read_all(tmp_path / "clean.h5")[0], read_all(out)[0]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_help_runs_from_repo_root():
    res = subprocess.run([sys.executable, "pipeline/extract.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "--features" in res.stdout and "--split" in res.stdout


def test_float16_storage_equals_float32_rounded(corpus, tmp_path):
    from train.feed import FeatureFile
    a, b = tmp_path / "f32.h5", tmp_path / "f16.h5"
    assert run(corpus, a) == 0 and run(corpus, b, "--dtype", "float16") == 0
    da, attrs_a = read_all(a)
    db, attrs_b = read_all(b)
    assert attrs_b["dtype"] == "float16" and db["mel"].dtype == np.float16
    for name in ("mel", "mfcc", "chroma"):
        # float16 keeps 11 significant bits: relative error at most 2**-11, absolute 2**-25 for subnormals.
        np.testing.assert_allclose(db[name].astype(np.float32), da[name], rtol=2 ** -11, atol=2 ** -24)
        np.testing.assert_array_equal(db[name], da[name].astype(np.float16))
    fa, fb = FeatureFile(a, ("mel", "mfcc", "chroma")), FeatureFile(b, ("mel", "mfcc", "chroma"))
    for i in (0, len(fa) - 1):
        xa, xb = fa.crop(i, 3, 50), fb.crop(i, 3, 50)
        assert xb.dtype == np.float32
        np.testing.assert_allclose(xb, xa, rtol=2 ** -11, atol=2 ** -24)
    assert b.stat().st_size < 0.6 * a.stat().st_size
    assert run(corpus, b) == 2  # a float32 run never mixes into a float16 file


def test_not_enough_disk_exit_2(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(store.shutil, "disk_usage", lambda _: type("U", (), {"free": 2**19})())
    out = tmp_path / "f.h5"
    assert run(corpus, out) == 2
    err = capsys.readouterr().err
    assert "the features need" in err and "GiB but" in err and "0.00 GiB free" in err
    assert not out.exists() and not out.with_name("f.h5.part").exists()


def test_long_clips_get_their_own_room_and_the_cap_is_reported(tmp_path, capsys):
    make_corpus(tmp_path, per_folder=1)
    import soundfile as sf
    clips = read_annotations(tmp_path / "annotations_final.csv", "gct634")
    t = np.arange(16000 * 70) / 16000
    long = tmp_path / "mp3" / clips["mp3_path"][0]
    sf.write(long, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="MP3")
    out = tmp_path / "f.h5"
    assert run(tmp_path, out, "--max-seconds", "60") == 0
    assert "truncated  1 clips longer than --max-seconds" in capsys.readouterr().out
    data, _ = read_all(out)
    cap = 1 + 60 * 16000 // 256
    assert data["room"][0] == data["n_frames"][0] == cap
    assert (data["room"][1:] < 6 * 16000 // 256 + 64).all()  # the short clips stay short
    assert len(data["mel"]) == data["room"].sum()


def test_batches_are_bounded_in_clips_and_frames():
    rooms = np.array([100] * 5 + [1000] + [100] * 3 + [5000] + [100] * 2)
    ranges = engine.plan_batches(rooms, batch=4, budget=2000)
    assert ranges[0] == (0, 4) and ranges[-1][1] == len(rooms)
    assert [i for b, e in ranges for i in range(b, e)] == list(range(len(rooms)))  # a partition, in order
    for b, e in ranges:
        assert e - b <= 4 and ((e - b) * rooms[b:e].max() <= 2000 or e - b == 1)
    assert (9, 10) in ranges  # longer than the budget: a batch of its own


def test_out_folder_is_refused_before_any_work(corpus, tmp_path, capsys):
    (tmp_path / "feats").mkdir()
    with pytest.raises(SystemExit) as exc:
        run(corpus, tmp_path / "feats", "--overwrite")
    assert exc.value.code == 2 and "is a folder; give a file name" in capsys.readouterr().err
    assert list((tmp_path / "feats").iterdir()) == [] and not (tmp_path / "feats.part").exists()


def test_interrupted_extraction_says_how_to_continue(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "f.h5"
    die_after_writes(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out)
    err = capsys.readouterr().err
    assert f"interrupted: {out}.part keeps the 4 of" in err and "run the same command again" in err


def _same_features(a, b, rtol=1e-5, atol=1e-4):
    (da, _), (db, _) = read_all(a), read_all(b)
    for k in ("status", "n_frames", "frame_start", "room", "labels"):
        np.testing.assert_array_equal(da[k], db[k])
    for k in ("mel", "mfcc", "chroma", "rhythm"):
        np.testing.assert_allclose(db[k], da[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_gpu_pipeline_runs_on_the_cpu_and_gives_the_same_file(corpus, tmp_path, workers):
    # --place main is the GPU's pipeline (padded batches to this process, front-end here, copy back
    # and writes behind in a thread); on the CPU it must give what the workers' front-end gives.
    ref, main = tmp_path / "workers.h5", tmp_path / "main.h5"
    assert run(corpus, ref, "--workers", workers, "--place", "workers") == 0
    assert run(corpus, main, "--workers", workers, "--place", "main") == 0
    _same_features(ref, main)


def test_gpu_pipeline_resumes_to_the_uninterrupted_file(corpus, tmp_path, monkeypatch, capsys):
    full, out = tmp_path / "full.h5", tmp_path / "f.h5"
    assert run(corpus, full, "--place", "main") == 0
    die_after_writes(monkeypatch, 2)  # the write-behind thread is killed at its third batch
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out, "--place", "main")
    monkeypatch.undo()
    assert (store.read_table(out.with_name("f.h5.part"))["status"] == 1).sum() == 8  # two batches of 4 kept
    assert run(corpus, out, "--place", "main") == 0
    a, _ = read_all(full)
    b, _ = read_all(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_small_jobs_give_every_worker_a_batch():
    frames = 1 + 30 * 16000 // 256
    cpu = torch.device("cpu")
    clips, budget = engine.batch_limits(cpu, workers=16, n_clips=200, batch=None, frames_30s=frames)
    rooms = np.full(200, frames)
    assert clips == 13 and len(engine.plan_batches(rooms, clips, budget)) >= 16  # not 7 batches of 32
    assert engine.batch_limits(cpu, workers=2, n_clips=21108, batch=None, frames_30s=frames)[0] == 32
    cuda_clips, cuda_budget = engine.batch_limits(torch.device("cuda"), 16, 21108, None, frames)
    assert cuda_clips == 256 and cuda_budget == 128 * frames  # a GPU batch is sized by audio


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extraction_on_cuda_equals_the_cpu(corpus, tmp_path):
    cpu, cuda = tmp_path / "cpu.h5", tmp_path / "cuda.h5"
    assert run(corpus, cpu, "--device", "cpu", "--stft", "fft") == 0
    assert run(corpus, cuda, "--device", "cuda", "--stft", "nnaudio", "--workers", "2") == 0
    # the two STFT back-ends and devices agree within the front-end's parity tolerances (dB, MFCC, chroma)
    (da, _), (db, _) = read_all(cpu), read_all(cuda)
    np.testing.assert_array_equal(da["n_frames"], db["n_frames"])
    # each is within test_features.TOL of librosa, so within twice that of each other
    np.testing.assert_allclose(db["mel"], da["mel"], atol=0.02)
    np.testing.assert_allclose(db["mfcc"], da["mfcc"], atol=0.1)
    np.testing.assert_allclose(db["chroma"], da["chroma"], atol=2e-4)
    # rhythm statistics derive from the mel: the onset strength follows it (a tempo may tie-break otherwise)
    assert np.isfinite(db["rhythm"]).all()
    np.testing.assert_allclose(db["rhythm"][:, 2], da["rhythm"][:, 2], rtol=1e-2, atol=1e-3)
