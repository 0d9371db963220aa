"""Parity of both STFT back-ends of the front-end with librosa on real audio, and batching invariance.

Tolerances: log-mel within 0.01 dB (float32 STFT by convolution vs librosa's FFT), MFCC within
0.05 (values span about +-600), chroma within 1e-4 (values in [0, 1]).
"""
import dataclasses

import librosa
import numpy as np
import pytest
import torch

from data.audio import load_audio
from features.frontend import STFTS, FeatureParams, FrontEnd, parse_features
from tests.conftest import MSD_MP3, MTAT_MP3

# The features librosa computes too; the musicnn taggram is tested in tests/test_taggram.py.
FEATURES = ("mel", "mfcc", "chroma")


def librosa_features(y, p: FeatureParams):
    mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels, fmin=p.f_min, fmax=p.f_max),
        top_db=p.top_db)
    mfcc = librosa.feature.mfcc(S=mel, n_mfcc=p.n_mfcc)
    chroma = librosa.feature.chroma_stft(y=y, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, tuning=0.0,
                                         n_chroma=p.n_chroma)
    return {"mel": mel.T, "mfcc": mfcc.T, "chroma": chroma.T}


TOL = {"mel": 0.01, "mfcc": 0.05, "chroma": 1e-4}


@pytest.mark.parametrize("stft", STFTS)
@pytest.mark.parametrize("path", [MTAT_MP3, MSD_MP3], ids=["mtat", "msd"])
@pytest.mark.parametrize("params", [FeatureParams(), FeatureParams(n_fft=1024, hop_length=512, n_mels=128, f_min=30.0)],
                         ids=["course", "other"])
def test_parity_with_librosa(fixtures_dir, path, params, stft):
    params = dataclasses.replace(params, stft=stft)
    y = load_audio(path)
    out = FrontEnd(FEATURES, params)(torch.from_numpy(y)[None])
    ref = librosa_features(y, params)
    assert out["n_frames"].tolist() == [ref["mel"].shape[0]] == [params.n_frames(len(y))]
    for name in FEATURES:
        got = out[name][0].numpy()
        assert got.shape == ref[name].shape
        err = np.abs(got - ref[name]).max()
        assert err < TOL[name], f"{name}: max abs error {err}"
    assert out["mel"].max() > -40  # real music, not a silent decode


def test_backends_agree(fixtures_dir):
    y = torch.from_numpy(load_audio(MSD_MP3))[None]
    fft = FrontEnd(FEATURES, FeatureParams(stft="fft"))(y)
    conv = FrontEnd(FEATURES, FeatureParams(stft="nnaudio"))(y)
    for name, tol in (("mel", 1e-3), ("mfcc", 1e-2), ("chroma", 1e-5)):
        err = (fft[name] - conv[name]).abs().max().item()
        assert err < tol, f"{name}: back-ends differ by {err}"
    with pytest.raises(ValueError, match="unknown STFT back-end"):
        FeatureParams(stft="wavelet")
    assert FeatureParams.from_dict({"n_mels": 96}).stft == "nnaudio"  # files from before the back-ends


@pytest.mark.parametrize("stft", STFTS)
def test_batch_of_unequal_lengths_equals_one_by_one(fixtures_dir, stft):
    a, b = load_audio(MTAT_MP3), load_audio(MSD_MP3)[: 5 * 16000 + 123]
    fe = FrontEnd(FEATURES, FeatureParams(stft=stft))
    wave = torch.zeros(2, len(a))
    wave[0], wave[1, : len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    batch = fe(wave, torch.tensor([len(a), len(b)]))
    for j, y in enumerate((a, b)):
        single = fe(torch.from_numpy(y)[None])
        n = single["n_frames"].item()
        assert batch["n_frames"][j].item() == n
        for name in FEATURES:
            np.testing.assert_allclose(batch[name][j, :n].numpy(), single[name][0].numpy(), atol=1e-3)
            assert (batch[name][j, n:] == 0).all()  # padding frames are zeroed, not garbage


def test_frames_and_bins():
    fe = FrontEnd(("chroma", "mel"))
    assert fe.features == ("mel", "chroma") and fe.n_bins() == 96 + 12
    out = fe(torch.zeros(3, 16000), torch.tensor([16000, 8000, 255]))
    assert out["n_frames"].tolist() == [63, 32, 1]
    assert set(out) == {"mel", "chroma", "n_frames"} and out["mel"].shape == (3, 63, 96)
    assert torch.isfinite(out["mel"]).all() and (out["chroma"] == 0).all()  # silence: no chroma peak


def test_parse_features_and_params_errors():
    assert parse_features("mfcc, MEL") == ("mel", "mfcc")
    with pytest.raises(ValueError, match="unknown feature.*spectral"):
        parse_features("mel,spectral")
    with pytest.raises(ValueError, match="no feature given"):
        parse_features(" , ")
    with pytest.raises(ValueError, match="f_max"):
        FeatureParams(f_max=9000.0)
    with pytest.raises(ValueError, match="n_mfcc"):
        FeatureParams(n_mfcc=200)
    p = FeatureParams(n_mels=64)
    assert FeatureParams.from_dict({**p.as_dict(), "other": 1}) == p


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [(16000, 512, 96, 0.0, 8000.0), (16000, 1024, 128, 30.0, 8000.0),
                                                          (22050, 2048, 64, 20.0, None)])
def test_filter_banks_equal_librosa(sr, n_fft, n_mels, fmin, fmax):
    from features import filters
    np.testing.assert_array_equal(filters.mel(sr, n_fft, n_mels, fmin, fmax),
                                  librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))
    for n_chroma in (12, 24):
        np.testing.assert_array_equal(filters.chroma(sr, n_fft, n_chroma),
                                      librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma))
