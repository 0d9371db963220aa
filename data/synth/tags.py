"""Tag vocabulary of the demo corpus and the noisy-OR rules that emit a clip's tags from its latent."""
from __future__ import annotations

import numpy as np

from data.mtat import TAGS
from data.synth.tracks import _MINORISH


#: Tag columns besides the 50: plausible MTAT names (the real file has 188 tag columns in all).
OTHER_TAGS: tuple[str, ...] = (
    "jazz", "folk", "irish", "celtic", "world", "eastern", "arabic", "middle eastern", "oriental", "india",
    "tabla", "drone", "baroque", "orchestra", "orchestral", "chant", "chanting", "monks", "organ", "bass",
    "electric guitar", "acoustic guitar", "acoustic", "distortion", "heavy", "heavy metal", "hard rock",
    "soft rock", "punk", "trance", "house", "electro", "synthesizer", "keyboard", "no beat", "no drums",
    "no piano", "no guitar", "no strings", "no violin", "no singer", "no singing", "upbeat", "calm", "mellow",
    "dark", "low", "high", "deep", "male singer", "female singer", "man singing", "women", "men", "singer",
    "duet", "operatic", "female opera", "male opera", "soprano", "tenor", "violins", "fiddle", "string",
    "banjo", "sax", "saxophone", "oud", "plucking", "picking", "strumming", "percussion", "drum",
    "drum machine", "experimental", "strange", "noise", "industrial", "spacey", "eerie", "meditation",
    "relaxing", "repetitive", "clasical", "classicle", "classical guitar", "harpsicord", "bells", "chimes",
    "woodwind", "happy", "sad", "modern", "old", "medieval", "renaissance", "spanish", "viola", "horns",
    "trumpet", "clarinet", "oboe", "rap", "hip hop", "reggae", "blues", "funk", "funky", "disco", "soul",
    "talking", "speaking", "whispering", "silence", "background", "instrumental", "lute", "mandolin",
    "accordion", "didgeridoo", "bongos", "horn", "choirs", "chorus", "female singing", "male singing",
    "vocalist", "fast beat", "slow beat", "techno beat", "synth pad", "strings section", "piano solo",
    "guitar solo", "new wave", "latin", "jungle", "sitar drone",
)

#: Header order of the tag columns: a fixed interleaving of the 50 and the others (the real file also mixes
#: them), the same for every corpus.
COLUMNS: tuple[str, ...] = tuple(
    np.array(TAGS + OTHER_TAGS, dtype=object)[np.random.default_rng(188).permutation(len(TAGS) + len(OTHER_TAGS))]
)

# Noisy-OR emission rules: tag -> ((attribute, P(tag | attribute) at attention 1), ...), false-positive rate.
# Attribute names: g:<genre>, s:<style>, i:<instrument>, lead:<instrument>, v:<voice kind>, d:<kit class>,
# t:<tempo class>, l:<loudness class>, m:<mode>, plus a few derived flags (see ``_attributes``).
_RULES: dict[str, tuple[tuple[tuple[str, float], ...], float]] = {
    "guitar": ((("guitar_lead", 0.95), ("guitar", 0.75)), 0.004),
    "classical": ((("g:classical", 0.68), ("g:opera", 0.35), ("g:choral", 0.3), ("i:harpsichord", 0.2)), 0.004),
    "slow": ((("t:slow", 0.42), ("s:ambient", 0.2)), 0.006),
    "techno": ((("s:techno", 0.95), ("s:dance", 0.3), ("s:electronic", 0.22)), 0.003),
    "strings": ((("i:strings", 0.7), ("lead:violin", 0.3), ("lead:cello", 0.3)), 0.004),
    "drums": ((("d:acoustic", 0.3), ("d:electronic", 0.15), ("d:hand", 0.15)), 0.003),
    "electronic": ((("g:electronic", 0.36), ("i:synth", 0.1), ("g:weird", 0.15)), 0.003),
    "rock": ((("g:rock", 0.85), ("g:metal", 0.45), ("dist", 0.1)), 0.003),
    "fast": ((("t:fast", 0.34),), 0.005),
    "piano": ((("lead:piano", 0.55), ("i:piano", 0.25)), 0.003),
    "ambient": ((("s:ambient", 0.85), ("s:newage", 0.45)), 0.004),
    "beat": ((("d:electronic", 0.32), ("d:acoustic", 0.1), ("d:hand", 0.08)), 0.004),
    "violin": ((("lead:violin", 0.75), ("i:violin", 0.45), ("i:strings", 0.15)), 0.003),
    "vocal": ((("v:any", 0.22),), 0.003),
    "synth": ((("lead:synth", 0.18), ("i:synth", 0.11)), 0.003),
    "female": ((("v:female", 0.5),), 0.002),
    "indian": ((("g:indian", 0.9), ("i:sitar", 0.2), ("g:world", 0.08)), 0.002),
    "opera": ((("v:opera", 0.92), ("g:opera", 0.1)), 0.002),
    "male": ((("v:male", 0.32),), 0.002),
    "singing": ((("v:any", 0.16),), 0.002),
    "vocals": ((("v:any", 0.16),), 0.002),
    "no vocals": ((("v:none", 0.075),), 0.002),
    "harpsichord": ((("i:harpsichord", 0.92),), 0.002),
    "loud": ((("l:loud", 0.16), ("g:metal", 0.12)), 0.003),
    "quiet": ((("l:quiet", 0.16),), 0.003),
    "flute": ((("lead:flute", 0.48), ("i:flute", 0.24)), 0.002),
    "woman": ((("v:female", 0.35),), 0.001),
    "male vocal": ((("v:male", 0.25),), 0.001),
    "no vocal": ((("v:none", 0.065),), 0.002),
    "pop": ((("g:pop", 0.58), ("s:dance", 0.12)), 0.004),
    "soft": ((("l:quiet", 0.1), ("soft_timbre", 0.03)), 0.003),
    "sitar": ((("i:sitar", 0.95),), 0.001),
    "solo": ((("solo", 0.32), ("guitar_solo", 0.25)), 0.003),
    "man": ((("v:male", 0.22),), 0.001),
    "classic": ((("g:classical", 0.14), ("g:opera", 0.08)), 0.002),
    "choir": ((("v:choir", 0.95), ("v:chant", 0.5)), 0.001),
    "voice": ((("v:any", 0.11),), 0.002),
    "new age": ((("s:newage", 0.5), ("s:ambient", 0.15)), 0.003),
    "dance": ((("s:dance", 0.5), ("s:techno", 0.15)), 0.002),
    "male voice": ((("v:male", 0.19),), 0.001),
    "female vocal": ((("v:female", 0.25),), 0.001),
    "beats": ((("d:electronic", 0.16), ("d:acoustic", 0.03)), 0.002),
    "harp": ((("lead:harp", 0.7), ("i:harp", 0.45)), 0.002),
    "cello": ((("lead:cello", 0.72), ("i:cello", 0.4)), 0.002),
    "no voice": ((("v:none", 0.045),), 0.001),
    "weird": ((("g:weird", 0.72),), 0.007),
    "country": ((("g:country", 0.72), ("i:banjo", 0.2)), 0.002),
    "metal": ((("g:metal", 0.8),), 0.001),
    "female voice": ((("v:female", 0.21),), 0.001),
    "choral": ((("v:choir", 0.55), ("v:chant", 0.3)), 0.001),
}

_OTHER_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "jazz": (("g:jazz", 0.7),), "folk": (("g:folk", 0.6), ("g:country", 0.08)), "irish": (("s:irish", 0.5),),
    "celtic": (("s:irish", 0.35),), "world": (("g:world", 0.4), ("g:indian", 0.15)),
    "eastern": (("g:world", 0.3), ("g:indian", 0.2)), "arabic": (("g:world", 0.3),),
    "middle eastern": (("g:world", 0.25),), "oriental": (("g:world", 0.15), ("g:indian", 0.1)),
    "india": (("g:indian", 0.2),), "tabla": (("i:tabla", 0.4),), "drone": (("i:tanpura", 0.2), ("s:ambient", 0.15)),
    "baroque": (("i:harpsichord", 0.35), ("s:baroque", 0.2)), "orchestra": (("i:strings", 0.2),),
    "orchestral": (("i:strings", 0.15),), "chant": (("v:chant", 0.5),), "chanting": (("v:chant", 0.3),),
    "monks": (("v:chant", 0.25),), "organ": (("i:organ", 0.5),), "bass": (("i:bass", 0.12),),
    "electric guitar": (("i:electric_guitar", 0.3), ("dist", 0.2)), "acoustic guitar": (("i:acoustic_guitar", 0.2),),
    "acoustic": (("i:acoustic_guitar", 0.15),), "distortion": (("dist", 0.2),), "heavy": (("g:metal", 0.35),),
    "heavy metal": (("g:metal", 0.25),), "hard rock": (("g:rock", 0.12), ("g:metal", 0.15)),
    "trance": (("s:techno", 0.12), ("s:dance", 0.15)), "house": (("s:dance", 0.15),),
    "electro": (("g:electronic", 0.1),), "synthesizer": (("i:synth", 0.12),),
    "keyboard": (("i:piano", 0.04), ("i:synth", 0.05), ("i:organ", 0.1)), "no beat": (("nodrums", 0.06),),
    "no drums": (("nodrums", 0.05),), "no piano": (("nopiano", 0.02),), "no guitar": (("noguitar", 0.02),),
    "no singer": (("v:none", 0.03),), "no singing": (("v:none", 0.04),), "upbeat": (("t:fast", 0.08),),
    "calm": (("l:quiet", 0.1), ("t:slow", 0.05)), "mellow": (("l:quiet", 0.06),), "dark": (("m:minor", 0.03),),
    "low": (("v:male", 0.04),), "high": (("v:female", 0.04),), "deep": (("v:male", 0.03),),
    "male singer": (("v:male", 0.1),), "female singer": (("v:female", 0.12),), "man singing": (("v:male", 0.05),),
    "women": (("v:female", 0.04),), "men": (("v:male", 0.04),), "singer": (("v:any", 0.05),),
    "operatic": (("v:opera", 0.2),), "female opera": (("v:opera_female", 0.15),),
    "male opera": (("v:opera_male", 0.15),), "soprano": (("v:opera_female", 0.08),),
    "tenor": (("v:opera_male", 0.08),), "violins": (("i:strings", 0.08), ("i:violin", 0.05)),
    "fiddle": (("fiddle", 0.35),), "string": (("i:strings", 0.05),), "banjo": (("i:banjo", 0.5),),
    "sax": (("i:sax", 0.4),), "saxophone": (("i:sax", 0.3),), "oud": (("i:oud", 0.2),),
    "plucking": (("i:harp", 0.05), ("i:sitar", 0.05), ("i:harpsichord", 0.05)), "picking": (("picking", 0.06),),
    "strumming": (("strum", 0.08),), "percussion": (("d:hand", 0.25), ("d:acoustic", 0.03)),
    "drum": (("d:acoustic", 0.06),), "drum machine": (("d:electronic", 0.08),),
    "experimental": (("g:weird", 0.25),), "strange": (("g:weird", 0.2),), "noise": (("g:weird", 0.12),),
    "industrial": (("g:weird", 0.05), ("s:techno", 0.03)), "spacey": (("s:ambient", 0.15),),
    "eerie": (("s:ambient", 0.05), ("g:weird", 0.08)), "meditation": (("s:newage", 0.12), ("g:indian", 0.03)),
    "relaxing": (("s:newage", 0.1),), "repetitive": (("s:techno", 0.08),), "clasical": (("g:classical", 0.03),),
    "classicle": (("g:classical", 0.01),), "classical guitar": (("classical_guitar", 0.35),),
    "harpsicord": (("i:harpsichord", 0.04),), "bells": (("bells", 0.3),), "woodwind": (("i:flute", 0.05),),
    "happy": (("m:major", 0.01),), "sad": (("m:minor", 0.015),), "instrumental": (("v:none", 0.02),),
    "choirs": (("v:choir", 0.05),), "chorus": (("v:choir", 0.05),), "female singing": (("v:female", 0.04),),
    "male singing": (("v:male", 0.03),), "fast beat": (("fastbeat", 0.05),), "techno beat": (("s:techno", 0.04),),
    "synth pad": (("pad", 0.05),), "strings section": (("i:strings", 0.03),), "piano solo": (("lead:piano", 0.05),),
    "guitar solo": (("guitar_solo", 0.2),), "sitar drone": (("i:tanpura", 0.05),), "duet": (("v:duet", 0.3),),
}
_OTHER_FP = 0.0015  # false-positive rate of every other tag (also the only source of the ungrounded ones)


_DRUM_CLASS = {"rock": "acoustic", "metal": "acoustic", "pop": "acoustic", "country": "acoustic", "jazz": "acoustic",
               "techno": "electronic", "dance": "electronic", "breaks": "electronic", "glitch": "electronic",
               "tabla": "hand", "darbuka": "hand", "bodhran": "hand"}
_GUITARS = ("acoustic_guitar", "electric_guitar", "distorted_guitar")


def _attributes(c: dict) -> set[str]:
    """Latent attribute flags of a clip, the vocabulary of the tag emission rules."""
    a = {f"g:{c['genre']}", f"s:{c['style']}", f"t:{c['tempo']}", f"l:{c['loudness']}",
         "m:minor" if c["mode"] in _MINORISH else "m:major"}
    insts = {p for p, _ in c["parts"]}
    roles = {r for _, r in c["parts"]}
    a |= {f"i:{p}" for p in insts}
    if "synth" in insts:
        a.add("i:synth")
    if c["drums"] == "tabla":
        a.add("i:tabla")
    if c["lead"]:
        a.add(f"lead:{'flute' if c['lead'] == 'ney' else c['lead']}")
    if "ney" in insts:
        a.add("i:flute")
    if insts & set(_GUITARS):
        a.add("guitar")
        if c["lead"] in _GUITARS and (c["voice"] is None or c["solo"]):
            a.add("guitar_lead")
    if "distorted_guitar" in insts:
        a.add("dist")
    if any(r == "lead" and p in _GUITARS for p, r in c["parts"]):
        a |= {"guitar_solo", "guitar_lead"}
    if c["solo"]:
        a.add("solo")
    if c["drums"]:
        a.add(f"d:{_DRUM_CLASS[c['drums']]}")
        if c["tempo"] == "fast":
            a.add("fastbeat")
    else:
        a.add("nodrums")
    v = c["voice"]
    if v:
        a.add("v:any")
        if v in ("male", "growl", "opera_male", "chant", "duet"):
            a.add("v:male")
        if v in ("female", "opera_female", "duet"):
            a.add("v:female")
        if v.startswith("opera"):
            a |= {"v:opera", f"v:{v}"}
        if v in ("choir", "chant", "duet"):
            a.add(f"v:{v}")
    else:
        a.add("v:none")
    if "piano" not in insts:
        a.add("nopiano")
    if not insts & set(_GUITARS):
        a.add("noguitar")
    if "strum" in roles or "boomchick" in roles:
        a.add("strum")
    if "pick" in roles:
        a.add("picking")
    if "pad" in roles:
        a.add("pad")
    if c["lead"] == "acoustic_guitar" and c["genre"] == "classical":
        a.add("classical_guitar")
    if "violin" in insts and c["genre"] in ("country", "folk"):
        a.add("fiddle")
    if any(r == "bells" for _, r in c["parts"]):
        a.add("bells")
    if c["loudness"] == "quiet" or insts & {"harp", "flute"} or c["style"] == "newage":
        a.add("soft_timbre")
    return a


def _emit_tags(c: dict, rng: np.random.Generator) -> tuple[str, ...]:
    """Draw the noisy tags of a clip from its latent (noisy-OR with a per-clip attention factor)."""
    attrs = _attributes(c)
    attention = float(np.clip(rng.gamma(1.6, 1 / 1.6), 0.05, 2.5))
    out = set()
    draws = rng.random(len(COLUMNS))
    for j, tag in enumerate(COLUMNS):
        if tag in _RULES:
            rules, fp = _RULES[tag]
        else:
            rules, fp = _OTHER_RULES.get(tag, ()), _OTHER_FP
        q = 1.0 - fp
        for attr, p in rules:
            if attr in attrs:
                q *= 1.0 - min(0.97, attention * p)
        if draws[j] < 1.0 - q:
            out.add(tag)
    return tuple(t for t in COLUMNS if t in out)


def _force_tag(c: dict, rng: np.random.Generator) -> tuple[str, ...]:
    """The single most likely of the 50 tags of a clip (used so that no folder loses all its clips)."""
    attrs = _attributes(c)
    best, best_p = TAGS[0], -1.0
    for tag in TAGS:
        rules, _ = _RULES[tag]
        p = max((pr for attr, pr in rules if attr in attrs), default=0.0)
        if p > best_p:
            best, best_p = tag, p
    return (best,)
