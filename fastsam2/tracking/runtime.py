"""How a tracker runs on its device: numeric precision, component timers, compile.

One home for the three device-facing decisions of the tracking engine, so the
predictor only asks "give me the autocast context" and "time this component":

- **precision** (``auto|fp32|bf16|fp16``): ``auto`` is bf16 autocast with TF32
  matmuls on CUDA (as SAM2's own README runs video prediction) and plain fp32 on
  CPU. :func:`autocast_context` is the one autocast used around tracking.
- **timers**: on CUDA, per-component times come from CUDA events recorded around
  each component and read once per frame (:meth:`ComponentTimer.flush`), so timing
  never stalls the device between components. ``profile=True`` restores exact,
  synchronised timings (a ``synchronize()`` before and after every component) for
  diagnosis. On CPU both are ``perf_counter`` spans, as before.
- **compile**: :func:`compile_modules` wraps the image encoder's and memory
  attention's ``forward`` in ``torch.compile`` with static shapes (pruning keeps
  the token count fixed per frame, so shapes do not change between frames).

Everything here imports and runs on a CPU-only machine; CUDA is touched only when
the device is CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) a run uses on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: no autocast, fp32)."""
    return _DTYPES.get(resolve_precision(precision, device))


def autocast_context(precision: str, device: torch.device | str):
    """``torch.autocast`` for ``precision`` on ``device``, or a no-op context for fp32."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def enable_tf32(precision: str, device: torch.device | str) -> bool:
    """Allow TF32 matmuls/convolutions on CUDA for the reduced-precision modes
    (whatever autocast leaves in fp32 then still runs on tensor cores). Returns
    whether it was enabled; ``fp32`` keeps strict fp32."""
    if torch.device(device).type != "cuda" or resolve_precision(precision, device) == "fp32":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


class ComponentTimer:
    """Accumulates per-component milliseconds into per-frame stats dicts.

    ``time(stats, key)`` is a context manager around one component. Modes:

    - CPU: ``perf_counter`` around the block (exact: CPU work is synchronous).
    - CUDA, ``profile=False`` (default): a start and an end CUDA event are
      recorded around the block and kept pending; :meth:`flush` (once per frame)
      waits for the last one and adds every pending ``elapsed_time``. No
      ``synchronize()`` between components, so kernels queue back to back.
    - CUDA, ``profile=True``: ``synchronize()`` before and after each block and
      ``perf_counter`` between (the exact, stalling timings, for diagnosis).

    ``event_factory`` makes the events (``torch.cuda.Event(enable_timing=True)``
    by default); tests on CPU pass a stand-in with the same three methods.
    """

    def __init__(self, device: torch.device | str, profile: bool = False,
                 event_factory: Callable[[], Any] | None = None) -> None:
        self.device = torch.device(device)
        self.profile = profile
        self.uses_events = (self.device.type == "cuda" or event_factory is not None) and not profile
        self._event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
        self._pending: list[tuple[dict, str, Any, Any]] = []

    @property
    def pending(self) -> int:
        """Spans recorded but not yet read (CUDA events mode)."""
        return len(self._pending)

    @contextmanager
    def time(self, stats: dict, key: str) -> Iterator[None]:
        if self.uses_events:
            start = self._event_factory()
            start.record()
            yield
            end = self._event_factory()
            end.record()
            self._pending.append((stats, key, start, end))
            return
        sync = self.profile and self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if sync:
            torch.cuda.synchronize(self.device)
        stats[key] = stats.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0

    def flush(self) -> None:
        """Read every pending span into its stats (one wait, on the newest event)."""
        if not self._pending:
            return
        self._pending[-1][3].synchronize()
        for stats, key, start, end in self._pending:
            stats[key] = stats.get(key, 0.0) + float(start.elapsed_time(end))
        self._pending.clear()


def compile_modules(predictor: Any, mode: str | None = None, backend: str = "inductor") -> list[str]:
    """``torch.compile`` the image encoder's and memory attention's ``forward`` (static
    shapes) in place; returns the names of what was wrapped. Hooks and attributes of
    the modules stay as they are (only ``forward`` is replaced). The pruned memory
    attention calls the module's layers directly (subset attention), so there only the
    image encoder is compiled in effect; dense frames use both."""
    wrapped = []
    for name in ("image_encoder", "memory_attention"):
        module = getattr(predictor, name, None)
        if module is None or getattr(module, "_fastsam2_compiled", False):
            continue
        module.forward = torch.compile(module.forward, dynamic=False, mode=mode, backend=backend)
        module._fastsam2_compiled = True
        wrapped.append(name)
    return wrapped
