"""How a tracker runs on its device: numeric precision and compile.

One home for the device-facing decisions of the tracking engine, so the
predictor only asks "give me the autocast context":

- **precision** (``auto|fp32|bf16|fp16``): ``auto`` is bf16 autocast with TF32
  matmuls on CUDA (as SAM2's own README runs video prediction) and plain fp32 on
  CPU. :func:`autocast_context` is the one autocast used around tracking.
- **timers** live with the rest of the instrumentation in
  :mod:`fastsam2.tracking.instrument` (``ComponentTimer``: CUDA events read once per
  frame, or exact synchronised spans with ``profile=True``).
- **compile**: :func:`compile_modules` wraps the image encoder's and memory
  attention's ``forward`` in ``torch.compile`` with static shapes (pruning keeps
  the token count fixed per frame, so shapes do not change between frames).

Everything here imports and runs on a CPU-only machine; CUDA is touched only when
the device is CUDA.
"""

from __future__ import annotations

from contextlib import nullcontext
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
