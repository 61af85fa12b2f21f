"""One output root, one set of settings: the small file that says how its results were made.

A re-run into an existing ``--output`` skips every video already done. That is
right when the settings are the same, and silently wrong when they differ (a
new keep ratio would "finish" at once with the old masks). So a run records its
settings in ``<root>/_fastsam2_settings.json`` (the ``_`` keeps it out of
``*/*.parquet`` globs), and a later run with different ones stops before
anything starts, naming what differs, unless ``--allow-mixed-settings``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastsam2.config import JobConfig
from fastsam2.storage import filesystem_for, join, strip_protocol, write_bytes_atomic

log = logging.getLogger(__name__)
SETTINGS_FILE = "_fastsam2_settings.json"


class MixedSettings(ValueError):
    """The output root holds results made with other settings."""


def settings_of(cfg: JobConfig) -> dict[str, Any]:
    """What decides a video's masks: model, weights, size, pruning, prompts, frame cap."""
    m, p, q = cfg.model, cfg.pruning, cfg.prompts
    return {
        "model": m.sam2_config.removesuffix(".yaml"),
        "checkpoint": None if m.random_weights else (m.sam2_checkpoint or "official"),
        "random_weights": m.random_weights,
        "image_size": m.image_size,
        "keep_ratio": p.keep_ratio,
        "router_weights": p.router_weights,
        "semantic": p.semantic,
        "uncertainty": p.uncertainty,
        "prompt_mode": q.mode,
        "point": q.point,
        "box": q.box,
        "text": q.text,
        "caption_backend": q.caption_backend,
        "caption_model": q.caption_model,
        "max_objects": q.max_objects,
        "detect_every": q.detect_every,
        "bidirectional": q.bidirectional,
        "max_frames": cfg.max_frames,
    }


def _read(uri: str, storage_options: dict | None) -> dict | None:
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise MixedSettings(f"{uri} is not a settings file this tool wrote (invalid JSON); "
                            "use another --output or remove it") from None
    return data.get("settings") if isinstance(data, dict) else None


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["keep_ratio 0.3 -> 0.5", ...]`` for every setting that changed."""
    return [f"{k} {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_and_record(cfg: JobConfig) -> None:
    """Record this run's settings at the output root, or stop if the root holds other ones.

    Written once (by the first run into a root) and never rewritten, so a second
    identical run writes nothing at all.
    """
    uri = join(cfg.output, SETTINGS_FILE)
    new = json.loads(json.dumps(settings_of(cfg)))  # tuples -> lists, as they read back
    old = _read(uri, cfg.storage_options)
    if old is None:
        write_bytes_atomic(json.dumps({"settings": new, "run_id": cfg.run_id}, indent=1).encode(),
                           uri, cfg.storage_options)
        return
    diff = differences(old, new)
    if not diff:
        return
    if cfg.allow_mixed_settings:
        log.warning("adding to %s made with other settings (%s)", cfg.output, "; ".join(diff))
        return
    raise MixedSettings(f"{cfg.output} holds results made with other settings ({'; '.join(diff)}); "
                        "use another --output, or --allow-mixed-settings to add to it anyway")
