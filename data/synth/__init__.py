"""The demo corpus synthesizer: tags, clip plans and audio for ``data/demo.py``.

``tags`` (vocabulary and noisy-OR emission), ``tracks`` (track latents: one function per genre, in a table),
``plan`` (clip plans), ``primitives`` (oscillators, strings, filters, the clip context), ``notes`` (melodies,
chord lines, strums, arpeggios), ``plucked`` and ``instruments`` (the instrument parts), ``drums``, ``voices``
and ``render`` (the mix). The corpus writer and command line are ``data/demo.py``.
"""
