"""Caption the auto-prompt region with LLaVA, behind one interface and three backends.

- ``transformers``: ``LlavaForConditionalGeneration`` in-process (CPU, one GPU,
  and the tiny random model of ``--random-weights``);
- ``vllm``: ``vllm.LLM`` in the calling process (a Ray actor on a cluster), or
  Ray Data LLM stages (:mod:`fastsam2.prompts.caption_vllm`); imported lazily;
- ``openai``: an OpenAI-compatible endpoint already serving the model
  (``vllm serve``, Ray Serve LLM) at ``--caption-endpoint``.

Every backend sends the same question in the same LLaVA-1.5 format, built here:
the raw prompt (:func:`llava_prompt`) for ``transformers`` and ``vllm.LLM``, and
OpenAI chat messages (:func:`chat_messages`) for endpoints and Ray Data LLM,
which the model's chat template renders to that same prompt. Decoding is greedy
so a caption is a function of the image.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fastsam2.models.llava import DEFAULT_LLAVA
from fastsam2.prompts.region import region_image

log = logging.getLogger(__name__)

BACKENDS = ("vllm", "openai", "transformers")
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


# ---------------------------------------------------------------- transformers


class TransformersCaptioner(RegionCaptioner):
    """LLaVA in-process through transformers; batched, greedy, left-padded."""

    backend = "transformers"

    def __init__(self, model: str = DEFAULT_LLAVA, *, random_weights: bool = False, device: str = "auto",
                 region_mode: str = "crop", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        from fastsam2.models.factory import load_llava

        llava = load_llava(model, random_weights=random_weights, device=device)
        self.hf_model, self.processor = llava.model, llava.processor
        super().__init__(llava.name, region_mode=region_mode, max_new_tokens=max_new_tokens,
                         random_weights=llava.random_weights)
        tok = self.processor.tokenizer
        # Never let the model emit an image placeholder or padding as a "word".
        self._suppress = [i for i in (tok.convert_tokens_to_ids("<image>"), tok.pad_token_id) if i is not None]

    def generate(self, regions: list[np.ndarray], question: str) -> list[str]:
        import torch
        from PIL import Image

        prompt = llava_prompt(question)
        inputs = self.processor(
            images=[Image.fromarray(r) for r in regions],
            text=[prompt] * len(regions),
            return_tensors="pt",
            padding=True,
        )
        dev, dtype = self.hf_model.device, self.hf_model.dtype
        inputs = {k: (v.to(dev, dtype) if k == "pixel_values" else v.to(dev)) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.hf_model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=1,
                do_sample=False,
                suppress_tokens=self._suppress,
            )
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)


# ---------------------------------------------------------------- factory


def make_captioner(
    backend: str = "transformers",
    model: str = DEFAULT_LLAVA,
    endpoint: str | None = None,
    random_weights: bool = False,
    device: str = "auto",
    *,
    region_mode: str = "crop",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    engine_kwargs: dict | None = None,
) -> Captioner:
    """Build the captioner for ``backend`` (one of :data:`BACKENDS`).

    With ``random_weights`` every backend becomes ``transformers`` with the tiny
    random LLaVA: a vLLM engine or a remote endpoint cannot serve an in-memory
    random model, and a random-weights run must not download anything. This is
    logged, and ``captioner.backend`` says what actually ran.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown caption backend {backend!r}; choose one of {BACKENDS}")
    common = dict(region_mode=region_mode, max_new_tokens=max_new_tokens)
    if random_weights:
        if backend != "transformers":
            log.warning("caption backend %s replaced by transformers: --random-weights uses a tiny "
                        "random LLaVA built in-process", backend)
        return TransformersCaptioner(model, random_weights=True, device=device, **common)
    if backend == "transformers":
        return TransformersCaptioner(model, device=device, **common)
    if backend == "openai":
        from fastsam2.prompts.caption_openai import OpenAICaptioner

        if not endpoint:
            raise ValueError("caption backend 'openai' needs --caption-endpoint URL (e.g. http://host:8000/v1)")
        return OpenAICaptioner(endpoint, model, **common)
    from fastsam2.prompts.caption_vllm import VLLMCaptioner

    return VLLMCaptioner(model, engine_kwargs=engine_kwargs, **common)
