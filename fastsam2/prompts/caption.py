"""Caption the auto-prompt region with LLaVA: the interface and what every backend shares.

The backends are subclasses of :class:`RegionCaptioner`, one module each:

- ``transformers`` (:mod:`~fastsam2.prompts.caption_transformers`):
  ``LlavaForConditionalGeneration`` in-process (CPU, one GPU, and the tiny
  random model of ``--random-weights``);
- ``vllm`` (:mod:`~fastsam2.prompts.caption_vllm`): ``vllm.LLM`` in the calling
  process (a Ray actor on a cluster), or Ray Data LLM stages;
- ``openai`` (:mod:`~fastsam2.prompts.caption_openai`): an OpenAI-compatible
  endpoint already serving the model (``vllm serve``, Ray Serve LLM) at ``--caption-endpoint``.

:func:`fastsam2.prompts.captioners.make_captioner` picks one. This module imports
none of them, so the backends import it without a cycle.

Every backend sends the same question in the same LLaVA-1.5 format, built here:
the raw prompt (:func:`llava_prompt`) for ``transformers`` and ``vllm.LLM``, and
OpenAI chat messages (:func:`chat_messages`) for endpoints and Ray Data LLM,
which the model's chat template renders to that same prompt. Decoding is greedy
so a caption is a function of the image.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fastsam2.prompts.region import region_image

DEFAULT_MAX_NEW_TOKENS = 32

#: The question per region mode (see :mod:`fastsam2.prompts.region`).
QUESTIONS = {
    "crop": "Describe the main object in this image in one short sentence.",
    "draw": "Describe the object inside the red box in one short sentence.",
}

Box = Sequence[float]


class CaptionError(RuntimeError):
    """A caption backend failed (endpoint unreachable, bad reply, engine error)."""

    stage = "caption"


@runtime_checkable
class Captioner(Protocol):
    """Captions regions of frames; one caption per (image, box), same order.

    ``backend`` and ``model`` are the names recorded in ``videos/``;
    ``random_weights`` is True when the captions are noise.
    """

    backend: str
    model: str
    random_weights: bool

    def caption(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None]) -> list[str]: ...

    def caption_regions(self, regions: Sequence[np.ndarray]) -> list[str]: ...


# ---------------------------------------------------------------- prompt shape


def llava_prompt(question: str) -> str:
    """LLaVA-1.5's single-turn prompt, as its hf chat template renders it."""
    return f"USER: <image>\n{question} ASSISTANT:"


def region_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """An RGB uint8 region as JPEG bytes: how the propose stage hands a region to the caption
    stage (a few kB per video in the row, so the caption stage never decodes video)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., :3])).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_to_array(data: bytes) -> np.ndarray:
    """JPEG bytes back to an RGB uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("RGB"))


def image_data_url(image: np.ndarray, quality: int = 90) -> str:
    """An RGB uint8 image as a ``data:image/jpeg;base64,`` URL (what endpoints accept)."""
    return jpeg_data_url(region_jpeg(image, quality))


def jpeg_data_url(data: bytes) -> str:
    """JPEG bytes as a ``data:image/jpeg;base64,`` URL."""
    return "data:image/jpeg;base64," + base64.b64encode(bytes(data)).decode("ascii")


def chat_messages(image_url: str, question: str) -> list[dict]:
    """One user turn in OpenAI chat format: the image first (as LLaVA-1.5 expects), then the question."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": question},
            ],
        }
    ]


def sampling_params(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """Greedy decoding, capped: the same on every backend."""
    return {"temperature": 0.0, "max_tokens": int(max_new_tokens)}


def clean_caption(text: str) -> str:
    """Strip the role echo and collapse whitespace in a generated caption."""
    text = re.sub(r"^\s*(ASSISTANT|USER)\s*:\s*", "", text or "", flags=re.IGNORECASE)
    return " ".join(text.replace("<image>", " ").split())


# ---------------------------------------------------------------- shared base


class RegionCaptioner:
    """Shared part of every backend: region images, the question, cleaning.

    Subclasses implement :meth:`generate` (region images + question -> raw texts).
    """

    backend = "?"

    def __init__(self, model: str, *, region_mode: str = "crop", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 random_weights: bool = False) -> None:
        if region_mode not in QUESTIONS:
            raise ValueError(f"region mode must be one of {sorted(QUESTIONS)}, got {region_mode!r}")
        self.model = model
        self.region_mode = region_mode
        self.question = QUESTIONS[region_mode]
        self.max_new_tokens = max_new_tokens
        self.random_weights = random_weights

    def regions(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None]) -> list[np.ndarray]:
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        return [region_image(im, box, self.region_mode) for im, box in zip(images, boxes)]

    def caption(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None]) -> list[str]:
        """One cleaned caption per (image, box)."""
        if not images:
            return []
        return self.caption_regions(self.regions(images, boxes))

    def caption_regions(self, regions: Sequence[np.ndarray]) -> list[str]:
        """One cleaned caption per region image already cut (e.g. decoded from a row's JPEG)."""
        if not len(regions):
            return []
        raw = self.generate(list(regions), self.question)
        if len(raw) != len(regions):
            raise CaptionError(f"{self.backend} returned {len(raw)} captions for {len(regions)} regions")
        return [clean_caption(t) for t in raw]

    def generate(self, regions: list[np.ndarray], question: str) -> list[str]:
        raise NotImplementedError
