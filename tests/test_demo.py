"""Tests of the demo corpus generator (data/demo.py): format, determinism, audio, grounding, bad input.

Tiny corpora (48 clips x 2 s) are generated once per module; acoustic checks render clips straight from
``plan`` (no MP3 round trip) with fixed seeds, so every statistic below is deterministic.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from data import demo
from data.mtat import ANNOTATIONS, FOLDERS, SPLITS, TAGS, find_audio, read_annotations

N, SEC = 48, 2.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """48 x 2 s, seed 0, rendered by two worker processes, with the waveform layout."""
    root = tmp_path_factory.mktemp("demo") / "c0"
    demo.generate(root, n_clips=N, seconds=SEC, seed=0, waveform=True, workers=2, progress=False)
    return root


@pytest.fixture(scope="module")
def corpus_w1(tmp_path_factory):
    """The same corpus rendered in-process (workers=1), without the waveform layout."""
    root = tmp_path_factory.mktemp("demo") / "c0w1"
    demo.generate(root, n_clips=N, seconds=SEC, seed=0, workers=1, progress=False)
    return root


def _mp3s(root):
    return sorted(p.relative_to(root / "mp3").as_posix() for p in (root / "mp3").rglob("*.mp3"))


# ---------------------------------------------------------------------------------------------- format

def test_csv_is_tab_separated_and_every_field_quoted(corpus):
    lines = (corpus / ANNOTATIONS).read_text().splitlines()
    assert len(lines) == N + 1
    rows = [ln.split("\t") for ln in lines]
    assert {len(r) for r in rows} == {len(rows[0])}
    assert all(f.startswith('"') and f.endswith('"') and len(f) >= 2 for r in rows for f in r)
    header = [f[1:-1] for f in rows[0]]
    assert header[0] == "clip_id" and header[-1] == "mp3_path"
    tags = header[1:-1]
    assert len(tags) == len(set(tags)) == 188  # like the real file
    assert set(TAGS) <= set(tags)
    assert len(set(tags) - set(TAGS)) == 138 and "jazz" in tags and "no beat" in tags
    values = {f[1:-1] for r in rows[1:] for f in r[1:-1]}
    assert values == {"0", "1"}
    ids = [int(r[0][1:-1]) for r in rows[1:]]
    assert ids == sorted(ids) and len(set(ids)) == N


def test_file_names_and_folders(corpus):
    df = pd.read_csv(corpus / ANNOTATIONS, sep="\t")
    pat = re.compile(r"^[0-9a-f]/[a-z0-9_]+-[a-z0-9_]+-\d\d-[a-z0-9_]+-\d+-\d+\.mp3$")
    assert all(pat.match(p) for p in df["mp3_path"]), df["mp3_path"].head()
    assert df["mp3_path"].is_unique
    per = df["mp3_path"].str[0].value_counts()
    assert set(per.index) == set(FOLDERS)
    assert per.max() - per.min() <= 4  # tracks (1-4 clips) spread over the least-filled folders
    assert _mp3s(corpus) == sorted(df["mp3_path"])


def test_read_annotations_both_schemes_every_split_and_dropped_clips(corpus):
    raw = pd.read_csv(corpus / ANNOTATIONS, sep="\t")
    none = raw[list(TAGS)].sum(axis=1) == 0
    assert none.sum() >= 1  # some clips carry only non-top-50 tags, or none at all
    for scheme, splits in SPLITS.items():
        df = read_annotations(corpus / ANNOTATIONS, scheme=scheme)
        assert set(df["split"]) == set(splits), scheme
        assert not set(df["mp3_path"]) & set(raw.loc[none, "mp3_path"])
    assert len(read_annotations(corpus / ANNOTATIONS, scheme=None)) == N - none.sum()


def test_csv_tags_and_latent_match_the_plan(corpus):
    clips = demo.plan(N, SEC, 0)
    raw = pd.read_csv(corpus / ANNOTATIONS, sep="\t")
    assert list(raw["mp3_path"]) == [c.mp3_path for c in clips]
    for c, (_, row) in zip(clips, raw.iterrows()):
        assert {t for t in demo.COLUMNS if row[t] == 1} == set(c.tags)
    latent = (corpus / demo.LATENT).read_text().splitlines()
    assert latent[0].startswith("clip_id,mp3_path,track,genre") and len(latent) == N + 1
    marker = json.loads((corpus / demo.MARKER).read_text())
    assert marker["n_clips"] == N and marker["seed"] == 0 and marker["waveform"] is True


# ----------------------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_whatever_the_workers(corpus, corpus_w1):
    assert (corpus / ANNOTATIONS).read_bytes() == (corpus_w1 / ANNOTATIONS).read_bytes()
    names = _mp3s(corpus)
    assert names == _mp3s(corpus_w1)
    for name in names:
        assert (corpus / "mp3" / name).read_bytes() == (corpus_w1 / "mp3" / name).read_bytes(), name


def test_other_seed_other_corpus(corpus, tmp_path):
    demo.generate(tmp_path / "s1", n_clips=N, seconds=SEC, seed=1, workers=1, progress=False)
    assert (tmp_path / "s1" / ANNOTATIONS).read_bytes() != (corpus / ANNOTATIONS).read_bytes()
    a = sorted((corpus / "mp3").rglob("*.mp3"))[0].read_bytes()
    b = sorted((tmp_path / "s1" / "mp3").rglob("*.mp3"))[0].read_bytes()
    assert a != b
    assert [c.tags for c in demo.plan(N, SEC, 0)] != [c.tags for c in demo.plan(N, SEC, 1)]


def test_render_is_a_pure_function_of_the_plan():
    clip = demo.plan(N, SEC, 5)[7]
    assert np.array_equal(demo.render(clip, SEC, 5), demo.render(clip, SEC, 5))
    assert not np.array_equal(demo.render(clip, SEC, 5), demo.render(clip, SEC, 6))


# ----------------------------------------------------------------------------------------------- audio

def _bitrates(path):
    """Bit rates (kbit/s) of the MPEG-2 layer III frames of a file, read from the frame headers."""
    b = path.read_bytes()
    i = 10 + ((b[6] << 21) | (b[7] << 14) | (b[8] << 7) | b[9]) if b[:3] == b"ID3" else 0
    table = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
    rates = []
    while i + 4 <= len(b) and b[i] == 0xFF and (b[i + 1] & 0xF6) == 0xF2:  # sync, MPEG-2, layer III
        kbps = table[b[i + 2] >> 4]
        rates.append(kbps)
        i += 72000 * kbps // 16000 + ((b[i + 2] >> 1) & 1)
    return rates


def test_mp3s_are_mtat_like_and_decode_to_16k_mono_of_the_requested_duration(corpus):
    layout = find_audio(corpus, kind="mp3")
    assert layout.base == corpus / "mp3"
    peaks = []
    for name in _mp3s(corpus)[::6]:
        info = sf.info(layout.path(name))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "MP3")
        rates = _bitrates(layout.path(name))
        assert len(rates) > 40 and set(rates[1:]) == {32}  # 32 kbit/s CBR (the first may be a LAME tag)
        y, sr = sf.read(layout.path(name), dtype="float32")
        assert SEC * sr <= len(y) <= SEC * sr + 4 * 576  # encoder delay and padding: under 4 frames
        assert np.isfinite(y).all() and np.sqrt(np.mean(y ** 2)) > 1e-3
        peaks.append(np.abs(y).max())
    assert max(peaks) < 1.2 and np.median(peaks) < 0.95  # soft-limited, no hard clipping


def test_waveform_layout_holds_the_decoded_mp3(corpus):
    npy = find_audio(corpus)
    assert (npy.kind, npy.base) == ("npy", corpus / "waveform")
    for name in _mp3s(corpus)[::12]:
        w = np.load(npy.path(name))
        assert w.dtype == np.float32 and w.ndim == 1
        y, _ = sf.read(corpus / "mp3" / name, dtype="float32")
        assert np.array_equal(w, y)


def test_rendered_levels_follow_the_loudness_class():
    clips = [c for c in demo.plan(96, 2.0, 2) if c.loudness != "medium"]
    rms = {c.index: 20 * np.log10(np.sqrt(np.mean(demo.render(c, 2.0, 2) ** 2))) for c in clips}
    loud = [rms[c.index] for c in clips if c.loudness == "loud"]
    quiet = [rms[c.index] for c in clips if c.loudness == "quiet"]
    assert len(loud) >= 5 and len(quiet) >= 5
    assert min(loud) > max(quiet) + 6  # dB


# ------------------------------------------------------------------------------------------- grounding

def _flux(y):
    """Spectral flux of the level-normalised clip: how much new energy arrives per frame."""
    y = y / (np.sqrt(np.mean(y ** 2)) + 1e-9)
    S = np.log1p(10 * np.abs(librosa.stft(y, n_fft=512, hop_length=256)))
    return float(np.maximum(0, np.diff(S, axis=1)).mean())


@pytest.fixture(scope="module")
def rendered():
    """96 clips x 3 s rendered from the plan of seed 3, with their spectral flux."""
    clips = demo.plan(96, 3.0, 3)
    return clips, [_flux(demo.render(c, 3.0, 3)) for c in clips]


def _greater(pos, neg):
    from scipy.stats import mannwhitneyu

    return np.median(pos) / np.median(neg), mannwhitneyu(pos, neg, alternative="greater").pvalue


def test_drums_raise_spectral_flux(rendered):
    clips, flux = rendered
    kit = [f for c, f in zip(clips, flux) if c.drums not in (None, "glitch")]
    none = [f for c, f in zip(clips, flux) if c.drums is None]
    ratio, p = _greater(kit, none)
    assert len(kit) >= 20 and len(none) >= 20
    assert ratio > 1.1 and p < 1e-5


def test_fast_clips_are_busier_than_slow_ones(rendered):
    clips, flux = rendered
    fast = [f for c, f in zip(clips, flux) if c.tempo == "fast"]
    slow = [f for c, f in zip(clips, flux) if c.tempo == "slow"]
    ratio, p = _greater(fast, slow)
    assert len(fast) >= 15 and len(slow) >= 15
    assert ratio > 1.1 and p < 1e-3


def test_same_clip_at_a_faster_tempo_has_more_onsets():
    clip = next(c for c in demo.plan(64, 3.0, 4) if c.drums == "rock")
    rates = []
    for bpm in (70.0, 150.0):
        y = demo.render(dataclasses.replace(clip, bpm=bpm, tempo=demo._tempo_class(bpm)), 3.0, 4)
        o = librosa.onset.onset_strength(y=y, sr=16000, hop_length=256)
        rates.append(len(librosa.onset.onset_detect(onset_envelope=o, sr=16000, hop_length=256)))
    assert rates[1] > 1.4 * rates[0]


def _f0(y):
    f0 = librosa.yin(y, fmin=60, fmax=1200, sr=16000, frame_length=1024)
    voiced = np.sqrt(np.convolve(y ** 2, np.ones(1024) / 1024, "same"))[::256][: len(f0)] > 0.3 * np.sqrt(np.mean(y ** 2))
    return f0[voiced]


def _detrend_cents(f0):
    from scipy.signal import medfilt

    cents = 1200 * np.log2(f0)
    return cents - medfilt(cents, 15)


def test_voices_female_higher_than_male_and_opera_vibrato():
    """Voice-only renders of the same clips: f0 ranges by gender, opera's wide vibrato."""
    clips = [c for c in demo.plan(64, 3.0, 4) if c.voice][:4]
    assert len(clips) == 4
    for c in clips:
        only = dict(parts=(), drums=None)
        f0 = {v: _f0(demo.render(dataclasses.replace(c, voice=v, **only), 3.0, 4)) for v in ("male", "female", "opera_female")}
        male, female = np.median(f0["male"]), np.median(f0["female"])
        assert 90 < male < 240 and 180 < female < 480 and female > 1.5 * male
        # vibrato extent: pitch deviation (cents) around a 0.24 s running median of the pitch track
        wobble = {v: np.percentile(np.abs(_detrend_cents(f0[v])), 75) for v in ("female", "opera_female")}
        assert wobble["opera_female"] > 30 and wobble["opera_female"] > 2.5 * wobble["female"]


def test_instrument_timbres_differ():
    """Solo renders: a harpsichord is brighter than a harp; an overdriven guitar is compressed (low crest
    factor) where a clean one is spiky."""
    clip = demo.plan(32, 3.0, 6)[0]

    def solo(parts):
        return demo.render(dataclasses.replace(clip, parts=parts, drums=None, voice=None, genre="classical"), 3.0, 6)

    def centroid(y):
        return float(np.mean(librosa.feature.spectral_centroid(y=y, sr=16000)))

    def crest(y):
        return float(np.abs(y).max() / np.sqrt(np.mean(y ** 2)))

    assert centroid(solo((("harpsichord", "melody"),))) > 1.3 * centroid(solo((("harp", "arp"),)))
    assert crest(solo((("distorted_guitar", "power"),))) < 0.6 * crest(solo((("electric_guitar", "strum"),)))


# ------------------------------------------------------------------------------------------ tag model

@pytest.fixture(scope="module")
def big_plan():
    return demo.plan(4000, 10.0, 11)


def _rate(clips, tag, cond):
    sel = [c for c in clips if cond(c)]
    return np.mean([tag in c.tags for c in sel]), len(sel)


@pytest.mark.parametrize("tag, cond, lo, hi", [
    ("female", lambda c: c.voice in ("female", "opera_female", "duet"), 0.3, 0.7),
    ("female", lambda c: c.voice not in ("female", "opera_female", "duet"), 0.0, 0.01),
    ("woman", lambda c: c.voice in ("female", "opera_female", "duet"), 0.15, 0.5),
    ("male vocal", lambda c: c.voice in ("male", "growl", "opera_male", "chant", "duet"), 0.1, 0.4),
    ("drums", lambda c: c.drums in ("rock", "metal", "pop", "country", "jazz"), 0.2, 0.5),
    ("drums", lambda c: c.drums is None, 0.0, 0.01),
    ("beat", lambda c: c.drums in ("techno", "dance", "breaks"), 0.2, 0.5),
    ("sitar", lambda c: "sitar" in c.instruments, 0.6, 0.95),
    ("sitar", lambda c: "sitar" not in c.instruments, 0.0, 0.005),
    ("no vocals", lambda c: c.voice is None, 0.03, 0.12),
    ("no vocals", lambda c: c.voice is not None, 0.0, 0.01),
    ("fast", lambda c: c.tempo == "fast", 0.2, 0.5),
    ("slow", lambda c: c.tempo == "slow", 0.3, 0.7),
    ("loud", lambda c: c.loudness == "loud", 0.1, 0.4),
    ("quiet", lambda c: c.loudness == "quiet", 0.1, 0.4),
    ("quiet", lambda c: c.loudness == "loud", 0.0, 0.01),
])
def test_tag_rates_given_the_latent(big_plan, tag, cond, lo, hi):
    rate, n = _rate(big_plan, tag, cond)
    assert n >= 100
    assert lo <= rate <= hi, (tag, rate, n)


def test_synonyms_are_drawn_separately(big_plan):
    sung = [c for c in big_plan if c.voice]
    a = np.array([["vocal" in c.tags, "vocals" in c.tags] for c in sung])
    both, either = np.mean(a[:, 0] & a[:, 1]), np.mean(a[:, 0] | a[:, 1])
    assert both > 1.2 * a[:, 0].mean() * a[:, 1].mean()  # correlated through the annotator's attention
    assert both < 0.5 * either  # but mostly one without the other


def test_tag_frequencies_are_skewed_like_mtat(big_plan):
    counts = {t: sum(t in c.tags for c in big_plan) for t in TAGS}
    order = sorted(TAGS, key=counts.get, reverse=True)
    assert set(order[:3]) <= {"guitar", "classical", "slow", "techno", "strings", "drums", "electronic"}
    assert "choral" in order[-8:]
    assert counts[order[0]] > 5 * counts[order[-1]]
    empty = np.mean([not set(c.tags) & set(TAGS) for c in big_plan])
    assert 0.08 < empty < 0.3  # clips read_annotations will drop


# ---------------------------------------------------------------------------------------- bad input

def test_existing_corpus_same_parameters_returns_at_once(corpus):
    marker = corpus / demo.MARKER
    before = marker.stat().st_mtime_ns
    for waveform in (True, False):  # the waveform layout comes on top of the MP3s
        got = demo.generate(corpus, n_clips=N, seconds=SEC, seed=0, waveform=waveform, progress=False)
        assert got == corpus / ANNOTATIONS
    assert demo.ensure_demo(corpus, n_clips=N, seconds=SEC, progress=False) == corpus
    assert marker.stat().st_mtime_ns == before


def test_waveform_layout_added_to_an_mp3_corpus(tmp_path):
    root = tmp_path / "c"
    demo.generate(root, n_clips=16, seconds=1.0, seed=2, workers=1, progress=False)
    assert find_audio(root).kind == "mp3"
    mp3 = {p: p.stat().st_mtime_ns for p in (root / "mp3").rglob("*.mp3")}
    demo.generate(root, n_clips=16, seconds=1.0, seed=2, waveform=True, workers=1, progress=False)
    assert find_audio(root).kind == "npy" and len(list((root / "waveform").rglob("*.npy"))) == 16
    assert {p: p.stat().st_mtime_ns for p in (root / "mp3").rglob("*.mp3")} == mp3  # not re-encoded
    assert json.loads((root / demo.MARKER).read_text())["waveform"] is True and not (root / demo.PENDING).exists()


def test_shortest_draws_each_clips_duration_and_is_part_of_the_corpus_identity(tmp_path):
    root = tmp_path / "mixed"
    demo.generate(root, n_clips=16, seconds=3.0, shortest=1.0, seed=3, workers=1, progress=False)
    want = demo.durations(16, 3.0, 1.0, 3)
    assert want == demo.durations(16, 3.0, 1.0, 3) and all(1.0 <= d <= 3.0 for d in want)
    assert max(want) - min(want) > 0.5  # they vary
    layout, names = find_audio(root, kind="mp3"), [c.mp3_path for c in demo.plan(16, 3.0, 3)]
    for name, d in zip(names, want):
        n = sf.info(layout.path(name)).frames
        assert d * 16000 <= n <= d * 16000 + 4 * 576, name  # encoder delay and padding: under 4 frames
    with pytest.raises(FileExistsError, match="shortest=1.0"):
        demo.generate(root, n_clips=16, seconds=3.0, seed=3, workers=1, progress=False)
    for bad in (0, 3.5, "x"):
        with pytest.raises(ValueError, match="shortest"):
            demo.generate(tmp_path / "bad", n_clips=16, seconds=3.0, shortest=bad, progress=False)
    assert demo.durations(4, 3.0, None, 3) == [3.0] * 4


def test_existing_corpus_other_parameters_is_refused(corpus):
    with pytest.raises(FileExistsError, match="pick another folder or delete"):
        demo.generate(corpus, n_clips=N, seconds=SEC, seed=1, waveform=True, progress=False)
    with pytest.raises(FileExistsError, match="n_clips=64"):
        demo.ensure_demo(corpus, n_clips=64, seconds=SEC, progress=False)


def test_unrelated_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError, match="not an empty folder nor a demo corpus"):
        demo.generate(tmp_path, n_clips=16, seconds=1.0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("kw, name", [
    (dict(n_clips=15), "n_clips"), (dict(n_clips=0), "n_clips"), (dict(n_clips=16.5), "n_clips"),
    (dict(seconds=0), "seconds"), (dict(seconds=-2.0), "seconds"), (dict(seconds=float("nan")), "seconds"),
    (dict(seed=-1), "seed"), (dict(workers=0), "workers"),
])
def test_bad_arguments_name_the_argument(tmp_path, kw, name):
    with pytest.raises(ValueError, match=name):
        demo.generate(tmp_path / "x", progress=False, **{"n_clips": 16, "seconds": 1.0, **kw})
    assert not (tmp_path / "x").exists()


def test_interrupted_run_resumes_to_the_same_corpus(tmp_path):
    ref = tmp_path / "ref"
    demo.generate(ref, n_clips=16, seconds=1.0, seed=3, workers=1, progress=False)
    # A killed run: the pending marker, some finished MP3s, a half-written temporary, no CSV, no demo.json.
    part = tmp_path / "part"
    names = _mp3s(ref)
    (part / "mp3" / names[0][0]).mkdir(parents=True)
    (part / "mp3" / names[0]).write_bytes((ref / "mp3" / names[0]).read_bytes())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: its temporary is stale
    (part / "mp3" / names[0][0] / f".half.mp3.{dead.pid}.tmp").write_bytes(b"\xff\xfb")
    pending = json.loads((ref / demo.MARKER).read_text())
    (part / demo.PENDING).write_text(json.dumps({k: pending[k] for k in demo._IDENTITY}))
    demo.generate(part, n_clips=16, seconds=1.0, seed=3, workers=1, progress=False)
    assert _mp3s(part) == names
    assert not list(part.rglob("*.tmp")) and not (part / demo.PENDING).exists()
    assert (part / ANNOTATIONS).read_bytes() == (ref / ANNOTATIONS).read_bytes()
    assert all((part / "mp3" / n).read_bytes() == (ref / "mp3" / n).read_bytes() for n in names)
    with pytest.raises(FileExistsError, match="unfinished"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / demo.PENDING).write_text(json.dumps(dict(pending, seed=4)))
        demo.generate(tmp_path / "other", n_clips=16, seconds=1.0, seed=3, progress=False)


def test_temporaries_of_running_writers_are_kept(tmp_path):
    alive = tmp_path / f".x.mp3.{os.getppid()}.tmp"  # our parent process runs
    assert demo._writer_alive(alive)
    assert not demo._writer_alive(tmp_path / ".x.mp3.notapid.tmp")


def test_cli_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    assert "--clips" in capsys.readouterr().out
    assert demo.main(["--out", str(tmp_path / "cli"), "--clips", "16", "--seconds", "1", "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "16 clips" in out and "gct634 split" in out and "most frequent" in out
    assert demo.main(["--out", str(tmp_path / "cli"), "--clips", "17", "--seconds", "1", "--quiet"]) == 2
    assert "pick another folder" in capsys.readouterr().err
