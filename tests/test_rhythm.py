"""features.rhythm against the librosa implementation it replaced, kept here as the reference.

``features.rhythm`` reproduces librosa's onset strength, autocorrelation tempogram, tempo estimate
and onset peak picking in numpy; every field must equal the reference's to the bit (float32), on
real MP3s, noise, click tracks, silence, clips shorter than the tempogram window, batches of
mixed lengths and other frame rates. ``bench/bench_rhythm.py`` imports the reference from here.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features import rhythm
from features.params import FeatureParams
from features.rhythm import (
    RHYTHM_FIELDS,
    TEMPO_BANDS,
    onset_envelope,
    rhythm_batch,
    rhythm_statistics,
    tempogram,
)
from tests.conftest import MSD_MP3, MTAT_MP3

REPO = Path(__file__).resolve().parents[1]


# --- the reference: features/rhythm.py as it was, on librosa ------------------------------------------


def reference_onset_envelope(mel_db: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """``librosa.onset.onset_strength(S=mel_db.T, ...)``."""
    import librosa

    mel_db = rhythm._check_mel(mel_db, params)
    return librosa.onset.onset_strength(S=mel_db.T.astype(np.float32), sr=params.sr,
                                        hop_length=params.hop_length, n_fft=params.n_fft)


def reference_rhythm_statistics(mel_db: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    import librosa

    env = reference_onset_envelope(mel_db, params)
    out = np.zeros(len(RHYTHM_FIELDS), np.float32)
    if not np.isfinite(env).all() or env.max() <= 0:
        return out
    sr, hop = params.sr, params.hop_length
    gram = reference_tempogram(env, params)
    tempo = float(librosa.feature.tempo(tg=gram, sr=sr, hop_length=hop)[0])
    gram = gram.mean(axis=1)
    bpms = librosa.tempo_frequencies(len(gram), sr=sr, hop_length=hop)  # bpms[0] is inf (lag 0)
    lag = int(np.argmin(np.abs(bpms[1:] - tempo))) + 1
    bands = [gram[(bpms >= lo) & (bpms < hi)] for lo, hi in zip(TEMPO_BANDS[:-1], TEMPO_BANDS[1:])]
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop)
    intervals = np.diff(onsets)
    seconds = len(env) * hop / sr
    out[:] = [tempo, gram[lag], env.mean(), env.std(), len(onsets) / seconds,
              intervals.std() / intervals.mean() if len(intervals) >= 2 else 0.0,
              *(b.mean() if len(b) else 0.0 for b in bands)]
    return out


def reference_rhythm_batch(mel_db: np.ndarray, n_frames, params: FeatureParams = FeatureParams()) -> np.ndarray:
    mel_db = np.asarray(mel_db)
    n_frames = np.asarray(n_frames).astype(np.int64)
    if mel_db.ndim != 3 or len(n_frames) != len(mel_db):
        raise ValueError(f"mel_db must be (batch, frames, n_mels) with one n_frames per clip, got shape "
                         f"{mel_db.shape} and {len(n_frames)} n_frames")
    return np.stack([reference_rhythm_statistics(m[:n], params) for m, n in zip(mel_db, n_frames)]) \
        if len(mel_db) else np.zeros((0, len(RHYTHM_FIELDS)), np.float32)


def reference_tempogram(env: np.ndarray, params: FeatureParams = FeatureParams(), step: int | None = None) -> np.ndarray:
    """``librosa.feature.tempogram(onset_envelope=env, win_length=8 s)[:, ::step]``, computed at those frames."""
    import librosa
    import scipy.signal

    win = int(librosa.time_to_frames(8.0, sr=params.sr, hop_length=params.hop_length))  # as librosa.feature.tempo
    step = max(1, win // 16) if step is None else int(step)
    padded = np.pad(np.asarray(env, np.float64), win // 2, mode="linear_ramp", end_values=[0, 0])
    frames = librosa.util.frame(padded, frame_length=win, hop_length=1)[:, :len(env):step]
    window = scipy.signal.get_window("hann", win, fftbins=True)[:, None]
    return librosa.util.normalize(librosa.autocorrelate(frames * window, axis=0), norm=np.inf, axis=0)


# --- material ---------------------------------------------------------------------------------------


def mels_of(waves, params: FeatureParams = FeatureParams()):
    """The front-end's batch, as extraction gives it to rhythm_batch: ``(mel (B, T, n_mels), n_frames)``."""
    import torch

    from features.frontend import FrontEnd

    lengths = np.array([len(y) for y in waves])
    wave = np.zeros((len(waves), lengths.max()), np.float32)
    for j, y in enumerate(waves):
        wave[j, :lengths[j]] = y
    out = FrontEnd(("mel",), params)(torch.from_numpy(wave), torch.from_numpy(lengths))
    return out["mel"].numpy(), out["n_frames"].numpy()


def clicks(bpm: float, seconds: float, sr: int = 16000, offset: float = 0.05) -> np.ndarray:
    """A click track: a decaying 1-kHz burst (time constant 10 ms) on every beat, from ``offset`` s."""
    y = np.zeros(int(seconds * sr), np.float32)
    t = np.arange(int(0.1 * sr)) / sr
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.01)).astype(np.float32)
    for start in (np.arange(offset, seconds, 60.0 / bpm) * sr).astype(int):
        piece = click[:len(y) - start]
        y[start:start + len(piece)] += piece
    return y


@pytest.fixture(scope="module")
def synthetic():
    """Named waveforms (16 kHz): noise, click tracks, silence, a clip shorter than the 8-s window."""
    rng = np.random.default_rng(0)
    noise = 0.1 * rng.standard_normal(29 * 16000).astype(np.float32)
    return {
        "noise": noise,
        "clicks_120": clicks(120, 29.0),
        "clicks_90_in_noise": clicks(90, 29.0) + 0.05 * noise,
        "silence": np.zeros(10 * 16000, np.float32),
        "short_3s": clicks(100, 3.0),
        "short_0.2s": clicks(100, 0.2) + 0.01 * noise[:3200],
    }


def assert_same(got: np.ndarray, want: np.ndarray, what=""):
    """Bitwise equality, with the fields that differ named."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape, want.shape)
    if not np.array_equal(got, want, equal_nan=True):
        if got.ndim and got.shape[-1] == len(RHYTHM_FIELDS):
            bad = {f: (got[..., k].tolist(), want[..., k].tolist()) for k, f in enumerate(RHYTHM_FIELDS)
                   if not np.array_equal(got[..., k], want[..., k], equal_nan=True)}
        else:
            bad = f"max |diff| {np.max(np.abs(got - want))}"
        raise AssertionError(f"{what}: differs from the reference: {bad}")


# --- equality with the reference ------------------------------------------------------------------


def test_real_mp3s_equal_the_reference(fixtures_dir):
    from data.audio import load_audio

    p = FeatureParams()
    mel, n_frames = mels_of([load_audio(MTAT_MP3), load_audio(MSD_MP3)], p)
    want = reference_rhythm_batch(mel, n_frames, p)
    assert_same(rhythm_batch(mel, n_frames, p), want, "batch")
    assert (want[:, 0] > 0).all() and (want[:, 4] > 0).all()  # real music: a tempo, onsets
    for i, n in enumerate(n_frames):
        m = mel[i, :n]
        assert_same(rhythm_statistics(m, p), want[i], f"clip {i}")
        assert_same(rhythm_statistics(np.ascontiguousarray(m), p), reference_rhythm_statistics(np.ascontiguousarray(m), p),
                    f"clip {i}, frames-major copy")
        assert_same(rhythm_statistics(m.astype(np.float16), p), reference_rhythm_statistics(m.astype(np.float16), p),
                    f"clip {i}, float16 as stored")
        env = reference_onset_envelope(m, p)
        assert_same(onset_envelope(m, p), env, f"clip {i} envelope")
        assert_same(tempogram(env, p), reference_tempogram(env, p), f"clip {i} tempogram")
        assert_same(tempogram(env, p, step=7), reference_tempogram(env, p, step=7), f"clip {i} tempogram step 7")
        # The time average the tempo and bands come from, in float64, before any float32 rounding.
        plan = rhythm._plan_of(p)
        assert_same(rhythm._tempograms(env[None], plan, plan.step).mean(axis=2)[0], reference_tempogram(env, p).mean(axis=1),
                    f"clip {i} mean tempogram")


def test_synthetic_clips_equal_the_reference(synthetic):
    p = FeatureParams()
    names = list(synthetic)
    mel, n_frames = mels_of([synthetic[k] for k in names], p)
    want = reference_rhythm_batch(mel, n_frames, p)
    assert_same(rhythm_batch(mel, n_frames, p), want, "batch")
    got = {k: dict(zip(RHYTHM_FIELDS, want[i])) for i, k in enumerate(names)}
    for i, k in enumerate(names):
        assert_same(rhythm_statistics(mel[i, :n_frames[i]], p), want[i], k)
        assert_same(onset_envelope(mel[i, :n_frames[i]], p), reference_onset_envelope(mel[i, :n_frames[i]], p), k)
    # The material is what it says: a known tempo, silence, a clip shorter than the tempogram window.
    assert got["clicks_120"]["tempo"] == pytest.approx(120, rel=0.03)
    assert got["clicks_90_in_noise"]["tempo"] == pytest.approx(90, rel=0.03)
    assert got["clicks_120"]["onset_rate"] == pytest.approx(2.0, rel=0.1) and got["clicks_120"]["ioi_cv"] < 0.05
    assert not want[names.index("silence")].any()
    assert n_frames[names.index("short_3s")] < rhythm._plan_of(p).win and got["short_3s"]["tempo"] > 0
    assert got["noise"]["onset_rate"] > 0


def test_random_log_mels_in_every_layout_equal_the_reference():
    """Random dB arrays (not from audio), in the front-end's band-major memory and frames-major."""
    p = FeatureParams()
    rng = np.random.default_rng(1)
    band_major = (rng.standard_normal((6, p.n_mels, 1813)) * 8 - 40).astype(np.float32)
    band_major[:3, :, ::31] += 25  # a pulse, 2 frames in 62
    n_frames = np.array([1813, 1813, 1200, 700, 499, 2])
    for name, mel in (("band-major", band_major.transpose(0, 2, 1)),
                      ("frames-major", np.ascontiguousarray(band_major.transpose(0, 2, 1))),
                      ("float16", band_major.transpose(0, 2, 1).astype(np.float16)),
                      ("float64", band_major.transpose(0, 2, 1).astype(np.float64)),
                      ("strided", band_major.transpose(0, 2, 1)[::-1]),
                      ("time-reversed", band_major.transpose(0, 2, 1)[:, ::-1])):
        want = reference_rhythm_batch(mel, n_frames, p)
        assert_same(rhythm_batch(mel, n_frames, p), want, name)
        for i in (0, 3, 5):
            assert_same(rhythm_statistics(mel[i, :n_frames[i]], p), want[i], f"{name} clip {i}")


def test_batches_of_mixed_lengths_silence_and_bad_values_equal_the_reference(synthetic):
    """More clips than a chunk, several lengths, padding, silent and non-finite clips."""
    p = FeatureParams()
    rng = np.random.default_rng(2)
    waves = [synthetic["clicks_120"][:int(s * 16000)] + 0.02 * rng.standard_normal(int(s * 16000)).astype(np.float32)
             for s in (29, 12, 29, 0.5, 8.0, 29, 12, 20.3, 29, 3)]
    waves[4] = np.zeros_like(waves[4])
    mel, n_frames = mels_of(waves, p)
    mel = mel.copy()
    mel[7, 100] = np.nan
    mel[8, 50:60] = np.inf  # inf - inf: NaN differences
    with np.errstate(invalid="ignore"):
        want = reference_rhythm_batch(mel, n_frames, p)
        got = rhythm_batch(mel, n_frames, p)
    assert_same(got, want, "batch")
    assert not want[[4, 7, 8]].any() and want[[0, 1, 2, 3, 5, 6, 9], 0].all()
    # A batch that asks for more frames than it has: sliced as m[:n].
    assert_same(rhythm_batch(mel[:2], [5000, 300], p), reference_rhythm_batch(mel[:2], [5000, 300], p), "n > frames")
    assert rhythm_batch(np.zeros((0, 10, p.n_mels)), [], p).shape == (0, len(RHYTHM_FIELDS))


def test_random_batches_equal_the_reference():
    """Random batch sizes, lengths, layouts, dtypes, frame rates and pulses; some with many ties
    (values on a 4-dB grid). The scratch memory is reused across shapes from call to call."""
    rng = np.random.default_rng(7)
    for trial in range(15):
        p = [FeatureParams(), FeatureParams(hop_length=160, n_fft=400), FeatureParams(hop_length=512, n_fft=1024)][trial % 3]
        clips, frames = int(rng.integers(1, 11)), int(rng.integers(2, 1500))
        mel = (rng.standard_normal((clips, p.n_mels, frames)) * rng.uniform(1, 10) - 50).astype(np.float32)
        mel[:, :, ::int(rng.integers(5, 60))] += rng.uniform(0, 30)
        if trial % 5 == 0:
            mel = np.round(mel / 4) * 4
        mel = mel.transpose(0, 2, 1)
        if trial % 4 == 1:
            mel = np.ascontiguousarray(mel)
        if trial % 7 == 2:
            mel = mel.astype(np.float16)
        n_frames = rng.integers(2, frames + 1, clips)
        assert_same(rhythm_batch(mel, n_frames, p), reference_rhythm_batch(mel, n_frames, p), f"trial {trial}")


def test_long_clip_equals_the_reference():
    """Longer than numpy's 8192-item reduction buffer: the onset mean and std still add as the reference's."""
    p = FeatureParams()
    rng = np.random.default_rng(3)
    mel = (rng.standard_normal((p.n_mels, 9000)) * 6 - 40).astype(np.float32).T
    assert_same(rhythm_statistics(mel, p), reference_rhythm_statistics(mel, p), "9000 frames")


@pytest.mark.parametrize("hop, n_fft", [(160, 400), (512, 2048), (128, 1024), (300, 600)])  # 300: 8 s is 426.7 frames
def test_other_frame_rates_equal_the_reference(synthetic, hop, n_fft):
    """Other tempogram windows, FFT sizes, centring lags and peak-picking windows."""
    p = FeatureParams(hop_length=hop, n_fft=n_fft)
    waves = [synthetic["clicks_90_in_noise"][:15 * 16000], synthetic["noise"][:6 * 16000], synthetic["short_3s"]]
    mel, n_frames = mels_of(waves, p)
    assert_same(rhythm_batch(mel, n_frames, p), reference_rhythm_batch(mel, n_frames, p), f"hop {hop}")
    env = reference_onset_envelope(mel[0, :n_frames[0]], p)
    assert_same(tempogram(env, p, step=1), reference_tempogram(env, p, step=1), f"hop {hop} tempogram")


# --- the parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hop", [256, 160, 128, 512])
def test_peak_picking_equals_librosa_on_ties_and_plateaus(hop):
    """onset_detect on envelopes full of ties, plateaus and lone spikes, where a greedy pick can go wrong."""
    import librosa

    p = FeatureParams(hop_length=hop, n_fft=4 * hop)
    plan = rhythm._plan_of(p)
    rng = np.random.default_rng(hop)
    for trial in range(300):
        n = int(rng.integers(2, 300))
        kind = trial % 4
        if kind == 0:
            e = rng.random(n)
        elif kind == 1:
            e = rng.integers(0, 4, n)  # ties everywhere
        elif kind == 2:
            e = np.repeat(rng.integers(0, 6, n // 3 + 1), 3)[:n] / 5  # plateaus
        else:
            e = (rng.random(n) < 0.1) * rng.integers(1, 3, n)  # sparse spikes
        e = np.asarray(e, np.float32)
        want = librosa.onset.onset_detect(onset_envelope=e, sr=p.sr, hop_length=hop)
        np.testing.assert_array_equal(rhythm._onset_detect(e[None], plan)[0], want, err_msg=f"{trial}: {e.tolist()}")


def test_peak_picking_threshold_is_librosas_to_the_last_float():
    """A lone spike swept across its threshold (float32 mean of the window + float32 delta), one float32 step
    at a time: picked from exactly the same value as librosa's numba kernel picks it."""
    import librosa

    p = FeatureParams()
    plan = rhythm._plan_of(p)
    v0 = np.float32(0.07 * 13 / 12)
    picked = []
    for k in range(-300, 300):
        v = np.float32(v0 + np.float32(k) * np.spacing(v0))
        e = np.zeros(60, np.float32)
        e[40], e[15] = 1.0, v
        want = librosa.onset.onset_detect(onset_envelope=e, sr=p.sr, hop_length=p.hop_length)
        np.testing.assert_array_equal(rhythm._onset_detect(e[None], plan)[0], want)
        picked.append(15 in want)
    crossings = int(np.sum(np.diff(picked) != 0))
    assert crossings == 1


def test_plan_equals_librosa_and_scipy():
    import librosa
    import scipy.fft
    import scipy.signal

    for hop, n_fft in ((256, 512), (160, 400), (512, 2048), (300, 512)):
        p = FeatureParams(hop_length=hop, n_fft=n_fft)
        plan = rhythm._plan_of(p)
        assert plan.win == len(reference_tempogram(np.ones(50), p))  # round(8 s), as the reference
        np.testing.assert_array_equal(plan.window, scipy.signal.get_window("hann", plan.win, fftbins=True))
        np.testing.assert_array_equal(plan.bpms, librosa.tempo_frequencies(plan.win, sr=p.sr, hop_length=hop))
        assert plan.n_pad == scipy.fft.next_fast_len(2 * plan.win - 1, real=True)
    assert all(rhythm._smooth5(n) == (scipy.fft.next_fast_len(n, real=True) == n) for n in range(1, 3000))


def test_no_librosa_scipy_or_numba_in_a_fresh_process():
    """The statistics need numpy only: extraction's workers pay no librosa import or numba compilation."""
    code = ("import sys, numpy as np\n"
            "from features.rhythm import rhythm_batch, rhythm_statistics\n"
            "m = (np.random.default_rng(0).standard_normal((2, 1000, 96)) * 10).astype(np.float32)\n"
            "assert rhythm_batch(m, [1000, 600]).shape == (2, 14) and rhythm_statistics(m[0]).any()\n"
            "print(sorted(k for k in ('librosa', 'scipy', 'numba', 'torch') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_errors_are_the_references():
    p = FeatureParams()
    good = np.zeros((2, 300, p.n_mels), np.float32)
    for args in ((np.zeros((2, 300, 40)), [300, 300]), (good, [300, 1]), (good, [10]), (good[0], [300])):
        with pytest.raises(ValueError) as want:
            reference_rhythm_batch(*args, p)
        with pytest.raises(ValueError, match=str(want.value).replace("(", r"\(").replace(")", r"\)")):
            rhythm_batch(*args, p)
    with pytest.raises(ValueError, match="n_mels"):
        rhythm_statistics(np.zeros((300, 40)), p)
    with pytest.raises(ValueError, match="at least 2 frames"):
        onset_envelope(np.zeros((1, p.n_mels)), p)
    with pytest.raises(ValueError, match="step"):
        tempogram(np.ones(100), p, step=0)
