"""Caption -> phrase: deterministic, at most six words, robust to odd captions."""

from __future__ import annotations

import pytest

from fastsam2.prompts.refine import FALLBACK, refine_caption

CASES = [
    ("The image shows a brown fluffy dog sitting on the grass.", "brown fluffy dog"),
    ("A close-up of a fluffy brown dog.", "fluffy brown dog"),
    ("There is a black and white cat on the sofa.", "black and white cat"),
    ("A man riding a motorcycle on a dirt track.", "man"),
    ("Two people surfing in the ocean", "people"),
    ("A large, white boat docked at the pier.", "large white boat"),
    ("A car parked on the street.", "car"),
    ("The main object in this image is a red sports car.", "red sports car"),
    ("The object inside the red box is a silver car.", "silver car"),
    ("In this image, a kite surfer rides a wave.", "kite surfer"),
    ("a pair of red shoes", "red shoes"),
    ("It's a small grey bird perched on a branch.", "small grey bird"),
    ("On the grass, a dog.", "dog"),
    ("A black striped cat.", "black striped cat"),
    ("A running dog.", "running dog"),
    ("A dog and a cat playing.", "dog"),
    ("A 3.5 meter yacht.", "3.5 meter yacht"),
    ("dog", "dog"),
    ("A RED CAR", "red car"),
]


@pytest.mark.parametrize(("caption", "phrase"), CASES)
def test_phrases(caption, phrase):
    assert refine_caption(caption) == phrase


def test_long_phrases_keep_the_head_noun():
    phrase = refine_caption("A very big old rusty red pickup truck with a dog")
    assert phrase.split()[-1] == "truck" and len(phrase.split()) == 6
    assert refine_caption("A very big old rusty red pickup truck", max_words=2) == "pickup truck"


@pytest.mark.parametrize("caption", ["", None, "   ", "...", "the the the", "is on with", "x" * 60])
def test_unusable_captions_give_the_fallback(caption):
    assert refine_caption(caption) == FALLBACK


def test_noise_captions_still_give_a_short_phrase():
    noise = "thonononon keRJ USER&larly/vingonkeR_j small sand ER object boat grass sky road"
    phrase = refine_caption(noise)
    assert phrase and len(phrase.split()) <= 6
    assert refine_caption(noise) == phrase
