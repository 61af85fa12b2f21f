"""Video ids: the one place that turns a name (file, folder, S3 key, manifest cell) into an id.

An id names the per-video Parquet files (``<root>/<table>/<id>.parquet``), so it is
untrusted text turned into a path component. The rules, applied to every source:

- Safe characters only: ``A-Z a-z 0-9 _ - .``; everything else becomes ``_``.
  Non-ASCII letters are transliterated first (``vidéo`` -> ``video``), so names stay readable.
- No separators, no ``..``, no trailing ``.``, and it starts with a letter or digit
  (listings skip files starting with ``.`` or ``_``; a leading ``-`` reads as an option).
- At most :data:`MAX_LEN` characters; a longer name keeps its start plus a short
  stable hash of the whole original, so two long names never meet.
- Unique across the input set, case-insensitively (two ids differing only in case
  would share a file on macOS/Windows filesystems): names that collide all get
  ``-<hash of their uri>``. A hash, not a counter, so the id does not depend on the
  order of the inputs and cannot collide with a user's own ``dup-1``.
- Stable across runs: an input already recorded under the output root (in
  ``videos/`` or ``errors/``) keeps the id it was recorded with, and new inputs
  avoid the ids recorded there for other inputs.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from typing import Iterable, Mapping

#: Longest id: room for ``.<id>.parquet.<32 hex>.tmp`` well inside a 255-byte file name.
MAX_LEN = 96
HASH_LEN = 8
SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def short_hash(text: str, length: int = HASH_LEN) -> str:
    """A short stable hex digest of ``text`` (same on every machine and run)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _transliterate(name: str) -> str:
    """``vidéo`` -> ``video``: NFKD splits accents off letters; non-ASCII leftovers are dropped later."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def safe_id(name: str, suffix: str | None = None) -> str:
    """``name`` as a filename-safe id of at most :data:`MAX_LEN` characters.

    ``suffix`` (already safe, e.g. a hash) is appended after a ``-`` and always kept
    whole; the name part is shortened to fit, with a hash of the original when cut.
    """
    text = _UNSAFE.sub("_", _transliterate(name))
    text = re.sub(r"\.{2,}", ".", text).lstrip("._-").rstrip(".")
    if not text.strip("_"):
        text = "video"
    room = MAX_LEN - (len(suffix) + 1 if suffix else 0)
    if len(text) > room:
        text = f"{text[: room - HASH_LEN - 1].rstrip('.')}-{short_hash(name)}"
    return f"{text}-{suffix}" if suffix else text


def is_safe_id(video_id: str) -> bool:
    """True for ids :func:`safe_id` can produce (checked again before every write)."""
    return len(video_id) <= MAX_LEN and bool(SAFE_RE.match(video_id)) and ".." not in video_id \
        and not video_id.endswith(".")


def assign_ids(names: Mapping[str, str], taken: Mapping[str, str] | None = None) -> dict[str, str]:
    """Unique ids for inputs: ``{key: name}`` -> ``{key: id}``.

    ``key`` identifies an input (its URI); ``name`` is what the user calls it.
    ``taken`` maps keys already recorded under the output root to their ids: those
    keys keep their id, and no other key gets one of those ids (case-insensitively).
    The result does not depend on the order of ``names``.
    """
    taken = dict(taken or {})
    out = {k: taken[k] for k in names if k in taken}
    reserved = {v.lower(): k for k, v in taken.items()}
    groups: dict[str, list[str]] = defaultdict(list)
    for key, name in names.items():
        if key not in out:
            groups[safe_id(name).lower()].append(key)
    for low, keys in groups.items():
        clash = len(keys) > 1 or (low in reserved and reserved[low] not in keys)
        for key in keys:
            out[key] = safe_id(names[key], short_hash(key) if clash else None)
    _widen_collisions(out, names, set(taken))
    return out


def _widen_collisions(out: dict[str, str], names: Mapping[str, str], pinned: set[str]) -> None:
    """Astronomically rare: a hashed id equals another id. Lengthen the hashes until none do."""
    for length in (16, 32, 64):
        seen: dict[str, list[str]] = defaultdict(list)
        for key, vid in out.items():
            seen[vid.lower()].append(key)
        clashing = [k for ks in seen.values() if len(ks) > 1 for k in ks if k not in pinned]
        if not clashing:
            return
        for key in clashing:
            out[key] = safe_id(names[key], short_hash(key, length))
    raise ValueError("could not make video ids unique")  # pragma: no cover - needs a SHA-256 collision


def all_unique(ids: Iterable[str]) -> bool:
    ids = list(ids)
    return len({i.lower() for i in ids}) == len(ids)
