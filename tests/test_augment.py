"""Audio-effect augmentation (features/augment.py): each effect does what its parameters say."""
import numpy as np
import pytest

from features.augment import EFFECTS, apply, draw, max_length_factor

SR = 16000


def tone(freq=440.0, seconds=2.0, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)]


def rms_db(y):
    return 10 * np.log10(np.mean(np.asarray(y, np.float64) ** 2))


def test_draw_is_reproducible_never_empty_and_json_plain():
    import json

    chains = [draw(np.random.default_rng(s)) for s in range(200)]
    assert all(chains) and all(set(c) <= set(EFFECTS) for c in chains)
    assert draw(np.random.default_rng(7)) == draw(np.random.default_rng(7))
    assert json.loads(json.dumps(chains)) == chains
    seen = {e for c in chains for e in c}
    assert seen == set(EFFECTS)  # every effect turns up
    assert all(list(c) == [e for e in EFFECTS if e in c] for c in chains)  # in the documented order
    with pytest.raises(ValueError, match="p must be"):
        draw(np.random.default_rng(0), p=0)


def test_gain_pitch_and_stretch_do_what_they_say():
    y = tone()
    assert rms_db(apply(y, SR, {"gain": {"db": -6.0}})) - rms_db(y) == pytest.approx(-6.0, abs=0.05)
    up = apply(y, SR, {"pitch_shift": {"semitones": 2.0}})
    assert len(up) == len(y)
    assert peak_hz(up[4000:-4000]) == pytest.approx(440 * 2 ** (2 / 12), rel=0.01)
    slow = apply(y, SR, {"time_stretch": {"rate": 0.9}})
    assert len(slow) == pytest.approx(len(y) / 0.9, rel=0.01) and len(slow) <= len(y) * max_length_factor() + 1
    assert peak_hz(slow[4000:-4000]) == pytest.approx(440, rel=0.01)  # the pitch stays


def test_noise_eq_and_mp3():
    y = tone()
    noisy = apply(y, SR, {"noise": {"snr_db": 20.0, "seed": 3}})
    assert rms_db(y) - rms_db(noisy - y) == pytest.approx(20.0, abs=0.3)
    np.testing.assert_array_equal(noisy, apply(y, SR, {"noise": {"snr_db": 20.0, "seed": 3}}))
    mix = tone(200) + tone(6000)
    low = apply(mix, SR, {"eq": {"freq_hz": 1000.0, "gain_db": 0.0, "q": 1.0, "pass": "lowpass", "cutoff_hz": 3000.0}})
    spec, base = np.abs(np.fft.rfft(low)), np.abs(np.fft.rfft(mix))
    f = np.fft.rfftfreq(len(mix), 1 / SR)
    hi, lo = np.abs(f - 6000) < 20, np.abs(f - 200) < 20
    # pedalboard's pass filters are first order: about -7 dB an octave above the cutoff
    assert spec[hi].max() < 0.4 * base[hi].max() and spec[lo].max() > 0.9 * base[lo].max()
    enc = apply(y, SR, {"mp3": {"vbr_quality": 5.0}})
    assert len(enc) == len(y) and 0 < np.abs(enc - y).max() and np.corrcoef(enc, y)[0, 1] > 0.95


def test_reverb_and_compressor_and_a_whole_chain():
    y = np.zeros(SR, np.float32)
    y[100] = 1.0
    wet = apply(y, SR, {"reverb": {"room_size": 0.6, "wet": 0.3, "damping": 0.5}})
    assert np.abs(wet[SR // 4:]).sum() > 0  # a tail after the click
    loud = tone(amp=0.9)
    squashed = apply(loud, SR, {"compressor": {"threshold_db": -20.0, "ratio": 6.0, "attack_ms": 1.0,
                                               "release_ms": 100.0}})
    assert rms_db(squashed[SR // 2:]) < rms_db(loud[SR // 2:]) - 3
    chain = draw(np.random.default_rng(11), p=1.0)
    out = apply(tone(seconds=3), SR, chain)
    assert np.isfinite(out).all() and out.dtype == np.float32
    np.testing.assert_array_equal(out, apply(tone(seconds=3), SR, chain))  # pure function of audio and chain
    with pytest.raises(ValueError, match="unknown effect"):
        apply(y, SR, {"flanger": {}})
