"""The one video-id function: properties (hypothesis) and the hostile names issue 10 lists."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fastsam2.video_ids import MAX_LEN, all_unique, assign_ids, is_safe_id, safe_id

HOSTILE = ["../../x", "..\\x", "/abs/p", "a/b", "b", ".hidden", "x" * 300, "dup", "dup", "dup-1",
           "Case", "case", "vidéo", "", "..", "-rf", "_private", "a\x00b", "CON.", "视频"]

names = st.text(min_size=0, max_size=400)


def _check_one(vid: str) -> None:
    assert "/" not in vid and "\\" not in vid and "\x00" not in vid
    assert ".." not in vid
    assert not vid.startswith((".", "_", "-"))
    assert 0 < len(vid) <= MAX_LEN
    assert vid.isascii() and is_safe_id(vid)


@given(names)
@settings(max_examples=300, deadline=None)
def test_safe_id_is_always_a_plain_bounded_name(name):
    vid = safe_id(name)
    _check_one(vid)
    assert safe_id(name) == vid  # deterministic


@given(st.lists(names, min_size=1, max_size=25), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_distinct_inputs_get_distinct_ids_whatever_the_order(name_list, rnd):
    inputs = {f"uri://{i}": n for i, n in enumerate(name_list)}
    ids = assign_ids(inputs)
    assert set(ids) == set(inputs)
    assert all_unique(ids.values())  # case-insensitively distinct
    for vid in ids.values():
        _check_one(vid)
    keys = list(inputs)
    rnd.shuffle(keys)
    assert assign_ids({k: inputs[k] for k in keys}) == ids  # order does not matter


@given(st.lists(names, min_size=1, max_size=12), st.lists(names, min_size=0, max_size=12))
@settings(max_examples=100, deadline=None)
def test_recorded_ids_are_kept_and_never_reused(first, more):
    run1 = assign_ids({f"u{i}": n for i, n in enumerate(first)})
    extra = {f"v{i}": n for i, n in enumerate(more)}
    run2 = assign_ids({**{f"u{i}": n for i, n in enumerate(first)}, **extra}, taken=run1)
    assert {k: run2[k] for k in run1} == run1  # same id on every run once recorded
    assert all_unique(run2.values())


def test_hostile_names_from_the_issue():
    inputs = {f"s3://b/{i}.mp4": n for i, n in enumerate(HOSTILE)}
    ids = assign_ids(inputs)
    assert all_unique(ids.values())
    for vid in ids.values():
        _check_one(vid)
    by_name = {}
    for k, n in inputs.items():
        by_name.setdefault(n, []).append(ids[k])
    assert by_name["dup-1"] == ["dup-1"]  # the user's own dup-1 is untouched ...
    assert all(v.startswith("dup-") and v != "dup-1" for v in by_name["dup"])  # ... the two dups hashed
    assert by_name["Case"][0].lower() != by_name["case"][0].lower()
    assert len(by_name["x" * 300][0]) == MAX_LEN
    assert safe_id("vidéo") == "video" and safe_id("Ångström café") == "Angstrom_cafe"
    shuffled = list(inputs.items())
    random.Random(1).shuffle(shuffled)
    assert assign_ids(dict(shuffled)) == ids
