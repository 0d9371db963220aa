"""The feature settings: which features, and every parameter that determines them.

Light on purpose (no torch, no librosa): commands import this to parse their arguments and
answer ``--help`` at once, before the signal-processing libraries load.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from data.audio import SR

#: STFT back-ends of the front-end: PyTorch's FFT, or nnAudio's convolution (the GPU design).
STFTS = ("fft", "nnaudio")

#: Features the front-end computes, in the order they are concatenated for models. ``musicnn`` is
#: the taggram of musicnn's network trained on the real MTAT, per frame (``features.taggram``).
FEATURES = ("mel", "mfcc", "chroma", "musicnn")
#: Rows of the ``musicnn`` feature: the 50 tags of its MTT network (``features.taggram.N_TAGS``).
MUSICNN_TAGS = 50


@dataclass(frozen=True)
class FeatureParams:
    """Every parameter that determines the stored features (the course's defaults).

    One value of this class travels from the command line to the features file, the feed, the
    run folder (``config.json``) and the tag command.

    Attributes
    ----------
    sr : int
        Sample rate of the audio, Hz (always ``data.audio.SR``: every clip is resampled to it).
    n_fft : int
        STFT frame and window length, samples.
    hop_length : int
        Hop between frames, samples.
    n_mels : int
        Mel bands (Slaney scale and normalisation).
    f_min, f_max : float
        Lowest and highest mel band edge, Hz.
    n_mfcc : int
        MFCC coefficients (DCT-II of the log-mel).
    n_chroma : int
        Chroma bins per octave.
    top_db : float or None
        Log-mel floor, dB below each clip's peak; ``None`` for no floor (only the 1e-10 power
        ``amin`` of ``librosa.power_to_db``).
    stft : {'fft', 'nnaudio'}
        STFT back-end: ``torch.stft`` (an FFT) or nnAudio's convolutional STFT. They agree to
        float rounding; the file records which one made its features.
    """

    sr: int = SR
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    f_min: float = 0.0
    f_max: float = 8000.0
    n_mfcc: int = 20
    n_chroma: int = 12
    top_db: float | None = 80.0
    stft: str = "fft"

    def __post_init__(self):
        if self.n_fft <= 0 or self.hop_length <= 0 or self.sr <= 0:
            raise ValueError("sr, n_fft and hop_length must be positive")
        if not 0 <= self.f_min < self.f_max <= self.sr / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sr/2, got f_min={self.f_min}, f_max={self.f_max}")
        if self.stft not in STFTS:
            raise ValueError(f"unknown STFT back-end {self.stft!r}; choose one of {', '.join(STFTS)}")
        if not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}")

    def n_frames(self, n_samples: int) -> int:
        """Number of STFT frames of a signal of ``n_samples`` (``center=True``)."""
        return 1 + n_samples // self.hop_length

    def frames(self, seconds: float) -> int:
        """Frames spanning ``seconds`` of audio (a crop length): ``round(seconds * sr / hop_length)``."""
        return int(round(seconds * self.sr / self.hop_length))

    def bins(self, feature: str) -> int:
        """Number of bins (rows) of one feature."""
        return {"mel": self.n_mels, "mfcc": self.n_mfcc, "chroma": self.n_chroma, "musicnn": MUSICNN_TAGS}[feature]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "FeatureParams":
        """Parameters from a mapping such as HDF5 attributes (extra keys are ignored)."""
        # Field types are strings under `from __future__ import annotations`.
        cast = {"int": int, "float": float, "str": str, "float | None": lambda v: None if v is None else float(v)}
        d = {"stft": "nnaudio", **d}  # written before the back-ends existed: nnAudio's
        return cls(**{f.name: cast[f.type](d[f.name]) for f in fields(cls) if f.name in d})


def parse_features(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalise a feature list such as ``'mel,mfcc'`` to the canonical order of ``FEATURES``.

    Raises
    ------
    ValueError
        On an empty list or an unknown feature name.
    """
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    if not names:
        raise ValueError(f"no feature given; choose from {', '.join(FEATURES)}")
    return tuple(f for f in FEATURES if f in names)
