"""Instrumentation of the tracker, apart from the algorithm: stats keys, timers, FLOPs.

What the pruned predictor measures about itself lives here, so the predictor's own
module holds only the algorithm and every reader of the numbers (the streaming
loop, ``labeling``, the benchmarks) takes the key names from one place:

- **stats**: per frame, ``inference_state[STATS_KEY][frame_idx]`` is a flat dict of
  ``ms_<component>`` (summed over objects), token counts and encoder counters
  (:func:`empty_frame_stats`, :func:`frame_stats`, :func:`count_tokens`).
- **timers**: :class:`ComponentTimer` times a component without stalling the
  device (CUDA events read once per frame) or exactly (``profile=True``).
- **FLOPs** (benchmarks only, slow): :func:`flop_counter`, torch's counter taught
  the ops it misses (CPU flash attention, matrix-vector products, fused MHA).

Everything here imports and runs on a CPU-only machine; CUDA is touched only when
the device is CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from fastsam2.schema import COMPONENTS

#: Key of the per-frame stats in a sam2 inference state:
#: ``{frame_idx: {"ms_<component>": float, "tokens_kept": int, ...}}``.
STATS_KEY = "fastsam2_stats"
#: Prefix of a component's milliseconds in a stats record (``ms_image_encoder``...).
MS_PREFIX = "ms_"
#: Prefix of a component's GFLOPs in a stats record (only with FLOP counting on).
GFLOPS_PREFIX = "gflops_"
TOKENS_KEPT = "tokens_kept"
TOKENS_TOTAL = "tokens_total"
TOKENS_PRIOR = "tokens_prior"
#: Image-encoder calls on the frame, shared by all objects (must stay 1 per frame).
ENCODER_CALLS = "encoder_calls"


def ms_key(component: str) -> str:
    """The stats key of a component's milliseconds."""
    return f"{MS_PREFIX}{component}"


def empty_frame_stats() -> dict[str, float | int]:
    """A zeroed per-frame stats record (component times accumulate over objects)."""
    stats: dict[str, float | int] = {ms_key(c): 0.0 for c in COMPONENTS}
    stats.update({TOKENS_KEPT: 0, TOKENS_TOTAL: 0, TOKENS_PRIOR: 0})
    return stats


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU flash SDPA, which ``torch.utils.flop_counter`` does not count by default."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mv_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a matrix-vector product (the closed-form uncertainty uses one)."""
    return 2 * a_shape[0] * a_shape[1]


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: totals only.

    The tracker hooks every module call to attribute FLOPs per module and, on
    inputs that require grad, registers autograd hooks, which fails inside
    SAM2's inference-mode preflight; the predictor only needs totals.
    """

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _CountingFlops:
    """``FlopCounterMode`` with ``nn.MultiheadAttention``'s fused inference fast path off.

    The fast path runs as one native op the counter has no formula for, so CLIP's
    attention blocks would count as MLPs only (a third low on ViT-B/16); with it
    off, MHA runs as projections plus SDPA, which are counted.
    """

    def __init__(self, counter) -> None:
        self.counter = counter
        self._saved: bool | None = None

    def get_total_flops(self) -> int:
        return self.counter.get_total_flops()

    def __enter__(self):
        self._saved = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        self.counter.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            return self.counter.__exit__(*exc)
        finally:
            torch.backends.mha.set_fastpath_enabled(bool(self._saved))


def flop_counter() -> _CountingFlops:
    """A FLOP counter (context manager with ``get_total_flops()``) that also counts CPU
    attention, matrix-vector products and ``nn.MultiheadAttention`` (fast path off
    while counting), besides torch's own matmul and convolution formulas."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.mv: _mv_flops}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _GlobalOnly()
    return _CountingFlops(counter)


def frame_stats(inference_state: dict[str, Any], frame_idx: int) -> dict[str, Any]:
    """The stats record of ``frame_idx`` in ``inference_state`` (created zeroed)."""
    per_frame = inference_state.setdefault(STATS_KEY, {})
    if frame_idx not in per_frame:
        per_frame[frame_idx] = empty_frame_stats()
    return per_frame[frame_idx]


def count_tokens(stats: dict[str, Any], kept: int, total: int, prior: int = 0) -> None:
    """Add one memory-attention call's token counts to a frame's stats."""
    stats[TOKENS_KEPT] += int(kept)
    stats[TOKENS_TOTAL] += int(total)
    stats[TOKENS_PRIOR] += int(prior)


@contextmanager
def timed(timer: ComponentTimer, stats: dict[str, Any] | Sequence[dict[str, Any]], component: str,
          count_flops: bool = False) -> Iterator[None]:
    """Time (and with ``count_flops`` count the FLOPs of) one component into ``stats``
    (several stats dicts: one batched call, each frame gets an equal share)."""
    counter = flop_counter() if count_flops else nullcontext()
    with timer.time(stats, ms_key(component)), counter:
        yield
    if count_flops:
        _add_shares([stats] if isinstance(stats, dict) else list(stats), f"{GFLOPS_PREFIX}{component}",
                    counter.get_total_flops() / 1e9)


def _add_shares(shares: list[dict], key: str, value: float) -> None:
    for stats in shares:
        stats[key] = stats.get(key, 0.0) + value / len(shares)


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
        self._pending: list[tuple[list[dict], str, Any, Any]] = []

    @property
    def pending(self) -> int:
        """Spans recorded but not yet read (CUDA events mode)."""
        return len(self._pending)

    @contextmanager
    def time(self, stats: dict | Sequence[dict], key: str) -> Iterator[None]:
        """Time the block into ``stats[key]``; given several stats dicts (one batched call
        serving several videos' frames), each gets an equal share of the time."""
        shares = [stats] if isinstance(stats, dict) else list(stats)
        if self.uses_events:
            start = self._event_factory()
            start.record()
            yield
            end = self._event_factory()
            end.record()
            self._pending.append((shares, key, start, end))
            return
        sync = self.profile and self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if sync:
            torch.cuda.synchronize(self.device)
        _add_shares(shares, key, (time.perf_counter() - t0) * 1000.0)

    def flush(self) -> None:
        """Read every pending span into its stats (one wait, on the newest event)."""
        if not self._pending:
            return
        self._pending[-1][3].synchronize()
        for shares, key, start, end in self._pending:
            _add_shares(shares, key, float(start.elapsed_time(end)))
        self._pending.clear()
