"""Clip-level rhythm statistics from a stored log-mel: tempo, onset strength, a tempogram summary.

One fixed-size vector per clip (fields in ``RHYTHM_FIELDS``), for the ``beat`` sampler of metric
learning (``train.metric``), which takes positives among the clips with the nearest statistics.

The statistics start from the clip's **log-mel**, not from its waveform: librosa's own onset
strength computes a log-power mel spectrogram first (``power_to_db(melspectrogram(y))``), which is
the feature extraction already has for every clip (the front-end's ``'mel'``, the file's ``/mel``),
so the onset envelope here is librosa's default one without a second STFT, and extraction can add
it to each batch for a few milliseconds per clip (3 ms for 10 s, 9 ms for 29 s on one core).
Everything after the envelope is librosa on it, at the sample rate and hop of ``FeatureParams``:
``librosa.feature.tempo`` (given the tempogram) and ``librosa.onset.onset_detect``
(``onset_envelope=``); the autocorrelation tempogram is librosa's,
taken every half second instead of every frame (:func:`tempogram`), a twentieth of the cost.

==================  ========================================================================
``tempo``           global tempo estimate, BPM (``librosa.feature.tempo``, its log-normal prior
                    around 120 BPM; like every tempo estimator it can be an octave off)
``pulse_clarity``   mean normalised autocorrelation tempogram at the tempo's lag, 0..1
``onset_mean``      mean onset strength (mean positive dB change per frame over the mel bands)
``onset_std``       its standard deviation
``onset_rate``      detected onsets per second
``ioi_cv``          coefficient of variation of the inter-onset intervals (0: metronomic); not
                    librosa.beat's beat intervals, whose numba kernels take 5-6 s to compile at
                    import, in every extraction process
``tempogram_*``     mean tempogram over 8 log-spaced tempo bands, half an octave each,
                    30 to 480 BPM (``tempogram_30`` covers 30-42 BPM, and so on)
==================  ========================================================================

A silent clip (no onset energy) gets all zeros. Extraction can store a batch's statistics as
``/rhythm (N, len(RHYTHM_FIELDS)) float32`` with ``rhythm_batch(out['mel'], out['n_frames'],
params)`` on the front-end's output.
"""
from __future__ import annotations

import numpy as np

from features.params import FeatureParams

#: Lower edges of the tempogram bands, BPM: half an octave each from 30 BPM; the last ends at 480.
TEMPO_BANDS = tuple(30.0 * 2.0 ** (k / 2) for k in range(9))

#: Names of the entries of a rhythm-statistics vector, in order.
RHYTHM_FIELDS = ("tempo", "pulse_clarity", "onset_mean", "onset_std", "onset_rate", "ioi_cv",
                 *(f"tempogram_{round(lo)}" for lo in TEMPO_BANDS[:-1]))


def onset_envelope(mel_db: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """librosa's onset strength of one clip from its log-mel.

    Parameters
    ----------
    mel_db : np.ndarray [shape=(frames, n_mels)]
        Log-mel in dB, time-major as the features file stores it.
    params : FeatureParams
        Sample rate, hop and FFT size the log-mel was made with (the FFT size sets librosa's
        centring lag).

    Returns
    -------
    np.ndarray [shape=(frames,)]
        ``librosa.onset.onset_strength(S=mel_db.T, ...)``.
    """
    import librosa

    mel_db = _check_mel(mel_db, params)
    return librosa.onset.onset_strength(S=mel_db.T.astype(np.float32), sr=params.sr,
                                        hop_length=params.hop_length, n_fft=params.n_fft)


def rhythm_statistics(mel_db: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """The rhythm-statistics vector of one clip from its log-mel.

    Parameters
    ----------
    mel_db : np.ndarray [shape=(frames, n_mels)]
        Log-mel in dB of the clip's valid frames, time-major (``/mel`` of the features file,
        float16 or float32).
    params : FeatureParams
        The parameters the log-mel was made with.

    Returns
    -------
    np.ndarray [shape=(len(RHYTHM_FIELDS),)]
        float32, fields as in ``RHYTHM_FIELDS``; all zeros for a silent clip.

    Examples
    --------
    >>> stats = rhythm_statistics(ff.crop(i, 0, ff.n_frames[i]).T, ff.params)  # ff opened with ('mel',)
    >>> dict(zip(RHYTHM_FIELDS, stats))["tempo"]
    """
    import librosa

    env = onset_envelope(mel_db, params)
    out = np.zeros(len(RHYTHM_FIELDS), np.float32)
    if not np.isfinite(env).all() or env.max() <= 0:
        return out
    sr, hop = params.sr, params.hop_length
    gram = tempogram(env, params)
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


def rhythm_batch(mel_db: np.ndarray, n_frames, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """:func:`rhythm_statistics` of a batch as the front-end returns it (zero-padded clips).

    Parameters
    ----------
    mel_db : np.ndarray or torch.Tensor [shape=(batch, frames, n_mels)]
        The front-end's ``'mel'``.
    n_frames : array-like [shape=(batch,)]
        Valid frames of each clip (the front-end's ``'n_frames'``); padding is left out.
    params : FeatureParams

    Returns
    -------
    np.ndarray [shape=(batch, len(RHYTHM_FIELDS))]
        float32.
    """
    mel_db = np.asarray(mel_db)
    n_frames = np.asarray(n_frames).astype(np.int64)
    if mel_db.ndim != 3 or len(n_frames) != len(mel_db):
        raise ValueError(f"mel_db must be (batch, frames, n_mels) with one n_frames per clip, got shape "
                         f"{mel_db.shape} and {len(n_frames)} n_frames")
    return np.stack([rhythm_statistics(m[:n], params) for m, n in zip(mel_db, n_frames)]) \
        if len(mel_db) else np.zeros((0, len(RHYTHM_FIELDS)), np.float32)


def tempogram(env: np.ndarray, params: FeatureParams = FeatureParams(), step: int | None = None) -> np.ndarray:
    """librosa's autocorrelation tempogram of an onset envelope, at every ``step``-th frame.

    ``librosa.feature.tempogram(onset_envelope=env, win_length=...)[:, ::step]`` with the window
    ``librosa.feature.tempo`` uses (``ac_size`` 8 s), computed only at the frames kept: the full
    tempogram autocorrelates a window at every envelope frame, some 60 ms for a 29-s clip, while
    its time average, all the statistics need, barely changes when taken every half second.

    Parameters
    ----------
    env : np.ndarray [shape=(frames,)]
        Onset envelope, e.g. from :func:`onset_envelope`.
    params : FeatureParams
    step : int or None
        Frames between the kept ones; ``None``: 1/16 of the window (0.5 s).

    Returns
    -------
    np.ndarray [shape=(win_length, ceil(frames / step))]
        Each column normalised to a maximum of 1 (its lag-0 value).
    """
    import librosa
    import scipy.signal

    win = int(round(8.0 * params.sr / params.hop_length))
    step = max(1, win // 16) if step is None else int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    padded = np.pad(np.asarray(env, np.float64), win // 2, mode="linear_ramp", end_values=[0, 0])
    frames = librosa.util.frame(padded, frame_length=win, hop_length=1)[:, :len(env):step]
    window = scipy.signal.get_window("hann", win, fftbins=True)[:, None]
    return librosa.util.normalize(librosa.autocorrelate(frames * window, axis=0), norm=np.inf, axis=0)


def _check_mel(mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    mel_db = np.asarray(mel_db)
    if mel_db.ndim != 2 or mel_db.shape[1] != params.n_mels:
        raise ValueError(f"mel_db must be one clip's (frames, n_mels={params.n_mels}) log-mel, "
                         f"got shape {mel_db.shape}")
    if len(mel_db) < 2:
        raise ValueError(f"mel_db needs at least 2 frames for an onset envelope, got {len(mel_db)}")
    return mel_db
