"""Tag a recording with a trained run: any audio file in, the top-k tags with scores out.

    python train/tag.py song.mp3 [more files ...] [--run RUN] [--top-k 10] [--json] [--taggram taggram.png]

Without ``--run`` the tagger is musicnn's network trained on the real MagnaTagATune
(``cache/pretrained/MTT_musicnn``, made from the installed ``musicnn`` package on first use), the
best tagger for real music the project has; the demo's model (``--run cache/runs/tagging-shortres``)
is trained on synthetic audio and is used only when asked for, or when musicnn is not installed.

The audio is decoded and featurised exactly as in extraction (16 kHz mono, the run's feature
parameters and front-end), standardised with the run's training statistics, cut into the
run's crop length and the sigmoid scores are averaged over the crops, as on the test split.
``--run cache/pretrained/MTT_musicnn`` (made by ``train/pretrained.py``) tags with musicnn's
network trained on the real MagnaTagATune; ``--taggram`` draws the scores of every crop.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data.audio import AudioError, load_audio
from data.cli import HelpFormatter
from data.files import output_error
from features.device import device_error, pick_device
from features.params import FeatureParams
from train.runfolder import RunError, best_model, load_best

# torch, the front-end and the models load in the functions that use them: --help answers at once.


def load_run(run: Path, device="cpu"):
    """The model of a tagging run, its front-end, standardisation and crop length."""
    from features.frontend import FrontEnd

    cfg, ckpt = load_best(run, device, "tagging")
    params = FeatureParams.from_dict(cfg["feature_params"])
    frontend = FrontEnd(cfg["inputs"], params).to(device)
    model = best_model(run, cfg, ckpt, frontend.n_bins(), params.n_mels if "mel" in cfg["inputs"] else 0, device)
    return model, frontend, ckpt["mean"], ckpt["std"], int(cfg["frames"]), cfg["tags"]


#: Crops the network takes at once: memory bounded whatever the file's length.
CROPS = 32


def taggram(path, model, frontend, mean, std, frames: int, device="cpu", tail: bool = False):
    """Sigmoid scores of each non-overlapping crop of one audio file, ``(crops, tags)``.

    The crops start at frame 0 every ``frames`` frames and a shorter tail is left out (as on the
    test split, and as musicnn's extractor cuts its patches); a file shorter than one crop is
    padded with the training mean. With ``tail``, a last crop ending at the file's end is added
    when a tail is left (for the taggram's picture), and ``(scores, start frames, n_frames)`` is
    returned (``n_frames``: the file's own frames, fewer than a crop's for a short file); the clip score
    is still the mean of the non-overlapping crops.
    """
    import torch

    from train.feed import chunk_starts

    y = load_audio(path, sr=frontend.params.sr)
    with torch.no_grad():
        out = frontend(torch.from_numpy(y)[None].to(device))
        x = torch.cat([out[f][0] for f in frontend.features], dim=1).T.cpu().numpy()  # (bins, T)
        x = (x - mean[:, None]) / std[:, None]
        valid = x.shape[1]
        if x.shape[1] < frames:  # shorter than one crop: pad with the training mean (0 once standardised)
            x = np.pad(x, ((0, 0), (0, frames - x.shape[1])))
        starts = chunk_starts(x.shape[1], frames)
        if tail and x.shape[1] > starts[-1] + frames:
            starts = np.append(starts, x.shape[1] - frames)
        # the network takes the crops a batch at a time: at once, a 12-minute file took 4.8 GB
        scores = np.concatenate([
            torch.sigmoid(model(torch.from_numpy(np.stack([x[:, t:t + frames] for t in starts[k:k + CROPS]]))
                                .float().to(device))).cpu().numpy() for k in range(0, len(starts), CROPS)])
        return (scores, starts, valid) if tail else scores


def tag_file(path, model, frontend, mean, std, frames: int, device="cpu") -> np.ndarray:
    """Clip-level sigmoid scores of one audio file: the mean of its :func:`taggram` over crops."""
    return taggram(path, model, frontend, mean, std, frames, device).mean(axis=0)


def taggram_path(base: Path, song: Path, n_songs: int, taken: set | None = None) -> Path:
    """``--taggram`` as given for one song; ``<stem>_<song stem><suffix>`` beside it for several, the song's
    stem cut to 100 characters and numbered (``_2``...) where another song's already took the name
    (``taken``, updated)."""
    if n_songs == 1:
        return base
    stem, k = f"{base.stem}_{song.stem[:100]}", 1
    path = base.with_name(f"{stem}{base.suffix or '.png'}")
    while taken is not None and path in taken:
        k += 1
        path = base.with_name(f"{stem}_{k}{base.suffix or '.png'}")
    if taken is not None:
        taken.add(path)
    return path


PRETRAINED = Path("cache/pretrained/MTT_musicnn")
DEMO_RUN = Path("cache/runs/tagging-shortres")


def default_run() -> Path:
    """The best tagger at hand: musicnn's MTT network (made from the package on first use), else the demo's."""
    if (PRETRAINED / "config.json").is_file():
        return PRETRAINED
    from train.pretrained import convert, package_dir

    try:
        package_dir()
    except RunError:
        print(f"note: the musicnn package is not installed, so this tags with the demo's model ({DEMO_RUN}), "
              "trained on synthetic audio; `pip install --no-deps musicnn==0.1.0` gives a tagger trained on "
              "the real MagnaTagATune", file=sys.stderr)
        return DEMO_RUN
    print(f"first use: making {PRETRAINED} from the musicnn package (train/pretrained.py MTT_musicnn)",
          file=sys.stderr)
    return convert("MTT_musicnn", PRETRAINED)


def describe(run: Path) -> tuple[str, str]:
    """The tagger of ``run``: a short name and one line saying what it is and was trained on."""
    cfg = json.loads((run / "config.json").read_text())
    pre = cfg.get("pretrained")
    if pre:
        name = pre["name"]
        return name, f"{name} (musicnn's published network, trained on {name[:3]}) from {run}"
    name = f"{cfg['model']} ({run.name})"
    return name, f"{cfg['model']} trained by train/run.py on {cfg.get('features_file', '?')}, from {run}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python train/tag.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("audio", nargs="+", type=Path, help="audio files (MP3, WAV, FLAC...; any rate, mono or stereo)")
    p.add_argument("--run", type=Path, default=None,
                   help=f"a tagging run folder; default {PRETRAINED} (musicnn trained on the real MTAT, made on "
                        f"first use), or the demo's {DEMO_RUN} when the musicnn package is not installed")
    p.add_argument("--top-k", type=int, default=10, help="tags to print per file")
    p.add_argument("--json", action="store_true", help="print JSON: {file: {tag: score}} with all tags")
    p.add_argument("--taggram", type=Path, default=None,
                   help="PNG of the tags x time scores (with several files: one PNG each, named after the "
                        "file); default: none")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the network runs; auto: cuda when there is one")
    a = p.parse_args(argv)
    if a.top_k < 1:
        p.error(f"--top-k must be at least 1, got {a.top_k}")
    if a.taggram and (error := output_error(a.taggram, "--taggram")):
        p.error(error)
    if error := device_error(a.device):
        p.error(error)
    a.device = str(pick_device(a.device))
    try:
        run = a.run or default_run()
        model, frontend, mean, std, frames, tags = load_run(run, a.device)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name, line = describe(run)
    print(f"tagger: {line}", file=sys.stderr)
    results, failed = {}, 0
    sec = frontend.params.hop_length / frontend.params.sr  # one frame, in seconds
    taken = set()  # the taggrams' names so far: two songs of one stem get two pictures
    for path in a.audio:
        try:
            crops, starts, n_frames = taggram(path, model, frontend, mean, std, frames, a.device, tail=True)
        except AudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if n_frames < frames:
            print(f"note: {path} lasts {n_frames * sec:.1f} s, less than the {frames * sec:.1f} s the network "
                  "hears at once; it is scored padded to a crop with the training clips' mean features",
                  file=sys.stderr)
        whole = max(1, n_frames // frames)  # the clip score: the non-overlapping crops, as on the test split
        results[str(path)] = scores = crops[:whole].mean(axis=0)
        if a.taggram:
            from train.plots import plot_taggram

            png = taggram_path(a.taggram, path, len(a.audio), taken)
            plot_taggram(crops, tags, frames * sec, png, title=f"Taggram of {path.name} by {name}",
                         starts=starts * sec, end=max(n_frames, frames) * sec)
            print(f"taggram: {png}", file=sys.stderr if a.json else sys.stdout)
        if not a.json:
            print(f"{path}")
            for t in np.argsort(-scores, kind="stable")[: a.top_k]:
                print(f"  {scores[t]:.3f}  {tags[t]}")
    if a.json:
        print(json.dumps({f: {t: round(float(s), 6) for t, s in zip(tags, sc)} for f, sc in results.items()}, indent=1))
    if failed:
        print(f"{failed} of {len(a.audio)} files could not be tagged (see the errors above)", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
