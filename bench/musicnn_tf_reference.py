"""musicnn's own TensorFlow outputs on audio files, for the parity check of bench/bench_pretrained.py.

    # in an environment with TensorFlow 2 + tf_keras and musicnn (not the project's: it needs none of ours)
    TF_USE_LEGACY_KERAS=1 python bench/musicnn_tf_reference.py SONG.mp3 ... --out cache/musicnn-tf

For each network and file it writes ``NAME__FILE.npz`` with the taggram (sigmoid scores of every
3-s patch), the penultimate layer (musicnn models) and the input patches. It runs musicnn's graph
(``musicnn.models.define_model``) and its checkpoint with musicnn's front-end (librosa
melspectrogram, n_fft 512, hop 256, 96 bands, non-overlapping 187-frame patches), with two changes
that current TensorFlow and numpy need, stated here because they are what parity is measured against:

- ``log10(1 + 10000 * S)`` in float32: musicnn's extractor casts ``S`` to float16 first, where
  ``10000 * S`` overflows to inf for ``S > 6.55`` (0.8 % of the bins of the MTAT fixture); the
  MTT_musicnn output is then the same for every input.
- ``is_training=False`` as a Python bool, not a placeholder fed False.
"""
import argparse
import os
from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf
from musicnn import configuration as config
from musicnn import models

NAMES = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
FRAMES = 187


def patches(path):
    audio, sr = librosa.load(path, sr=config.SR)
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE,
                                         n_mels=config.N_MELS).T
    rep = np.log10(1 + 10000 * mel).astype(np.float32)
    return np.stack([rep[t:t + FRAMES] for t in range(0, len(rep) - FRAMES + 1, FRAMES)])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("cache/musicnn-tf"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tf.compat.v1.disable_eager_execution()
    inputs = {f: patches(f) for f in a.audio}
    for name in NAMES:
        tf.compat.v1.reset_default_graph()
        x = tf.compat.v1.placeholder(tf.float32, [None, FRAMES, config.N_MELS])
        out = models.define_model(x, False, name, 50)
        with tf.compat.v1.Session() as sess:
            tf.compat.v1.train.Saver().restore(sess, os.path.dirname(models.__file__) + f"/{name}/")
            for f, batch in inputs.items():
                taggram, last = sess.run([tf.nn.sigmoid(out[0]), out[-1]], {x: batch})
                np.savez(a.out / f"{name}__{f.name}.npz", taggram=taggram, patches=batch,
                         **({"penultimate": last} if "musicnn" in name else {}))
                print(name, f.name, taggram.shape)


if __name__ == "__main__":
    main()
