"""Per-stage progress and throughput in the job's log, every minute.

The stages run in actors on other nodes; each one tells a small named actor (one per
run, no CPU reserved) how many videos it finished. That actor lives on the driver's
node, so losing a worker node does not lose the counts (the driver's node going means
the job goes anyway). A thread in the driver reads the counts every
``progress_log_interval_s`` and logs one line: done per stage, rate over the last
interval and since the start; one last line is logged when the run ends, so even a
run shorter than the interval leaves its counts in the log. Stages report without
waiting, so the last line may miss a count still in flight; the run's summary, counted
from the written rows, is the exact one. A stall is then visible in the job's log long
before Ray Data's no-progress timeout.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from fastsam2.stage_specs import STAGES

log = logging.getLogger("fastsam2.progress")

STAGE_ORDER = tuple(s.name for s in STAGES)
#: How long a periodic line waits for the board, and the last one (the run is over: be brief).
SNAPSHOT_TIMEOUT_S = 30.0
LAST_SNAPSHOT_TIMEOUT_S = 5.0


def board_name(run_id: str) -> str:
    return f"fastsam2-progress-{run_id}"


class _Board:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, stage: str, n: int) -> None:
        self.counts[stage] = self.counts.get(stage, 0) + int(n)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


_handles: dict[str, object] = {}


def report(run_id: str, stage: str, n: int) -> None:
    """Called by a stage after each batch: fire and forget; a missing board is ignored."""
    if not n:
        return
    try:
        import ray

        handle = _handles.get(run_id)
        if handle is None:
            handle = _handles[run_id] = ray.get_actor(board_name(run_id))
        handle.add.remote(stage, n)
    except Exception:  # noqa: BLE001 - progress reporting never fails a video
        _handles.pop(run_id, None)


def format_line(counts: dict[str, int], previous: dict[str, int], interval_s: float, elapsed_s: float,
                total: int) -> str:
    """``progress: propose 12/40 (6.0/min, 5.5/min overall) | track ...``"""
    parts = []
    for stage in sorted(counts, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else 99, s)):
        n = counts[stage]
        recent = (n - previous.get(stage, 0)) * 60.0 / max(interval_s, 1e-9)
        overall = n * 60.0 / max(elapsed_s, 1e-9)
        parts.append(f"{stage} {n}/{total} ({recent:.1f}/min, {overall:.1f}/min overall)")
    return "progress: " + (" | ".join(parts) if parts else f"no stage has finished a video yet (0/{total})")


class ProgressLogger:
    """Creates the run's board and logs a line every ``interval_s`` until stopped."""

    def __init__(self, run_id: str, total: int, interval_s: float):
        self.run_id, self.total, self.interval_s = run_id, total, interval_s
        self.board = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastsam2-progress", daemon=True)

    def __enter__(self) -> "ProgressLogger":
        import ray

        if self.interval_s <= 0:
            return self
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        actor_cls = ray.remote(num_cpus=0, max_restarts=-1)(_Board)
        self.board = actor_cls.options(name=board_name(self.run_id), get_if_exists=True,
                                       scheduling_strategy=here).remote()
        self._start = self._last_t = time.monotonic()
        self._previous: dict[str, int] = {}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread.is_alive():
            # The thread logs the last line itself (never two threads printing at once);
            # a broken cluster costs at most the last snapshot's timeout.
            self._thread.join(timeout=LAST_SNAPSHOT_TIMEOUT_S + 5)
        if self.board is not None:
            import ray

            try:
                ray.kill(self.board)
            except Exception:  # noqa: BLE001
                pass
        return False

    def _log_line(self, timeout_s: float) -> None:
        import ray

        try:
            counts = ray.get(self.board.snapshot.remote(), timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a lost count never fails the run
            return
        now = time.monotonic()
        # stderr, unbuffered: the job's log (and `status --logs`) shows it whatever logging is set to
        print(format_line(counts, self._previous, now - self._last_t, now - self._start, self.total),
              file=sys.stderr, flush=True)
        self._previous, self._last_t = counts, now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._log_line(SNAPSHOT_TIMEOUT_S)
        self._log_line(LAST_SNAPSHOT_TIMEOUT_S)  # the run's last counts, however short it was
