"""Caption -> short object phrase ("brown fluffy dog"), by a deterministic rule.

The paper refined captions with a small BERT-style tagger; a noun-phrase rule
does the same job for LLaVA's captions, which follow a few patterns ("The image
shows a brown fluffy dog sitting on the grass."): drop the lead-in ("the image
shows", "a close-up of"), skip determiners, then take words until the first
word that cannot be inside an English noun phrase's pre-modifiers (preposition,
verb, relative pronoun, punctuation, or a participle after the head noun). The
head noun ends the phrase, so a phrase longer than ``max_words`` keeps its last
words. No model, no randomness, nothing to download: the same caption always
gives the same phrase, and an unusable caption gives ``"object"``.
"""

from __future__ import annotations

import re

MAX_WORDS = 6
FALLBACK = "object"
#: Longer "words" are not English (run-ons from a broken or random model).
MAX_WORD_LEN = 24

_DETERMINERS = frozenset(
    "a an the this that these those some one two three four five several many few "
    "its his her their our my your another any each every single lone".split()
)
_PREPOSITIONS = frozenset(
    "on in at of with without near by under over above below behind beside besides between "
    "next to from into onto toward towards through across along around against during for "
    "as like inside outside within upon up down off out beneath underneath amid among via "
    "atop than per about after before".split()
)
_VERBS = frozenset(
    "is are was were be been being am has have had does do did can could will would should "
    "may might must appears appear seems seem looks look stands stand sits sit lies lie "
    "holds hold wears wear rides ride shows show moves move flies fly runs run jumps jump "
    "goes go".split()
)
_CLAUSE = frozenset(
    "that which who whom whose where when what why how while but or so yet because although "
    "though if then and".split()
)
#: Past participles that follow a head noun ("a car parked on ...").
_PARTICIPLES = frozenset(
    "parked covered dressed filled made seen shown painted located positioned placed "
    "surrounded attached captured taken pictured displayed set lit topped decorated".split()
)
#: "a group of people" -> the phrase is about what follows "of".
_COLLECTIVES = frozenset(
    "pair group couple herd flock bunch set piece kind type sort lot number crowd team "
    "pack school bundle stack pile row".split()
)
_COLOURS = frozenset(
    "black white red green blue yellow orange purple pink brown grey gray silver gold "
    "dark light beige tan".split()
)
_STOP = _PREPOSITIONS | _VERBS | _CLAUSE

# Lead-ins LLaVA puts before the object; removed repeatedly from the start.
_LEAD_INS = [
    r"(in|on) (this|the) (image|picture|photo|photograph|frame|scene|crop),?",
    r"(the|this) (main |central )?(object|subject|thing|item)( (in|inside|within) (this|the) "
    r"(image|picture|photo|crop|box|red box|region))? (is|appears to be|seems to be|looks like)",
    r"(the|this) (image|picture|photo|photograph|scene|crop|frame|region) "
    r"(shows|depicts|features|contains|displays|captures|presents|is of|is showing)",
    r"(there (is|are)|it is|it's|this is|that is|that's|here is|we see|i see|you can see|"
    r"i can see|it appears to be|it looks like)",
    r"(a |an |the )?(close-up|closeup|close up|side view|front view|rear view|top view|aerial view|"
    r"view|picture|photo|photograph|image|shot|snapshot) of",
]
_LEAD_IN_RE = re.compile(r"^\s*(?:" + "|".join(_LEAD_INS) + r")\s*", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*|[,;:()\"]")


def _first_clause(text: str) -> str:
    """Text up to the first sentence end (a period not inside a number)."""
    m = re.search(r"[.!?\n](?!\d)", text)
    return text[: m.start()] if m else text


def _strip_lead_ins(text: str) -> str:
    prev = None
    while prev != text:
        prev, text = text, _LEAD_IN_RE.sub("", text, count=1)
    return text


def _is_word(tok: str) -> bool:
    return tok[0].isalnum() and len(tok) <= MAX_WORD_LEN


def _noun_phrase(tokens: list[str]) -> list[str]:
    """The first noun phrase's words (without determiners), by the rule in the module doc."""
    phrase: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if not phrase and tok in _DETERMINERS:
            i += 1
            continue
        if tok == "of" and phrase and phrase[-1] in _COLLECTIVES:
            phrase = []  # "a pair of shoes" -> look at "shoes"
            i += 1
            continue
        if tok == "and" and phrase and phrase[-1] in _COLOURS and nxt and _is_word(nxt) and nxt not in _STOP:
            phrase.append(tok)  # "black and white cat"
            i += 1
            continue
        if tok == "," and phrase and nxt and _is_word(nxt) and nxt not in _STOP | _DETERMINERS \
                and nxt not in _PARTICIPLES and not nxt.endswith("ing"):
            i += 1  # "a large, white boat": the comma separates adjectives
            continue
        if not _is_word(tok) or tok in _STOP:
            break
        if phrase and (tok.endswith("ing") or tok in _PARTICIPLES):
            break  # "a dog running", "a car parked": the head noun came already
        if phrase and len(tok) > 4 and tok.endswith("ed") and (not nxt or not _is_word(nxt) or nxt in _STOP):
            break  # "a boat docked at", but "a black striped cat" goes on
        if tok in _DETERMINERS:
            break
        phrase.append(tok)
        i += 1
    while phrase and phrase[-1] in ("and",):
        phrase.pop()
    return phrase


def refine_caption(caption: str | None, max_words: int = MAX_WORDS) -> str:
    """A short object phrase (at most ``max_words`` words, lower case) from a caption.

    >>> refine_caption("The image shows a brown fluffy dog sitting on the grass.")
    'brown fluffy dog'
    >>> refine_caption("")
    'object'
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    text = _strip_lead_ins(_first_clause((caption or "").lower().strip()))
    tokens = _TOKEN_RE.findall(text)
    if tokens and tokens[0] in _PREPOSITIONS and "," in tokens:
        tokens = tokens[tokens.index(",") + 1 :]  # "On the grass, a dog" -> "a dog"
    phrase = _noun_phrase(tokens)
    if not phrase:
        # No phrase at the start (e.g. "On the grass, a dog"): the first run of
        # content words anywhere, else the fallback.
        for start in range(1, len(tokens)):
            phrase = _noun_phrase(tokens[start:])
            if phrase:
                break
    if not phrase:
        return FALLBACK
    return " ".join(phrase[-max_words:])
