"""The vllm backend's request shapes, on CPU without vLLM (a fake module records calls)."""

from __future__ import annotations

import base64
import io
import sys
import types

import numpy as np
import pytest
from PIL import Image

from fastsam2.prompts.caption import QUESTIONS, llava_prompt
from fastsam2.prompts.captioners import make_captioner
from fastsam2.prompts.caption_vllm import (
    DEFAULT_ENGINE_KWARGS,
    VLLMCaptioner,
    caption_from_row,
    caption_request_row,
    processor_config_kwargs,
    region_jpeg,
    vllm_requests,
)
from helpers import noise_frame


class _FakeLLM:
    """Stands in for ``vllm.LLM``: records what it was given, answers canned text."""

    instances: list["_FakeLLM"] = []

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        _FakeLLM.instances.append(self)

    def generate(self, requests, sampling, use_tqdm=True):
        self.calls.append((requests, sampling))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=f" A brown dog number {i}. ")]) for i in range(len(requests))]


class _FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = _FakeLLM, _FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.instances.clear()
    return module


def test_vllm_requests_carry_the_shared_prompt_and_a_pil_image():
    regions = [np.zeros((32, 32, 3), np.uint8), np.ones((48, 48, 3), np.uint8)]
    reqs = vllm_requests(regions, QUESTIONS["crop"])
    assert [sorted(r) for r in reqs] == [["multi_modal_data", "prompt"]] * 2
    assert reqs[0]["prompt"] == llava_prompt(QUESTIONS["crop"]) == "USER: <image>\n" + QUESTIONS["crop"] + " ASSISTANT:"
    assert isinstance(reqs[1]["multi_modal_data"]["image"], Image.Image)
    assert reqs[1]["multi_modal_data"]["image"].size == (48, 48)


def test_vllm_captioner_sends_batched_greedy_requests(fake_vllm):
    cap = make_captioner("vllm", model="llava-hf/llava-1.5-7b-hf", engine_kwargs={"max_model_len": 2048})
    assert isinstance(cap, VLLMCaptioner) and cap.backend == "vllm" and not cap.random_weights
    caps = cap.caption([noise_frame(), noise_frame()], [(10, 10, 50, 40), (0, 0, 100, 60)])
    assert caps == ["A brown dog number 0.", "A brown dog number 1."]
    llm = _FakeLLM.instances[-1]
    assert llm.model == "llava-hf/llava-1.5-7b-hf"
    assert llm.kwargs == {**DEFAULT_ENGINE_KWARGS, "max_model_len": 2048}
    (requests, sampling), = llm.calls
    assert len(requests) == 2, "one generate call per batch"
    assert sampling.kwargs == {"temperature": 0.0, "max_tokens": 32}
    img = requests[0]["multi_modal_data"]["image"]
    assert img.size[0] == img.size[1], "square region crop"


def test_missing_vllm_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="--caption-backend transformers"):
        VLLMCaptioner()


def test_ray_data_llm_config_is_valid_without_vllm():
    from ray.data.llm import vLLMEngineProcessorConfig

    kwargs = processor_config_kwargs("llava-hf/llava-1.5-7b-hf", batch_size=8, concurrency=(1, 2))
    config = vLLMEngineProcessorConfig(**kwargs)
    assert config.model_source == "llava-hf/llava-1.5-7b-hf"
    assert config.batch_size == 8
    assert config.engine_kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert kwargs["prepare_multimodal_stage"] == {"enabled": True, "chat_template_content_format": "openai"}
    assert kwargs["tokenize_stage"] == {"enabled": False}


def test_ray_rows_carry_openai_messages_and_come_back_as_captions():
    jpeg = region_jpeg(np.full((40, 40, 3), 200, np.uint8))
    row = {"video_id": "v1", "region_jpeg": jpeg}
    req = caption_request_row(row, max_new_tokens=12)
    assert "region_jpeg" not in req and req["video_id"] == "v1"
    assert req["sampling_params"] == {"temperature": 0.0, "max_tokens": 12}
    (msg,) = req["messages"]
    assert msg["role"] == "user"
    image_part, text_part = msg["content"]
    assert text_part == {"type": "text", "text": QUESTIONS["crop"]}
    assert image_part["type"] == "image_url"
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (40, 40)
    out = caption_from_row({**req, "generated_text": " A red kite. "})
    assert out == {"video_id": "v1", "caption": "A red kite."}
