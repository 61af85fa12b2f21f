"""The ``vllm`` caption backend: ``vllm.LLM`` in an actor, or Ray Data LLM stages.

vLLM is an optional, GPU-only extra: nothing here imports it at module level,
and the request shapes (:func:`vllm_requests`, :func:`caption_request_row`,
:func:`processor_config_kwargs`) are plain data, unit-tested on CPU without it.
``benchmarks/caption_gpu_smoke.py`` runs both paths for real on a GPU.

Two ways to run it on a cluster:

- :class:`VLLMCaptioner` holds one ``vllm.LLM`` engine; the pipeline puts it in a
  Ray actor (``map_batches(..., compute=ActorPoolStrategy(...), num_gpus=1)``)
  and calls :meth:`~fastsam2.prompts.caption.RegionCaptioner.caption` per batch.
- :func:`build_ray_caption_processor` returns a ``ray.data.llm`` processor
  (vLLM engines as Ray actors, multimodal preparation and chat templating as CPU
  stages) for a dataset whose rows carry a JPEG of the region.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from fastsam2.models.llava import DEFAULT_LLAVA
from fastsam2.stage_specs import CAPTION
from fastsam2.prompts.caption import (
    DEFAULT_MAX_NEW_TOKENS,
    CaptionError,
    QUESTIONS,
    RegionCaptioner,
    chat_messages,
    clean_caption,
    jpeg_data_url,
    llava_prompt,
    region_jpeg,
    sampling_params,
)

log = logging.getLogger(__name__)

#: Engine settings that fit LLaVA-1.5 (4k context, one image per prompt).
DEFAULT_ENGINE_KWARGS: dict[str, Any] = {
    "max_model_len": 4096,
    "limit_mm_per_prompt": {"image": 1},
}

_INSTALL_HINT = (
    "the vllm caption backend needs vLLM (pip install 'fastsam2-batch[vllm]', CUDA GPUs only); "
    "use --caption-backend transformers, or openai with --caption-endpoint"
)


def merged_engine_kwargs(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_ENGINE_KWARGS` updated with ``overrides``."""
    return {**DEFAULT_ENGINE_KWARGS, **(overrides or {})}


def vllm_requests(regions: Sequence[np.ndarray], question: str) -> list[dict]:
    """``vllm.LLM.generate`` inputs: the LLaVA prompt text plus the region as a PIL image."""
    from PIL import Image

    prompt = llava_prompt(question)
    return [{"prompt": prompt, "multi_modal_data": {"image": Image.fromarray(r)}} for r in regions]


class VLLMCaptioner(RegionCaptioner):
    """One ``vllm.LLM`` engine in this process (put the object in a Ray actor with a GPU)."""

    backend = "vllm"

    def __init__(
        self,
        model: str = DEFAULT_LLAVA,
        *,
        engine_kwargs: dict[str, Any] | None = None,
        region_mode: str = "crop",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> None:
        super().__init__(model, region_mode=region_mode, max_new_tokens=max_new_tokens)
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.llm = LLM(model=model, **merged_engine_kwargs(engine_kwargs))
        self.sampling = SamplingParams(**sampling_params(max_new_tokens))

    def generate(self, regions: list[np.ndarray], question: str) -> list[str]:
        outputs = self.llm.generate(vllm_requests(regions, question), self.sampling, use_tqdm=False)
        return [o.outputs[0].text if o.outputs else "" for o in outputs]


# ---------------------------------------------------------------- Ray Data LLM


def processor_config_kwargs(
    model: str = DEFAULT_LLAVA,
    *,
    batch_size: int = 16,
    concurrency: int | tuple[int, int] = 1,
    engine_overrides: dict[str, Any] | None = None,
    accelerator_type: str | None = None,
) -> dict[str, Any]:
    """Arguments of ``ray.data.llm.vLLMEngineProcessorConfig`` for region captions.

    The multimodal stage turns the ``image_url`` parts into vLLM multimodal data
    and the chat template stage renders LLaVA's prompt; the tokenize stage is
    off so vLLM sees the text prompt with its ``<image>`` placeholder and
    expands it itself.
    """
    kwargs: dict[str, Any] = {
        "model_source": model,
        "engine_kwargs": merged_engine_kwargs(engine_overrides),
        "batch_size": batch_size,
        "concurrency": concurrency,
        # "openai" keeps each message's content as a list of parts ({"type": "image"},
        # {"type": "text"}), which LLaVA-1.5's chat template iterates over; Ray's default
        # ("string") flattens it and the template then renders no <image> at all.
        "prepare_multimodal_stage": {"enabled": True, "chat_template_content_format": "openai"},
        "chat_template_stage": {"enabled": True},
        "tokenize_stage": {"enabled": False},
        "detokenize_stage": {"enabled": False},
    }
    if accelerator_type:
        kwargs["accelerator_type"] = accelerator_type
    return kwargs


def caption_request_row(
    row: dict[str, Any],
    *,
    image_column: str = "region_jpeg",
    question: str = QUESTIONS["crop"],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """Ray Data LLM preprocess: a row with a region JPEG (bytes) -> chat messages + sampling.

    The JPEG travels as a data URL (Arrow-friendly, and what vLLM's chat parser
    accepts); the other columns are kept so the postprocess can pass them on.
    """
    url = jpeg_data_url(row[image_column])
    out = {k: v for k, v in row.items() if k != image_column}
    out["messages"] = chat_messages(url, question)
    out["sampling_params"] = sampling_params(max_new_tokens)
    return out


def caption_from_row(
    row: dict[str, Any], *, keep: Sequence[str] = ("video_id",), output_column: str = "caption"
) -> dict[str, Any]:
    """Ray Data LLM postprocess: keep ``keep`` columns plus the cleaned caption."""
    out = {k: row[k] for k in keep if k in row}
    out[output_column] = clean_caption(row.get("generated_text") or "")
    return out


def build_ray_caption_processor(
    model: str = DEFAULT_LLAVA,
    *,
    batch_size: int = 16,
    concurrency: int | tuple[int, int] = 1,
    engine_overrides: dict[str, Any] | None = None,
    accelerator_type: str | None = None,
    image_column: str = "region_jpeg",
    region_mode: str = "crop",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    keep: Sequence[str] = ("video_id",),
):
    """A ``ray.data.llm`` processor: rows with ``image_column`` in, ``keep`` + ``caption`` out."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        **processor_config_kwargs(
            model,
            batch_size=batch_size,
            concurrency=concurrency,
            engine_overrides=engine_overrides,
            accelerator_type=accelerator_type,
        )
    )
    return build_processor(
        config,
        preprocess=partial(
            caption_request_row,
            image_column=image_column,
            question=QUESTIONS[region_mode],
            max_new_tokens=max_new_tokens,
        ),
        postprocess=partial(caption_from_row, keep=tuple(keep)),
    )


# ---------------------------------------------------------------- the pipeline's served stage
#
# A ray.data.llm processor sends one request per row and LLaVA takes one image per
# prompt, so the stage works on one row per (video, object): ``object_rows`` spreads
# each video's crops (``region_jpegs``) over rows before the processor, and
# ``merge_object_rows`` gathers a video's captions back into its task after it
# (``groupby("video_id")``: rows of one video may leave the engines in any order and
# on any block).

#: Stands in for the region of a row that needs no caption (user text, failed earlier):
#: every row takes the same path through the processor (one schema), at the cost of a
#: one-token generation.
_BLANK = np.full((14, 14, 3), 128, np.uint8)


def object_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Before the processor: one row per object crop of a video; one uncaptioned row for a video
    with none (user text, failed earlier), so that every video comes out again."""
    crops = row.get("region_jpegs")
    crops = [] if crops is None else list(crops)
    base = {"video_id": row["video_id"], "task": row["task"]}
    if not crops:
        return [{**base, "obj_index": -1, "region_jpeg": b""}]
    return [{**base, "obj_index": k, "region_jpeg": bytes(c)} for k, c in enumerate(crops)]


def served_request_row(row: dict[str, Any], *, question: str, max_new_tokens: int) -> dict[str, Any]:
    """Preprocess of the served caption stage: an object row -> one chat request.

    Keeps ``video_id``, ``task`` and ``obj_index`` (the regrouping needs them) and drops the JPEG.
    """
    data = row.get("region_jpeg")
    wanted = data is not None and len(data) > 0
    return {
        "video_id": row["video_id"],
        "task": row["task"],
        "obj_index": int(row["obj_index"]),
        "wants_caption": wanted,
        "messages": chat_messages(jpeg_data_url(data if wanted else region_jpeg(_BLANK)), question),
        "sampling_params": sampling_params(max_new_tokens if wanted else 1),
    }


def served_caption_row(row: dict[str, Any]) -> dict[str, Any]:
    """Postprocess of the served caption stage: the object row with its cleaned caption."""
    return {"video_id": row["video_id"], "task": row["task"], "obj_index": row["obj_index"],
            "wants_caption": bool(row.get("wants_caption")), "caption": clean_caption(row.get("generated_text") or "")}


def finish_object_row(row: dict[str, Any]) -> dict[str, Any]:
    """After the processor: the same columns for rows that generated and rows that failed.

    Ray Data LLM hands failed rows past the postprocess with ``__inference_error__`` set
    (``should_continue_on_error``) and the processor's own columns; both kinds leave here alike.
    """
    return {"video_id": row["video_id"], "task": row["task"], "obj_index": int(row.get("obj_index", -1)),
            "wants_caption": bool(row.get("wants_caption")), "caption": str(row.get("caption") or ""),
            "error": str(row.get("__inference_error__") or "")}


def merge_object_rows(group: dict[str, np.ndarray], *, model: str, run_id: str) -> dict[str, np.ndarray]:
    """The rows of one video -> its task with every object's caption and phrase (one row).

    A failed generation fails the video at the caption stage, as in the other backends.
    """
    from fastsam2.config import VideoTask
    from fastsam2.labeling import error_row
    from fastsam2.progress import report
    from fastsam2.prompts.auto import record_captions

    task = VideoTask.model_validate_json(str(group["task"][0]))
    errors = [str(e) for e in group["error"] if e]
    try:
        if errors:
            raise CaptionError(f"vLLM engine: {errors[0]}")
        if any(group["wants_caption"]):
            by_object = sorted(zip(group["obj_index"], group["caption"]), key=lambda oc: int(oc[0]))
            record_captions(task, [str(c) for _, c in by_object], "vllm", model)
    except (CaptionError, ValueError) as exc:
        failed = error_row(task, CAPTION.name, exc, run_id)
        failed.pop("failed_at")
        task.error = failed
    report(run_id, CAPTION.name, 1)
    return {"video_id": np.array([task.video_id], dtype=object), "task": np.array([task.model_dump_json()], dtype=object)}


def served_processor_kwargs(cfg) -> dict[str, Any]:
    """``vLLMEngineProcessorConfig`` arguments from a job config (model, batching, engines, GPUs)."""
    res = cfg.resource(CAPTION.name)
    concurrency = res.max_actors if res.min_actors == res.max_actors else (res.min_actors, res.max_actors)
    kwargs = processor_config_kwargs(
        cfg.prompts.caption_model,
        batch_size=res.batch_size,
        concurrency=concurrency,
        engine_overrides=cfg.prompts.caption_engine,
        accelerator_type=cfg.prompts.caption_accelerator_type,
    )
    kwargs["should_continue_on_error"] = True  # one bad image fails its video, not the job
    return kwargs


def served_caption_stage(ds, cfg, *, build=None):
    """Caption every object of every row of ``ds`` through a ``ray.data.llm`` vLLM processor.

    Rows come in as the propose stage makes them (``video_id``, ``task``, ``region_jpegs``)
    and leave as ``video_id``/``task``, one per video, each object with its own caption
    and phrase. The processor brings its own CPU stages (image preparation, chat
    template) and its own GPU actors (vLLM engines, ``concurrency`` of them, batching
    inside the engine). Regrouping a video's objects is a ``groupby``: the tracking
    stage starts once every caption request has come back (an all-to-all step of
    Ray Data), which costs overlap between captioning and tracking, never a video.
    ``build`` makes the processor from ``(config_kwargs, preprocess, postprocess)``; the
    default is Ray's ``build_processor``. Tests pass a stand-in for the GPU engine only.
    """
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    question = QUESTIONS["crop"]
    pre = partial(served_request_row, question=question, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    kwargs = served_processor_kwargs(cfg)
    if build is None:
        processor = build_processor(vLLMEngineProcessorConfig(**kwargs), preprocess=pre, postprocess=served_caption_row)
    else:
        processor = build(kwargs, pre, served_caption_row)
    captioned = processor(ds.flat_map(object_rows)).map(finish_object_row)
    merge = partial(merge_object_rows, model=cfg.prompts.caption_model, run_id=cfg.run_id)
    return captioned.groupby("video_id").map_groups(merge, batch_format="numpy")
