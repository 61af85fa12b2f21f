"""The served (ray.data.llm) caption path on CPU: everything but the GPU engine is real.

- The chat template: the rows our preprocess makes go through the message form vLLM's
  parser gives them (a stand-in: vLLM is not installed on CPU machines, see
  ``vllm_parsed``) and then through Ray's own ``ChatTemplateUDF`` with the tiny LLaVA's
  processor, which carries the llava-1.5 checkpoints' chat template verbatim.
- The pipeline wiring: ``served_caption_stage`` on a real local Ray dataset, with only
  the vLLM engine replaced (``_EngineStandIn``): every object's JPEG in, one caption and
  phrase per object out (and into ``objects/`` rows), errors per video, no video lost.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
from fastsam2.prompts.caption import QUESTIONS, llava_prompt, region_jpeg
from fastsam2.prompts.caption_vllm import (
    caption_request_row,
    processor_config_kwargs,
    served_caption_stage,
    served_processor_kwargs,
)


def vllm_parsed(messages: list[dict], content_format: str) -> list[dict]:
    """STAND-IN for vLLM's ``parse_chat_messages`` (vLLM cannot be installed without CUDA).

    What it does for a one-image user turn, per vLLM's ``chat_utils``: with ``"openai"``
    the parts stay a list, ``image_url`` parts becoming ``{"type": "image"}``; with
    ``"string"`` the text parts are joined into one string (the image placeholder is
    left for the model's own prompt processing).
    """
    out = []
    for msg in messages:
        parts = msg["content"]
        if content_format == "openai":
            content = [{"type": "image"} if p["type"] == "image_url" else {"type": "text", "text": p["text"]}
                       for p in parts]
        else:
            content = "\n".join(p["text"] for p in parts if p["type"] == "text")
        out.append({"role": msg["role"], "content": content})
    return out


def _render_with_rays_chat_template_stage(model_dir: str, conversation: list[dict]) -> str:
    from ray.llm._internal.batch.stages.chat_template_stage import ChatTemplateUDF

    udf = ChatTemplateUDF(data_column="__data", expected_input_keys=["messages"], model=model_dir)
    idx = udf.IDX_IN_BATCH_COLUMN

    async def run():
        return [row async for row in udf.udf([{"messages": conversation, idx: 0}])]

    (row,) = asyncio.run(run())
    return row["prompt"]


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from fastsam2.models.llava import save_tiny_llava

    return str(save_tiny_llava(tmp_path_factory.mktemp("tiny-llava")))


def test_the_processor_keeps_content_parts_for_the_template():
    from ray.data.llm import vLLMEngineProcessorConfig
    from ray.llm._internal.batch.stages.configs import PrepareMultimodalStageConfig, resolve_stage_config

    kwargs = processor_config_kwargs("llava-hf/llava-1.5-7b-hf")
    config = vLLMEngineProcessorConfig(**kwargs)
    stage = resolve_stage_config(config.prepare_multimodal_stage, PrepareMultimodalStageConfig, {})
    assert stage.enabled and stage.chat_template_content_format == "openai"


def test_llava_template_renders_the_image_placeholder_and_question(tiny_llava_dir):
    row = caption_request_row({"video_id": "v", "region_jpeg": region_jpeg(np.zeros((20, 30, 3), np.uint8))})
    prompt = _render_with_rays_chat_template_stage(tiny_llava_dir, vllm_parsed(row["messages"], "openai"))
    assert "<image>" in prompt and QUESTIONS["crop"] in prompt
    assert prompt.startswith("USER: <image>\n") and prompt.endswith("ASSISTANT:")
    assert prompt.split() == llava_prompt(QUESTIONS["crop"]).split()  # what the other backends send

    # Ray's default content format flattens the parts: the template then drops everything.
    flat = _render_with_rays_chat_template_stage(tiny_llava_dir, vllm_parsed(row["messages"], "string"))
    assert "<image>" not in flat and QUESTIONS["crop"] not in flat


def test_engine_settings_and_pool_come_from_the_job_config():
    cfg = JobConfig(inputs=["x"], output="o", prompts={
        "caption_backend": "vllm", "caption_model": "some/llava",
        "caption_engine": {"gpu_memory_utilization": 0.8, "dtype": "half", "max_model_len": 2048},
        "caption_accelerator_type": "L4"},
        resources={"caption": {"num_gpus": 1, "min_actors": 1, "max_actors": 3, "batch_size": 8}})
    kw = served_processor_kwargs(cfg)
    assert kw["model_source"] == "some/llava" and kw["batch_size"] == 8 and kw["concurrency"] == (1, 3)
    assert kw["accelerator_type"] == "L4" and kw["should_continue_on_error"] is True
    eng = kw["engine_kwargs"]
    assert eng["gpu_memory_utilization"] == 0.8 and eng["dtype"] == "half" and eng["max_model_len"] == 2048
    assert eng["limit_mm_per_prompt"] == {"image": 1}


class _EngineStandIn:
    """STAND-IN for the vLLM engine stages of ``build_processor`` (no GPU here).

    Applies our preprocess and postprocess as Ray's processor does, and "generates"
    a caption naming the grey level of the image it was sent (a word and the number);
    an image whose data URL decodes to the poison colour fails as an engine error would
    (such rows skip the postprocess, as in Ray).
    """

    WORDS = ("black", "dark", "dim", "light", "pale", "white")

    def __init__(self, kwargs, pre, post):
        self.kwargs, self.pre, self.post = kwargs, pre, post

    def __call__(self, ds):
        pre, post, words = self.pre, self.post, self.WORDS

        def engine(row):
            import base64

            from fastsam2.prompts.caption import jpeg_to_array

            req = pre(row)
            url = req["messages"][0]["content"][0]["image_url"]["url"]
            level = int(jpeg_to_array(base64.b64decode(url.split(",", 1)[1])).mean())
            if level > 240:
                return {**req, "prompt": "...", "request_id": -1, "__inference_error__": "CUDA error: illegal memory access"}
            text = (f" A {words[level // 50]} grey object of level {level // 10 * 10}. "
                    if req["sampling_params"]["max_tokens"] > 1 else "x")
            return {**post({**req, "generated_text": text}), "__inference_error__": ""}

        return ds.map(engine)


def _grey(level: int) -> bytes:
    return region_jpeg(np.full((32, 32, 3), level, np.uint8))


def _auto_task(vid: str, num_objects: int) -> VideoTask:
    objects = [ObjectPrompt(obj_id=k + 1, box=[10.0 * k, 0.0, 10.0 * k + 8, 8.0], point=[10.0 * k + 4, 4.0],
                            objectness=0.9, source="auto") for k in range(num_objects)]
    return VideoTask(video_id=vid, uri="unused://never-read", prompt_source="auto", objects=objects)


def test_served_stage_captions_every_object_from_its_own_jpeg(ray_local):
    import ray

    from fastsam2.labeling import object_row
    from fastsam2.prompts.refine import refine_caption
    from fastsam2.schema import table_from_rows

    cfg = JobConfig(inputs=["x"], output="o", prompts={"caption_backend": "vllm", "caption_model": "m"},
                    resources={"caption": {"batch_size": 2}})
    tasks = [_auto_task("v0", 3), _auto_task("v1", 1), _auto_task("v2", 1), _auto_task("v3", 2), _auto_task("v4", 1)]
    tasks[2].text = "a user phrase"  # needs no caption: passes through
    tasks[4].error = {"stage": "propose", "message": "no proposal"}  # failed earlier: passes through
    crops = [[_grey(60), _grey(160), _grey(210)], [_grey(200)], None, [_grey(100), _grey(255)], None]
    rows = [{"video_id": t.video_id, "task": t.model_dump_json(), "region_jpegs": c} for t, c in zip(tasks, crops)]
    ds = served_caption_stage(ray.data.from_items(rows, override_num_blocks=3), cfg, build=_EngineStandIn)
    out = {r["video_id"]: VideoTask.model_validate_json(r["task"]) for r in ds.take_all()}
    assert sorted(out) == ["v0", "v1", "v2", "v3", "v4"], "one row per video, none lost"

    v0 = out["v0"]
    assert [o.caption for o in v0.objects] == ["A dark grey object of level 60.", "A light grey object of level 160.",
                                               "A pale grey object of level 210."], "each object its own crop, in order"
    assert [o.text for o in v0.objects] == [refine_caption(o.caption) for o in v0.objects]
    assert [o.text for o in v0.objects] == ["dark grey object", "light grey object", "pale grey object"]
    assert (v0.caption, v0.text) == (v0.objects[0].caption, v0.objects[0].text)
    assert (v0.caption_backend, v0.caption_model) == ("vllm", "m")
    assert out["v1"].objects[0].caption == "A pale grey object of level 200." and out["v1"].error is None
    assert out["v2"].caption is None and out["v2"].text == "a user phrase"
    assert out["v4"].error == {"stage": "propose", "message": "no proposal"} and out["v4"].caption is None
    assert out["v3"].error["stage"] == "caption" and "illegal memory access" in out["v3"].error["message"]

    # The objects/ rows labeling builds from these tasks: three captions and phrases for v0's three objects.
    objects = table_from_rows("objects", [object_row(out["v0"], o, cfg, None) for o in out["v0"].objects])
    got = objects.select(["obj_id", "caption", "phrase", "caption_backend", "caption_model"]).to_pylist()
    assert [(r["obj_id"], r["phrase"]) for r in got] == [(1, "dark grey object"), (2, "light grey object"),
                                                          (3, "pale grey object")]
    assert all(r["caption"] and r["caption_backend"] == "vllm" and r["caption_model"] == "m" for r in got)
