"""The ``openai`` caption backend: an OpenAI-compatible endpoint already serving LLaVA.

For a model served once and shared (``vllm serve llava-hf/llava-1.5-7b-hf``,
Ray Serve LLM): each region is one ``/v1/chat/completions`` request with the
region as a JPEG data URL. Requests of a batch go out concurrently so the
server can batch them. Plain ``urllib`` keeps this free of extra dependencies;
``OPENAI_API_KEY``, when set, is sent as the bearer token.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastsam2.prompts.caption import (
    DEFAULT_MAX_NEW_TOKENS,
    CaptionError,
    RegionCaptioner,
    chat_messages,
    image_data_url,
    sampling_params,
)

log = logging.getLogger(__name__)


def completions_url(endpoint: str) -> str:
    """``http://h:8000``, ``http://h:8000/v1`` or the full URL -> the chat completions URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def chat_request(model: str, image: np.ndarray, question: str, max_new_tokens: int) -> dict:
    """The JSON body of one caption request."""
    return {
        "model": model,
        "messages": chat_messages(image_data_url(image), question),
        **sampling_params(max_new_tokens),
    }


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date (None if absent or bad)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


class OpenAICaptioner(RegionCaptioner):
    """Captions through an OpenAI-compatible chat completions endpoint."""

    backend = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        region_mode: str = "crop",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        timeout_s: float = 60.0,
        retries: int = 6,
        max_wait_s: float = 120.0,
        max_concurrency: int = 8,
        api_key: str | None = None,
    ) -> None:
        super().__init__(model, region_mode=region_mode, max_new_tokens=max_new_tokens)
        self.url = completions_url(endpoint)
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_wait_s = max_wait_s
        self.max_concurrency = max_concurrency
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")

    def _post(self, body: dict) -> str:
        """One request, retried on 429 / 5xx / connection errors with exponential backoff.

        A ``Retry-After`` header (seconds or an HTTP date) sets the wait instead; the waits
        of one request never add up to more than ``max_wait_s``: past that, or after
        ``retries`` retries, the last error is raised (the video gets an ``errors/`` row).
        """
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        waited = 0.0
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    reply = json.load(resp)
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                last = CaptionError(f"caption endpoint {self.url} answered HTTP {exc.code}: {detail}")
                if exc.code != 429 and exc.code < 500:  # the request itself is wrong: retrying will not help
                    raise last from exc
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = CaptionError(f"caption endpoint {self.url} unreachable: {exc}")
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise CaptionError(f"caption endpoint {self.url} sent an unexpected reply: {exc!r}") from exc
            if attempt == self.retries:
                break
            wait = retry_after if retry_after is not None else min(30.0, 0.5 * 2**attempt)
            if waited + wait > self.max_wait_s:
                raise CaptionError(f"{last} (gave up: the next retry would pass the {self.max_wait_s:.0f}s "
                                   f"retry budget after {attempt + 1} attempt(s))") from None
            log.info("caption endpoint busy (%s); retrying in %.1fs", last, wait)
            time.sleep(wait)
            waited += wait
        raise CaptionError(f"{last} (gave up after {self.retries + 1} attempts)")

    def generate(self, regions: list[np.ndarray], question: str) -> list[str]:
        bodies = [chat_request(self.model, r, question, self.max_new_tokens) for r in regions]
        if len(bodies) == 1:
            return [self._post(bodies[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(bodies))) as pool:
            return list(pool.map(self._post, bodies))
