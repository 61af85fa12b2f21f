"""The transformers backend with a tiny random LLaVA built in code (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastsam2.models.llava import IMAGE_TOKEN, TINY_LLAVA_NAME, build_tiny_llava, build_tiny_tokenizer, save_tiny_llava
from fastsam2.prompts.caption import QUESTIONS, Captioner, clean_caption, llava_prompt
from fastsam2.prompts.caption_transformers import TransformersCaptioner
from fastsam2.prompts.captioners import make_captioner


@pytest.fixture(scope="module")
def captioner() -> TransformersCaptioner:
    return make_captioner("transformers", random_weights=True, device="cpu", max_new_tokens=8)


def _frames(n=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) for _ in range(n)]


def test_tiny_tokenizer_is_deterministic_and_knows_the_image_token():
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    ids = a(llava_prompt(QUESTIONS["crop"]))["input_ids"]
    assert ids.count(a.convert_tokens_to_ids(IMAGE_TOKEN)) == 1
    assert a.unk_token_id not in ids, "the prompt (newline included) tokenizes without <unk>"


def test_processor_expands_one_image_into_the_vision_tokens():
    model, processor = build_tiny_llava()
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    inputs = processor(images=[Image.new("RGB", (70, 40))], text=[llava_prompt("hi")], return_tensors="pt")
    # (56 / 14)^2 patches + CLS - CLS ("default" strategy drops it) = 16.
    assert int((inputs["input_ids"] == image_id).sum()) == 16
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)


def test_chat_template_renders_the_prompt_every_backend_sends():
    _, processor = build_tiny_llava()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS["crop"]}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == llava_prompt(QUESTIONS["crop"])


def test_captions_one_per_region_and_says_weights_are_random(captioner):
    assert isinstance(captioner, Captioner)
    assert (captioner.backend, captioner.model, captioner.random_weights) == ("transformers", TINY_LLAVA_NAME, True)
    frames = _frames(3)
    boxes = [(10, 10, 80, 60), None, (100, 20, 150, 85)]
    caps = captioner.caption(frames, boxes)
    assert len(caps) == 3 and all(isinstance(c, str) and c for c in caps)
    assert "<image>" not in " ".join(caps)
    # Greedy: the same region gives the same caption alone or in a batch.
    assert captioner.caption(frames[:1], boxes[:1]) == caps[:1]
    assert captioner.caption([], []) == []
    with pytest.raises(ValueError, match="boxes"):
        captioner.caption(frames, boxes[:1])


def test_random_weights_replace_any_backend(caplog):
    cap = make_captioner("vllm", random_weights=True, device="cpu", max_new_tokens=2)
    assert cap.backend == "transformers" and cap.random_weights
    assert "replaced by transformers" in caplog.text
    with pytest.raises(ValueError, match="unknown caption backend"):
        make_captioner("llama.cpp")
    with pytest.raises(ValueError, match="--caption-endpoint"):
        make_captioner("openai", endpoint=None)


def test_tiny_llava_saves_and_reloads_offline(tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = save_tiny_llava(tmp_path / "tiny")
    model = LlavaForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert processor.num_additional_image_tokens == 1
    assert model.config.vision_config.image_size == 56


def test_clean_caption():
    assert clean_caption("ASSISTANT:  A dog\n on  grass ") == "A dog on grass"
    assert clean_caption("") == ""
