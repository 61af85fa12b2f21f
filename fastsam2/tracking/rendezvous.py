"""Streams stepped together meet here for one memory-attention call.

Pruned memory attention pays best as one call over many streams (every stream has the
same ``k`` kept tokens), but sam2's code tracks one stream at a time: one object of
one video per ``_run_single_frame_inference``. A :class:`Rendezvous` runs several such
steps as *workers* on long-lived threads of its own, **one thread at a time**: a worker
runs until its stream reaches memory attention, posts its request (:meth:`Rendezvous.submit`)
and waits; then the next worker runs. When every worker waits or has ended, the waiting
requests run as one call (the predictor's ``condition_streams``) and the waiting
workers resume one at a time, in order, until each waits again or ends.

Two engines use it, and they nest:

- the predictor steps the objects of one video on one frame
  (:meth:`~fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor._run_single_frame_inference`);
- the lockstep engine steps several videos (:mod:`fastsam2.tracking.lockstep`).

When the thread that gathers a round is itself a worker of another rendezvous (a video
stepped in lockstep, whose objects just met), the round's requests are not run there but
posted, all together, to that outer rendezvous: every (video, object) stream of a lockstep
step meets in one call.

Because only one thread runs at a time, the steps share the predictor as they would
share it run one after another; each keeps its call-in-progress state per thread
(``_PerThread`` attributes of the predictor) and its own autograd and autocast modes
(thread-local in torch: a worker enters them itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import Any

log = logging.getLogger(__name__)

_local = threading.local()  # .worker: the _Worker this thread is running, if any


def current() -> Rendezvous | None:
    """The rendezvous whose worker the calling thread is running (None: not a worker)."""
    worker = getattr(_local, "worker", None)
    return worker.rendezvous if worker is not None else None


class _Worker:
    """One step on a thread of the rendezvous: ``running`` -> ``parked`` (waiting for the
    batched attention) -> ``running`` ... -> ``done``."""

    def __init__(self, rendezvous: Rendezvous, fn: Callable[[], Any], tracker: Any) -> None:
        self.rendezvous = rendezvous
        self.fn = fn
        # A StreamingTracker whose session's frame clock the parked time is taken out of (a video
        # stepped in lockstep); None for a video's objects (their time is all the video's).
        self.tracker = tracker
        self.status = "running"
        self.requests: list[Any] | None = None
        self.results: list[Any] | None = None
        self.error: BaseException | None = None
        self.value: Any = None
        self.raised: BaseException | None = None  # what the step itself raised
        self.share_ms = 0.0  # this worker's share of the batched call it waited for


class _StepThread:
    """A thread that runs the steps handed to it, round after round, until stopped.

    Steps go to the same few threads for the whole run, not to a fresh thread per step: a
    new thread starts a new OpenMP team and malloc arena on its first tensor op, which made
    tracking ~5% slower on CPU (SAM2.1 hiera-t at 512 px, fp32, 2 cores: 8.7 s vs 8.3 s for
    16 frames with each step on a fresh thread vs on one long-lived thread or the caller's).
    """

    def __init__(self, rendezvous: Rendezvous, name: str) -> None:
        self.jobs: SimpleQueue[_Worker | None] = SimpleQueue()
        self.rendezvous = rendezvous
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (worker := self.jobs.get()) is not None:
            self.rendezvous._run(worker)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to end after its current step; wait for it at most ``timeout_s`` (a run
        interrupted mid-round may leave a step parked at the rendezvous for good: the thread is
        a daemon, so it never blocks the process from exiting)."""
        self.jobs.put(None)
        self.thread.join(timeout=timeout_s)


class Rendezvous:
    """Where steps run together meet for their memory attention; owns its step threads
    (:meth:`close` stops them). ``name`` prefixes the threads' names."""

    def __init__(self, predictor: Any, name: str) -> None:
        self.predictor = predictor
        self.name = name
        self.cv = threading.Condition()
        self.threads: list[_StepThread] = []

    def run_all(self, steps: Sequence[Callable[[], Any]],
                trackers: Sequence[Any] | None = None) -> list[tuple[Any, BaseException | None]]:
        """Run ``steps`` together; one ``(value, exception)`` per step, in order. ``trackers``:
        each step's video tracker, when its frame clock must not count the time it waits
        while other videos step (lockstep)."""
        workers = [_Worker(self, fn, trackers[i] if trackers else None) for i, fn in enumerate(steps)]
        while len(self.threads) < len(workers):
            self.threads.append(_StepThread(self, f"{self.name}-{len(self.threads)}"))
        try:
            for thread, worker in zip(self.threads, workers):
                thread.jobs.put(worker)
                self._wait(worker)
            while parked := [w for w in workers if w.status == "parked"]:
                self._condition(parked)
                for worker in parked:
                    with self.cv:
                        worker.status = "running"
                        self.cv.notify_all()
                    self._wait(worker)
        except BaseException:  # e.g. KeyboardInterrupt while gathering: let the parked steps end
            self._abandon(workers)
            raise
        return [(w.value, w.raised) for w in workers]

    def submit(self, requests: list[Any]) -> list[Any]:
        """(On a worker's thread) post this stream's requests, wait for the batched results."""
        worker: _Worker = _local.worker
        parked_at = time.perf_counter()
        with self.cv:
            worker.requests, worker.status = requests, "parked"
            self.cv.notify_all()
            self.cv.wait_for(lambda: worker.status == "running")
            results, error = worker.results, worker.error
            worker.requests = worker.results = worker.error = None
        # The video's frame clock ran while it was parked (other videos' steps and the whole
        # batched call): take that out and charge only this stream's share of the call.
        session = worker.tracker.session if worker.tracker is not None else None
        if session is not None:
            session.pending_ms += worker.share_ms - (time.perf_counter() - parked_at) * 1000.0
        worker.share_ms = 0.0
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        """Stop the step threads (between rounds: none is running a step)."""
        threads, self.threads = self.threads, []
        for thread in threads:
            thread.stop()

    def _run(self, worker: _Worker) -> None:
        _local.worker = worker
        try:
            worker.value = worker.fn()
        except BaseException as exc:  # noqa: BLE001 - the step's outcome, handed back by run_all
            worker.raised = exc
        finally:
            _local.worker = None
            with self.cv:
                worker.status = "done"
                self.cv.notify_all()

    def _abandon(self, workers: list[_Worker]) -> None:
        """Wake every parked worker with an error, so its step ends instead of waiting for good
        (and :meth:`close` does not wait out its join timeout per thread)."""
        with self.cv:
            for worker in workers:
                if worker.status == "parked":
                    worker.error = RuntimeError("the batched memory-attention round was abandoned")
                    worker.status = "running"
            self.cv.notify_all()

    def _wait(self, worker: _Worker) -> None:
        """Until ``worker`` waits for attention or its step has ended (one thread runs at a time)."""
        with self.cv:
            self.cv.wait_for(lambda: worker.status in ("parked", "done"))

    def _call(self, requests: list[Any]) -> list[Any]:
        """One attention call over ``requests``: posted to the rendezvous the gathering thread
        is itself a worker of (its streams then meet the other videos' there), else run."""
        outer = current()
        if outer is not None and outer is not self and outer.predictor is self.predictor:
            return outer.submit(requests)
        return self.predictor.condition_streams(requests)

    def _condition(self, parked: list[_Worker]) -> None:
        """The round's batched attention; if it fails, each worker's requests alone (a failure
        stays that worker's)."""
        t0 = time.perf_counter()
        flat = [req for worker in parked for req in worker.requests]
        try:
            results = self._call(flat)
        except Exception as exc:  # noqa: BLE001
            log.warning("batched memory attention of %d streams failed (%s: %s); running them one by one",
                        len(flat), type(exc).__name__, exc)
            for worker in parked:
                t0 = time.perf_counter()
                try:
                    worker.results = self.predictor.condition_streams(worker.requests)
                except Exception as own:  # noqa: BLE001
                    worker.error = own
                worker.share_ms = (time.perf_counter() - t0) * 1000.0
            return
        per_stream = (time.perf_counter() - t0) * 1000.0 / len(flat)
        start = 0
        for worker in parked:
            worker.results = results[start:start + len(worker.requests)]
            start += len(worker.requests)
            worker.share_ms = per_stream * len(worker.requests)  # a video's share: its streams'

