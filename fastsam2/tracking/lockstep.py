"""Several videos per tracker, advanced in lockstep: one image-encoder call per step (on a GPU).

A tracking actor that holds one SAM2 model on a GPU leaves most of the chip idle
when it tracks one video at a time with batch size 1. :func:`run_lockstep` keeps
up to ``videos_per_step`` videos live on one predictor and advances them one frame
each per step:

1. **encode**: the next frame of every live video is encoded in one
   ``forward_image`` call (the frames stacked on the batch dimension; all videos of
   one predictor share its image size) and cached in each video's own inference
   state (:meth:`~fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor.encode_frames`).
   That is on a GPU; on CPU, where a batch was measured slower than one frame per
   call (:func:`~fastsam2.tracking.pruned_predictor.encoder_batches_on`), the frames
   are encoded one call each, still ahead of the steps and on the scheduling thread;
2. **track**: each video's own step then runs as it would alone (router, decoder,
   memory encoder, eviction of its own bank), finding its frame's features
   already cached, except that pruned memory attention waits: the steps run one
   at a time on threads of their own and meet there
   (:mod:`fastsam2.tracking.rendezvous`), and one call runs memory attention for
   every (video, object) stream of the step that has the same shapes (all pruned
   streams share ``k``; streams whose memory lengths differ, while a young video's
   bank fills up, are grouped by length, never padded). That too is on a GPU; on
   CPU, where one call per stream measured faster
   (:func:`~fastsam2.tracking.pruned_predictor.attention_batches_on`), the steps
   simply run one after another. Dense streams (keep 1.0) run sam2's own attention,
   one per stream, so they stay bit-identical to stock.

A video is a *coroutine*: a generator (e.g. :func:`fastsam2.labeling.label_video_steps`)
that tracks through the :class:`~fastsam2.tracking.streaming.StreamingTracker` it is
given, yields after every frame and returns its result. The tracker is a per-video
view of the shared one (same predictor, its own :class:`TrackSession`), which tells
the engine which frame the video tracks next. A video that ends is replaced by the
next from ``videos`` at the next step without stopping the others; a video whose
step raises ends with that exception as its outcome, and the others go on.

Each step advances the videos in a fixed order (the order they started), so one
video's frames are always tracked in order and its results equal tracking it
alone: the batched calls are the only thing videos share, and each row of them
is that stream's own computation (``tests/test_lockstep.py`` checks masks,
memory features and object pointers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastsam2.tracking.rendezvous import Rendezvous
from fastsam2.tracking.streaming import StreamingTracker

log = logging.getLogger(__name__)

K = TypeVar("K")
R = TypeVar("R")

#: A video to track: its key, and how to start its coroutine on a tracker view.
VideoJob = tuple[K, Callable[[StreamingTracker], Generator[Any, None, R]]]


@dataclass
class _Live:
    key: Any
    tracker: StreamingTracker
    steps: Generator[Any, None, Any]

    @property
    def next_frame(self) -> int | None:
        session = self.tracker.session
        return session.next_frame if session is not None else None


def _step(video: _Live) -> tuple[Any, Any] | None:
    """Advance one video by one frame; ``(key, outcome)`` when it ended, else None."""
    try:
        next(video.steps)
    except StopIteration as done:
        return video.key, done.value
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        return video.key, exc
    return None


def run_lockstep(tracker: StreamingTracker, videos: Iterable[VideoJob], videos_per_step: int = 1,
                 ) -> Iterator[tuple[Any, Any]]:
    """Track ``videos`` with up to ``videos_per_step`` in lockstep; yield ``(key, outcome)``
    per video as it ends, where ``outcome`` is its coroutine's return value or the
    exception that ended it.

    Each round: videos that know no next frame (just started, between passes, or
    past their last frame) step at once until they do or end, and the queue fills
    the slots they free; then the next frame of every live video is encoded in one
    call, and every live video steps once, in the order they started.
    """
    if videos_per_step < 1:
        raise ValueError(f"videos_per_step must be at least 1, got {videos_per_step}")
    queue = iter(videos)
    live: list[_Live] = []
    rendezvous = Rendezvous(tracker.predictor, "lockstep-step")
    try:
        while True:
            settled = False
            while not settled:
                settled = True
                for video in [v for v in live if v.next_frame is None]:
                    settled = False
                    ended = _step(video)
                    if ended is not None:
                        live.remove(video)
                        yield ended
                while len(live) < videos_per_step:
                    job = next(queue, None)
                    if job is None:
                        break
                    key, start = job
                    view = tracker.view(shared=videos_per_step > 1)
                    try:
                        steps = start(view)
                    except Exception as exc:  # noqa: BLE001 - e.g. its detector cannot be set up
                        yield key, exc
                        continue
                    live.append(_Live(key, view, steps))
                    settled = False
            if not live:
                return
            failed = _encode_ahead(tracker.predictor, live)
            for video in [v for v in live if id(v) in failed]:
                video.steps.close()
                live.remove(video)
                yield video.key, failed[id(video)]
            for video, ended in zip(list(live), _step_all(rendezvous, live), strict=True):
                if ended is not None:
                    live.remove(video)
                    yield ended
    finally:  # closed early or interrupted: stop every live video (decode threads, states)
        for video in live:
            video.steps.close()
        rendezvous.close()


def _encode_ahead(predictor: Any, live: list[_Live]) -> dict[int, BaseException]:
    """Encode the next frame of every live video that knows it, in one call; return the
    videos (by ``id``) whose frame could not be read (they end with that error). If the batched
    call itself fails, nothing is cached and each video encodes its own frame in its
    step (where a failure stays that video's). A predictor that does not batch its encoder
    (on CPU, with the sparse encoder, ...: ``batches_encoder``) encodes them one call each,
    here on the scheduling thread, as a video tracked alone does on its own thread."""
    encode = getattr(predictor, "encode_frames", None)
    if encode is None:
        return {}
    ready, failed = [], {}
    for video in live:
        session = video.tracker.session
        if video.next_frame is None:
            continue
        try:
            session.state["images"][session.next_frame]  # decode now: a bad frame fails its video alone
        except Exception as exc:  # noqa: BLE001
            failed[id(video)] = exc
            continue
        ready.append(session)
    if len(ready) < 2:  # nothing to batch: each video encodes its own frame, as alone
        return failed
    t0 = time.perf_counter()
    try:
        encode([(s.state, s.next_frame) for s in ready], ahead=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("batched image encoding of %d videos failed (%s: %s); encoding one by one",
                    len(ready), type(exc).__name__, exc)
        return failed
    share = (time.perf_counter() - t0) * 1000.0 / len(ready)
    for s in ready:
        s.pending_ms += share
    return failed


def _step_all(rendezvous: Rendezvous, live: list[_Live]) -> list[tuple[Any, Any] | None]:
    """Step every live video once, with one memory-attention call per round of streams.

    Each video's step runs on a thread of its own (one of the run's step threads, kept
    for the whole run; :class:`~fastsam2.tracking.rendezvous.Rendezvous`), but only one
    thread runs at a time: a step runs until its streams (its objects, which meet first
    on the video's own thread) reach memory attention, where it posts their requests and
    waits, or until the step ends; then the next video's step runs. When every step waits
    or has ended, the waiting requests run as one batched call
    (:meth:`~fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor.condition_streams`),
    and the waiting steps resume one at a time, in order, until each waits again or ends.
    Without a predictor that batches pruned streams (stock sam2; ours dense, or on CPU, where
    batching was measured slower: :func:`~fastsam2.tracking.pruned_predictor.attention_batches_on`),
    or with one video, the steps simply run in order on this thread.
    """
    predictor = rendezvous.predictor
    if len(live) < 2 or not (getattr(predictor, "batches_attention", False) and predictor.pruning_active):
        return [_step(video) for video in live]
    outcomes = rendezvous.run_all([lambda v=video: _step(v) for video in live],
                                  trackers=[video.tracker for video in live])
    return [ended if raised is None else (video.key, raised)
            for video, (ended, raised) in zip(live, outcomes, strict=True)]
