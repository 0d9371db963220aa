"""Clip-level rhythm statistics from a stored log-mel: tempo, onset strength, a tempogram summary.

One fixed-size vector per clip (fields in ``RHYTHM_FIELDS``), for the ``beat`` sampler of metric
learning (``train.samplers``), which takes positives among the clips with the nearest statistics.

The statistics start from the clip's **log-mel**, not from its waveform: librosa's own onset
strength computes a log-power mel spectrogram first (``power_to_db(melspectrogram(y))``), which is
the feature extraction already has for every clip (the front-end's ``'mel'``, the file's ``/mel``),
so the onset envelope here is librosa's default one without a second STFT. Everything after the
envelope is librosa's definition, at the sample rate and hop of ``FeatureParams``:
``librosa.feature.tempo`` (given the tempogram) and ``librosa.onset.onset_detect``
(``onset_envelope=``); the autocorrelation tempogram is librosa's, taken every half second
instead of every frame (:func:`tempogram`), a twentieth of the cost.

Those definitions are **reproduced in numpy** here, operation for operation and in the same
floating-point order (the same pocketfft, the same summation orders, the float32 arithmetic of
librosa's numba peak picker), so every field equals the librosa implementation's to the bit:
``tests/test_rhythm.py`` keeps that implementation as its reference and checks every field
against it. Nothing here imports librosa, scipy or numba. A fresh process's first call costs
0.03-0.06 s (numpy's FFT module, a few tables) where librosa's took 1.5-2.9 s (its submodules,
scipy.signal, numba and its cached kernels), in every extraction worker. After that a 29-s clip
costs about 0.7 ms of one core in :func:`rhythm_batch` (clips of one length share each numpy
call; 0.8 ms clip by clip), against 1.2-2.1 ms through librosa on a quiet core (up to 3 ms on a
busy one). A third of it is the two 1000-point FFTs of each tempogram column, which equality with
``librosa.autocorrelate`` to the bit requires. ``python bench/bench_rhythm.py`` measures both.

==================  ========================================================================
``tempo``           global tempo estimate, BPM (``librosa.feature.tempo``, its log-normal prior
                    around 120 BPM; like every tempo estimator it can be an octave off)
``pulse_clarity``   mean normalised autocorrelation tempogram at the tempo's lag, 0..1
``onset_mean``      mean onset strength (mean positive dB change per frame over the mel bands)
``onset_std``       its standard deviation
``onset_rate``      detected onsets per second (``librosa.onset.onset_detect``'s peak picking)
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

import threading
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from features.params import FeatureParams

#: Lower edges of the tempogram bands, BPM: half an octave each from 30 BPM; the last ends at 480.
TEMPO_BANDS = tuple(30.0 * 2.0 ** (k / 2) for k in range(9))

#: Names of the entries of a rhythm-statistics vector, in order.
RHYTHM_FIELDS = ("tempo", "pulse_clarity", "onset_mean", "onset_std", "onset_rate", "ioi_cv",
                 *(f"tempogram_{round(lo)}" for lo in TEMPO_BANDS[:-1]))

#: Clips whose envelopes are computed in one numpy call, and tempogram columns (0.5 s each) whose
#: FFTs are: enough to share the calls' overheads, few enough for the intermediate arrays (0.7 MB
#: of differences a 29-s clip, 30 kB a column) to stay in the caches.
_CHUNK = 4
_COLUMNS = 128


class _Plan(NamedTuple):
    """Everything that depends only on ``(sr, hop_length, n_fft)``: made once per process."""

    sr: int
    hop: int
    lag_pad: int          # onset_strength's shift: lag 1 plus its centring, n_fft // (2 hop)
    win: int              # tempogram window (librosa.feature.tempo's ac_size: 8 s), frames
    step: int             # tempogram columns kept: every step-th frame (1/16 window, 0.5 s)
    window: np.ndarray    # periodic Hann of win (scipy.signal.get_window('hann', win))
    n_pad: int            # librosa.autocorrelate's FFT size, scipy.fft.next_fast_len(2 win - 1, real=True)
    bpms: np.ndarray      # librosa.tempo_frequencies(win)
    logprior: np.ndarray  # librosa.feature.tempo's log-normal prior (120 BPM, 1 octave, < 320 BPM)
    bands: tuple          # (first, end) lag of each tempo band, or None for an empty one
    pre_max: int          # librosa.onset.onset_detect's peak-picking parameters, in frames
    post_max: int
    pre_avg: int
    post_avg: int
    wait: int
    delta: np.float32


@lru_cache(maxsize=16)
def _plan(sr: int, hop: int, n_fft: int) -> _Plan:
    win = int(8.0 * sr) // hop  # librosa's time_to_frames(8.0): floored, so 426 at 16 kHz, hop 300
    # librosa.tempo_frequencies(win, sr=sr, hop_length=hop), bin 0 (lag 0) infinite.
    bpms = np.zeros(win, dtype=np.float64)
    bpms[0] = np.inf
    bpms[1:] = 60.0 * sr / (hop * np.arange(1.0, win))
    # librosa.feature.tempo: start_bpm=120, std_bpm=1, max_tempo=320.
    with np.errstate(invalid="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(120)) / 1.0) ** 2
    logprior[:int(np.argmax(bpms < 320.0))] = -np.inf
    bands = []
    for lo, hi in zip(TEMPO_BANDS[:-1], TEMPO_BANDS[1:]):
        lags = np.flatnonzero((bpms >= lo) & (bpms < hi))  # bpms decrease: a run of lags
        bands.append((int(lags[0]), int(lags[-1]) + 1) if len(lags) else None)
    # scipy.signal.get_window("hann", win, fftbins=True): general_cosine(win + 1, [0.5, 0.5])[:-1].
    if win <= 1:
        window = np.ones(win, dtype=np.float64)
    else:
        fac = np.linspace(-np.pi, np.pi, win + 1, dtype=np.float64)
        window = np.zeros(win + 1, dtype=np.float64)
        for k, a in enumerate((0.5, 0.5)):
            window += np.float64(a) * np.cos(k * fac)
        window = window[:-1].copy()
    n_pad = 2 * win - 1  # scipy.fft.next_fast_len(real=True): the next 5-smooth number
    while not _smooth5(n_pad):
        n_pad += 1
    for a in (bpms, logprior, window):
        a.setflags(write=False)
    # librosa.onset.onset_detect's defaults, cast up as librosa.util.peak_pick does.
    pre_max, post_max, pre_avg, post_avg, wait = (int(np.ceil(v)) for v in (
        0.03 * sr // hop, 0.00 * sr // hop + 1, 0.10 * sr // hop, 0.10 * sr // hop + 1, 0.03 * sr // hop))
    return _Plan(sr=sr, hop=hop, lag_pad=1 + n_fft // (2 * hop), win=win, step=max(1, win // 16),
                 window=window, n_pad=n_pad, bpms=bpms, logprior=logprior, bands=tuple(bands),
                 pre_max=pre_max, post_max=post_max, pre_avg=pre_avg, post_avg=post_avg, wait=wait,
                 delta=np.float32(0.07))


def _smooth5(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def _plan_of(params: FeatureParams) -> _Plan:
    return _plan(int(params.sr), int(params.hop_length), int(params.n_fft))


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
        float32, ``librosa.onset.onset_strength(S=mel_db.T, sr=, hop_length=, n_fft=)`` to the bit.
    """
    mel_db = _check_mel(mel_db, params)
    # (1, n_mels, frames): the same memory order as librosa's S = mel_db.T, so the same summation order.
    return _envelopes(mel_db.T[None], _plan_of(params).lag_pad)[0]


def _envelopes(mel_t: np.ndarray, lag_pad: int) -> np.ndarray:
    """Onset envelopes ``(clips, frames)`` float32 of log-mels ``(clips, n_mels, frames)``.

    librosa.onset.onset_strength_multi with S=mel.T, lag=1, max_size=1, center=True, mean
    aggregation: the positive frame-to-frame differences averaged over the mel bands, delayed by
    ``lag_pad`` frames (zeros first) and cut to the input's length. The float32 arrays keep each
    clip's memory order, as librosa's ``S.astype(np.float32)`` does, so that the mean over the mel
    bands adds in librosa's order: band by band when a band's frames are adjacent in memory (the
    front-end's and the features file's layout), else pairwise over each frame's bands. The clip
    axis must be outermost in memory (or of length 1).
    """
    clips, bands, frames = mel_t.shape
    if mel_t.dtype != np.float32 or not (mel_t.flags.c_contiguous or mel_t.transpose(0, 2, 1).flags.c_contiguous):
        mel_t = mel_t.astype(np.float32)  # librosa's copy (same memory order, dense)
    by_band = mel_t.flags.c_contiguous  # memory (clips, bands, frames)
    # The differences as one flat subtraction over the memory (a frame's successor lies 1 or
    # `bands` items on), then the clip's last difference, which mixes two rows or clips, dropped.
    shift = 1 if by_band else bands
    flat = (mel_t if by_band else mel_t.transpose(0, 2, 1)).reshape(-1)
    d = _work("diff", flat.shape, np.float32)
    np.subtract(flat[shift:], flat[:-shift], out=d[:-shift])
    d[-shift:] = 0.0
    np.maximum(_zeros(d.size, np.float32), d, out=d)  # np.maximum(0.0, d), 4x faster
    if by_band:
        core = d.reshape(clips, bands, frames)[:, :, :-1].mean(axis=1)
    else:
        core = d.reshape(clips, frames, bands)[:, :-1, :].mean(axis=2)
    env = np.zeros((clips, frames), np.float32)
    if lag_pad < frames:
        env[:, lag_pad:] = core[:, :frames - lag_pad]
    return env


#: Per-thread scratch memory, reused from call to call: a fresh array of a few MB costs page
#: faults on every call, as much time as the arithmetic on it. One buffer per use, grown as needed.
_SCRATCH = threading.local()
_SCRATCH_MAX = 64 << 20  # bytes; a larger request gets an array of its own


def _work(name: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
    """A scratch array of this thread, valid until the next request of the same ``name``.

    Uninitialised, or with ``zero`` all zeros when its shape differs from the last request's (a
    caller that writes only part of it every time, with the same shape, finds the rest still 0).
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    if size * dtype.itemsize > _SCRATCH_MAX:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    flat, last = cache.get(name, (None, None))
    if flat is None or flat.dtype != dtype or flat.size < size:
        flat, last = np.zeros(size, dtype), shape
    out = flat[:size].reshape(shape)
    if zero and last != shape:
        out[...] = 0
    cache[name] = (flat, shape)
    return out


def _zeros(size: int, dtype) -> np.ndarray:
    """``size`` zeros of this thread's, never to be written."""
    dtype = np.dtype(dtype)
    if size * dtype.itemsize > _SCRATCH_MAX:
        return np.zeros(size, dtype)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    key = ("zeros", dtype.str)
    flat = cache.get(key)
    if flat is None or flat.size < size:
        flat = cache[key] = np.zeros(size, dtype)
    return flat[:size]


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
    A click every half second (120 BPM), its log-mel made with librosa:

    >>> import librosa
    >>> p = FeatureParams()
    >>> y = np.zeros(10 * p.sr, np.float32)
    >>> y[:: p.sr // 2] = 1.0
    >>> mel = librosa.feature.melspectrogram(y=y, sr=p.sr, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels)
    >>> stats = rhythm_statistics(librosa.power_to_db(mel).T, p)
    >>> round(float(dict(zip(RHYTHM_FIELDS, stats))["tempo"]))
    121

    From a features file: ``rhythm_statistics(ff.crop(i, 0, ff.n_frames[i]).T, ff.params)``
    (``ff = train.feed.FeatureFile(path, 'mel')``), which extraction stores in ``/rhythm``.
    """
    env = onset_envelope(mel_db, params)
    if not np.isfinite(env).all() or env.max() <= 0:
        return np.zeros(len(RHYTHM_FIELDS), np.float32)
    return _statistics(env[None], _plan_of(params))[0]


def rhythm_batch(mel_db: np.ndarray, n_frames, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """:func:`rhythm_statistics` of a batch as the front-end returns it (zero-padded clips).

    The clips are processed together (clips of one length share each numpy call); each row equals
    ``rhythm_statistics(mel_db[i][:n_frames[i]], params)`` to the bit.

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
    out = np.zeros((len(mel_db), len(RHYTHM_FIELDS)), np.float32)
    if not len(mel_db):
        return out
    frames = mel_db.shape[1]
    n_frames = n_frames.clip(-frames, frames)
    lengths = np.where(n_frames >= 0, n_frames, frames + n_frames)  # len(m[:n]), as sliced
    _check_mel(mel_db[0, :lengths[0]], params)  # the first bad clip's error, as clip by clip
    short = np.flatnonzero(lengths < 2)
    if len(short):
        _check_mel(mel_db[short[0], :lengths[short[0]]], params)
    plan = _plan_of(params)
    # Each clip's (n_mels, frames) in the batch must keep the memory order it has alone (batch axis
    # outermost) for the batched mean over the mel bands to add as librosa does; else clip by clip.
    batched = all(s > 0 for s in mel_db.strides) and mel_db.strides[0] >= max(mel_db.strides[1:])
    env = np.zeros((len(mel_db), frames), np.float32)
    for at in range(0, len(mel_db), _CHUNK):
        if batched:  # every frame, padding too: the batch's memory as it is, without a copy
            env[at:at + _CHUNK] = _envelopes(mel_db[at:at + _CHUNK].transpose(0, 2, 1), plan.lag_pad)
        else:
            for i in range(at, min(at + _CHUNK, len(mel_db))):
                env[i, :lengths[i]] = _envelopes(mel_db[i, :lengths[i]].T[None], plan.lag_pad)[0]
    # Silent clips (no onset energy) and clips with non-finite values keep their zeros.
    inside = np.arange(frames) < lengths[:, None]
    finite = (np.isfinite(env) | ~inside).all(axis=1)
    good = np.flatnonzero(finite & (np.where(inside, env, -np.inf).max(axis=1) > 0))
    for n in np.unique(lengths[good]):  # clips of one length: one envelope array
        same = good[lengths[good] == n]
        per = max(1, _COLUMNS // -(-int(n) // plan.step))
        for at in range(0, len(same), per):
            rows = same[at:at + per]
            out[rows] = _statistics(env[rows, :n], plan)
    return out


def _statistics(env: np.ndarray, plan: _Plan) -> np.ndarray:
    """The statistics ``(clips, fields)`` float32 of onset envelopes ``env (clips, frames)``, all of
    one length, each finite with a positive maximum.

    Rounding as the reference's: the time average of each tempogram is numpy's mean over the
    columns of a C-contiguous (lags, columns) array, each band's average a mean over a run of lags,
    the onset mean and std numpy's float32 ones of each envelope (a row's reduction adds as a 1-d
    array's does), each field rounded once from float64 to float32.
    """
    out = np.zeros((len(env), len(RHYTHM_FIELDS)), np.float32)
    gram = _tempograms(env, plan, plan.step).mean(axis=2)  # (clips, lags)
    # librosa.feature.tempo(tg=...): the lag of the prior-weighted maximum of the mean tempogram.
    best = np.argmax(np.log1p(1e6 * gram) + plan.logprior, axis=1)
    out[:, 0] = plan.bpms[best]
    # The reference's lag, argmin(|bpms[1:] - tempo|) + 1, is `best`: the bpms are distinct and
    # tempo is one of them, never bpms[0] (lag 0), whose prior is -inf.
    out[:, 1] = gram[np.arange(len(gram)), np.maximum(best, 1)]
    out[:, 2] = env.mean(axis=1)
    out[:, 3] = env.std(axis=1)
    onsets = _onset_detect(env, plan)
    out[:, 4] = [len(o) / (env.shape[1] * plan.hop / plan.sr) for o in onsets]
    for i, o in enumerate(onsets):
        if len(o) >= 3:
            intervals = np.diff(o)
            out[i, 5] = intervals.std() / intervals.mean()
    for k, band in enumerate(plan.bands):
        if band:
            out[:, 6 + k] = gram[:, band[0]:band[1]].mean(axis=1)
    return out


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
    plan = _plan_of(params)
    step = plan.step if step is None else int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    env = np.asarray(env)
    if env.ndim != 1 or not len(env):
        raise ValueError(f"env must be one non-empty onset envelope, got shape {env.shape}")
    if not np.isfinite(env).all():
        raise ValueError("env must be finite")  # as librosa.util.normalize
    return _tempograms(env[None], plan, step)[0].copy()


def _tempograms(env: np.ndarray, plan: _Plan, step: int) -> np.ndarray:
    """Normalised autocorrelation tempograms ``(clips, lags, columns)`` of envelopes ``(clips, frames)``.

    librosa.feature.tempogram's steps: the envelope padded by half a window each side with linear
    ramps to 0 (``np.pad(mode='linear_ramp')``), a Hann-windowed frame at every ``step``-th frame,
    its autocorrelation through a zero-padded real FFT (``librosa.autocorrelate``: power spectrum
    re**2 + im**2, inverse FFT, first ``win`` lags) and each column divided by its largest
    magnitude (``librosa.util.normalize(norm=inf)``; all-zero columns left at 0). The result is a scratch array (valid until
    the next call in this thread), C-contiguous like librosa's, so that a mean over the columns
    adds in librosa's order.
    """
    win, half, n_pad = plan.win, plan.win // 2, plan.n_pad
    clips, frames = env.shape
    padded = np.empty((clips, frames + 2 * half), np.float64)
    padded[:, half:half + frames] = env
    padded[:, :half] = _ramps(padded[:, half], half)
    padded[:, half + frames:] = _ramps(padded[:, half + frames - 1], half)[:, ::-1]
    framed = np.lib.stride_tricks.sliding_window_view(padded, win, axis=1)[:, :frames:step]
    cols = framed.shape[1]
    buf = _work("frames", (clips, cols, n_pad), np.float64, zero=True)  # the zero padding stays 0
    np.multiply(framed, plan.window, out=buf[..., :win])
    spec = _rfft(buf, _work("spectrum", (clips, cols, n_pad // 2 + 1), np.complex128))
    parts = spec.view(np.float64)  # re, im interleaved
    np.multiply(parts, parts, out=parts)
    power = np.add(parts[..., 0::2], parts[..., 1::2], out=_work("power", (clips, cols, n_pad // 2 + 1), np.float64))
    acf = _irfft(power, n_pad, _work("acf", (clips, cols, n_pad), np.float64))[..., :win]
    # max |acf| over the lags, without the |.| array
    length = np.maximum(acf.max(axis=-1, keepdims=True), -acf.min(axis=-1, keepdims=True))
    length[length < np.finfo(np.float64).tiny] = 1.0
    gram = _work("tempogram", (clips, win, cols), np.float64)
    np.divide(acf, length, out=gram.transpose(0, 2, 1))
    return gram


if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
    # numpy 2's FFT is the C++ pocketfft of scipy.fft, which librosa uses: the same numbers.
    def _rfft(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.fft.rfft(x, axis=-1, out=out)

    def _irfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
        return np.fft.irfft(x, n=n, axis=-1, out=out)
else:  # pragma: no cover  (numpy 1's is an older pocketfft, without out=: librosa's own scipy.fft)
    def _rfft(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        import scipy.fft

        out[...] = scipy.fft.rfft(x, axis=-1)
        return out

    def _irfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
        import scipy.fft

        out[...] = scipy.fft.irfft(x, n=n, axis=-1)
        return out


def _ramps(edges: np.ndarray, width: int) -> np.ndarray:
    """``np.linspace(0, edge, width, endpoint=False)`` of each edge value, as ``np.pad``'s linear ramps."""
    ramp = np.arange(0, width, dtype=np.float64)
    step = edges / width
    out = ramp[None, :] * step[:, None]
    zero = step == 0
    if zero.any():  # linspace's special case for a step that underflows
        out[zero] = (ramp / width)[None, :] * edges[zero, None]
    out += 0
    return out


def _onset_detect(env: np.ndarray, plan: _Plan) -> list[np.ndarray]:
    """librosa.onset.onset_detect(onset_envelope=row, sr, hop_length) of each row of ``env``: frames.

    The envelope is normalised to 0..1 (minus its minimum, over its maximum + float32 tiny), then
    librosa.util.peak_pick's rule: frame n is a candidate when it is the maximum of
    ``x[n - pre_max:n + post_max]`` and at least ``delta`` above the float32 mean of
    ``x[n - pre_avg:n + post_avg]`` (windows clipped at the ends; the mean summed in float32 left
    to right, as the numba kernel does), and candidates are taken greedily, each more than
    ``wait`` frames after the last one taken.
    """
    x = env - env.min(axis=1, keepdims=True)
    x /= x.max(axis=1, keepdims=True) + np.finfo(np.float32).tiny
    clips, n = x.shape
    # Running maximum over the window, -inf outside the clip.
    width = plan.pre_max + plan.post_max
    padded = np.full((clips, n + width - 1), -np.inf, np.float32)
    padded[:, plan.pre_max:plan.pre_max + n] = x
    peak = padded[:, :n].copy()
    for k in range(1, width):
        np.maximum(peak, padded[:, k:k + n], out=peak)
    # Running float32 sums, left to right, zeros outside the clip (adding 0 changes nothing).
    width = plan.pre_avg + plan.post_avg
    padded = np.zeros((clips, n + width - 1), np.float32)
    padded[:, plan.pre_avg:plan.pre_avg + n] = x
    total = padded[:, :n].copy()
    for k in range(1, width):
        total += padded[:, k:k + n]
    at = np.arange(n)
    count = np.minimum(at + plan.post_avg, n) - np.maximum(at - plan.pre_avg, 0)
    mean = (total / count).astype(np.float32)  # float64 quotient of float32s, rounded: float32's
    candidate = (x == peak) & (x >= mean + plan.delta)
    candidate &= (x.any(axis=1) & np.isfinite(x).all(axis=1))[:, None]
    return [_greedy(np.flatnonzero(c), plan.wait) for c in candidate]


def _greedy(candidates: np.ndarray, wait: int) -> np.ndarray:
    """The candidates peak_pick keeps: each more than ``wait`` frames after the last one kept."""
    if len(candidates) < 2 or (np.diff(candidates) > wait).all():
        return candidates
    kept, last = [], None
    for c in candidates.tolist():
        if last is None or c > last + wait:
            kept.append(c)
            last = c
    return np.array(kept, dtype=candidates.dtype)


def _check_mel(mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    mel_db = np.asarray(mel_db)
    if mel_db.ndim != 2 or mel_db.shape[1] != params.n_mels:
        raise ValueError(f"mel_db must be one clip's (frames, n_mels={params.n_mels}) log-mel, "
                         f"got shape {mel_db.shape}")
    if len(mel_db) < 2:
        raise ValueError(f"mel_db needs at least 2 frames for an onset envelope, got {len(mel_db)}")
    return mel_db
