import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from data.audio import AudioError, load_audio
from data.mtat import SPLITS, TAGS, DatasetError, find_audio, read_annotations, split_of
from tests.conftest import MSD_MP3, MTAT_MP3, make_corpus, write_csv


def test_tags_are_the_50_in_label_order():
    assert len(TAGS) == len(set(TAGS)) == 50
    assert TAGS[:5] == ("guitar", "classical", "slow", "techno", "strings") and TAGS[-1] == "choral"


@pytest.mark.parametrize("scheme,expected", [
    ("gct634", {"train": "012ab", "valid": "c", "test": "d", None: "3456789ef"}),
    ("standard", {"train": "0123456789ab", "valid": "c", "test": "def", None: ""}),
])
def test_split_of_every_folder(scheme, expected):
    for split, folders in expected.items():
        for f in folders:
            assert split_of(f"{f}/x.mp3", scheme) == split


def test_split_of_unknown_scheme():
    with pytest.raises(ValueError, match="unknown split scheme 'nope'"):
        split_of("a/x.mp3", "nope")


def test_read_annotations_as_distributed(tmp_path):
    names = make_corpus(tmp_path, per_folder=2)
    # The file as MTAT ships it: every field quoted, more tag columns than the 50.
    text = (tmp_path / "annotations_final.csv").read_text().splitlines()
    assert text[0].startswith('"clip_id"\t"guitar"') and text[0].endswith('"mp3_path"')
    df = read_annotations(tmp_path / "annotations_final.csv", scheme=None)
    assert list(df.columns) == ["clip_id", "mp3_path", *TAGS]
    assert len(df) == len(names) - 1  # the clip with none of the 50 tags is dropped
    assert "e/artist_14-album-00-track_0-0-29.mp3" not in set(df["mp3_path"])
    assert (df[list(TAGS)].sum(axis=1) > 0).all() and df["clip_id"].dtype == np.int64
    raw = pd.read_csv(tmp_path / "annotations_final.csv", sep="\t", index_col=0)
    row = raw.loc[df["clip_id"][3]]
    assert (row[list(TAGS)].to_numpy() == df.loc[3, list(TAGS)].to_numpy()).all()


@pytest.mark.parametrize("scheme", list(SPLITS))
def test_read_annotations_splits(tmp_path, scheme):
    make_corpus(tmp_path, per_folder=2)
    df = read_annotations(tmp_path / "annotations_final.csv", scheme)
    for split, folders in SPLITS[scheme].items():
        part = df[df["split"] == split]
        assert len(part) > 0 and set(part["mp3_path"].str[0]) <= set(folders)
    used = "".join(SPLITS[scheme].values())
    assert set(df["mp3_path"].str[0]) == set(used)


def test_read_annotations_extra_columns_ignored(tmp_path):
    write_csv(tmp_path / "a.csv", [["7", "1", *["0"] * 49, "1", "f/x.mp3"]], ["clip_id", *TAGS, "jazz", "mp3_path"])
    df = read_annotations(tmp_path / "a.csv", "standard")
    assert df["clip_id"].tolist() == [7] and df["split"].tolist() == ["test"] and "jazz" not in df


def test_read_annotations_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        read_annotations(tmp_path / "missing.csv")
    write_csv(tmp_path / "a.csv", [["1", *["0"] * 48, "f/x.mp3"]], ["clip_id", *TAGS[:48], "mp3_path"])
    with pytest.raises(DatasetError, match=r"a\.csv: missing 2 required column\(s\): 'female voice', 'choral'"):
        read_annotations(tmp_path / "a.csv")
    write_csv(tmp_path / "b.csv", [["1", *["0"] * 50]], ["clip_id", *TAGS])
    with pytest.raises(DatasetError, match="'mp3_path'"):
        read_annotations(tmp_path / "b.csv")
    write_csv(tmp_path / "c.csv", [["1", "2", *["0"] * 49, "f/x.mp3"]])
    with pytest.raises(DatasetError, match="must hold 0 or 1; not so in guitar"):
        read_annotations(tmp_path / "c.csv")


@pytest.mark.parametrize("layout,kind,sub", [("mp3", "mp3", "mp3"), ("flat", "mp3", ""), ("npy", "npy", "waveform")])
def test_find_audio_layouts(tmp_path, layout, kind, sub):
    names = make_corpus(tmp_path, per_folder=1, layout=layout)
    found = find_audio(tmp_path)
    assert found.kind == kind and found.base == (tmp_path / sub if sub else tmp_path)
    assert found.path(names[0]).is_file()
    assert found.path(names[0]).suffix == (".npy" if kind == "npy" else ".mp3")


def test_find_audio_forced_and_missing(tmp_path):
    make_corpus(tmp_path, per_folder=1, layout="npy")  # has both waveform/ and mp3/
    assert find_audio(tmp_path).kind == "npy"
    assert find_audio(tmp_path, "mp3").base == tmp_path / "mp3"
    with pytest.raises(DatasetError, match="no audio folders 0-9/a-f found"):
        find_audio(tmp_path / "mp3" / "0")


def test_decode_mtat_fixture(fixtures_dir):
    y = load_audio(MTAT_MP3)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 465_984  # as the fixture README states


def test_decode_stereo_22k_fixture_matches_librosa(fixtures_dir):
    import librosa

    raw, sr = sf.read(MSD_MP3, dtype="float32", always_2d=True)
    assert sr == 22050 and raw.shape[1] == 2 and raw.max() > 1.0  # the source peaks above 1.0
    y = load_audio(MSD_MP3)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(raw) * 16000 / 22050) < 1
    # Nothing clipped: exactly the resampled mean of the unclipped channels (soxr gives one sample less).
    direct = soxr.resample(raw.mean(axis=1), 22050, 16000, quality="HQ")
    np.testing.assert_array_equal(y[: len(direct)], direct)
    ref, _ = librosa.load(MSD_MP3, sr=16000)  # librosa's length, ceil(n * ratio), as librosa.load gives it
    assert len(y) == len(ref) == len(direct) + 1
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_peaks_above_one_are_kept(tmp_path):
    t = np.arange(44100) / 44100
    wave = np.stack([1.5 * np.sin(2 * np.pi * 440 * t), 1.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    sf.write(tmp_path / "loud.wav", wave, 44100, subtype="FLOAT")
    y = load_audio(tmp_path / "loud.wav")
    assert len(y) == 16000 and 1.4 < y.max() < 1.6


def test_decode_npy(tmp_path):
    y = np.linspace(-2, 2, 48000, dtype=np.float32)
    np.save(tmp_path / "a.npy", y)
    np.testing.assert_array_equal(load_audio(tmp_path / "a.npy"), y)
    np.save(tmp_path / "b.npy", np.stack([y, y]))  # (channels, n)
    np.testing.assert_array_equal(load_audio(tmp_path / "b.npy"), y)
    assert len(load_audio(tmp_path / "a.npy", sr=8000)) == 24000


@pytest.mark.parametrize("dtype, subtype", [(np.int16, "PCM_16"), (np.int32, "PCM_32"), (np.uint8, "PCM_U8")])
def test_decode_integer_npy_as_the_same_pcm_wav(tmp_path, dtype, subtype):
    """Integer samples are PCM: the waveform libsndfile decodes from a WAV holding the same samples."""
    import soundfile as sf

    info = np.iinfo(dtype)
    pcm = np.random.default_rng(0).integers(info.min, info.max, 16000, endpoint=True).astype(dtype)
    np.save(tmp_path / "a.npy", pcm)
    sf.write(tmp_path / "a.wav", (pcm.astype(np.float64) - (128 if dtype == np.uint8 else 0))
             / (2.0 ** (8 * pcm.itemsize - 1)), 16000, subtype=subtype)
    np.testing.assert_allclose(load_audio(tmp_path / "a.npy"), load_audio(tmp_path / "a.wav"), rtol=0, atol=1e-7)


def test_decode_bad_files(tmp_path, fixtures_dir):
    with pytest.raises(AudioError, match="nope.mp3: file not found"):
        load_audio(tmp_path / "nope.mp3")
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.mp3: file is empty \(0 bytes\)"):
        load_audio(tmp_path / "empty.mp3")
    (tmp_path / "text.mp3").write_text("this is not audio, it is a text file\n" * 20)
    with pytest.raises(AudioError, match="text.mp3: not an audio file the decoder can read") as exc:
        load_audio(tmp_path / "text.mp3")
    assert "pipe" not in str(exc.value)  # libsndfile's "not a regular file (possibly a pipe?)", for a file that is
    (tmp_path / "cut.mp3").write_bytes(MTAT_MP3.read_bytes()[:300] if MTAT_MP3.is_file() else b"ID3" + bytes(297))
    with pytest.raises(AudioError, match="cut.mp3: .*damaged, truncated, or not audio"):
        load_audio(tmp_path / "cut.mp3")
    (tmp_path / "album.mp3").mkdir()
    with pytest.raises(AudioError, match="album.mp3: is a folder, not an audio file"):
        load_audio(tmp_path / "album.mp3")
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    with pytest.raises(AudioError, match="obj.npy: .npy waveform has non-numeric dtype"):
        load_audio(tmp_path / "obj.npy")
    np.save(tmp_path / "nan.npy", np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="nan.npy: holds NaN"):
        load_audio(tmp_path / "nan.npy")
    # A truncated MP3 decodes to what survives of it: far shorter than the clip.
    (tmp_path / "cut.mp3").write_bytes(MTAT_MP3.read_bytes()[:3000])
    assert len(load_audio(tmp_path / "cut.mp3")) < 16000
