"""The captioner factory: a backend name -> a :class:`~fastsam2.prompts.caption.Captioner`.

Apart from :mod:`fastsam2.prompts.caption` (the interface every backend
subclasses), so that the backends import the interface and this module imports
the backends, never the other way round. Backends with heavy or optional
dependencies (vLLM, an HTTP client) are imported only when picked.
"""

from __future__ import annotations

import logging

from fastsam2.models.llava import DEFAULT_LLAVA
from fastsam2.prompts.caption import DEFAULT_MAX_NEW_TOKENS, Captioner

log = logging.getLogger(__name__)

BACKENDS = ("vllm", "openai", "transformers")


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
    from fastsam2.prompts.caption_transformers import TransformersCaptioner

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
