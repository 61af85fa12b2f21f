"""Background decoding: ordered, bounded, errors reach the consumer, no thread outlives its video."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from fastsam2.prefetch import Prefetcher
from fastsam2.sources import VideoReadError


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastsam2-decode")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    gc.collect()
    deadline = time.monotonic() + 2.0
    while decode_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not decode_threads(), "a decode thread outlived its consumer"


def test_yields_every_item_in_order_then_stops():
    pf = Prefetcher(range(20), transform=lambda x: x * 2, depth=3)
    assert list(pf) == [2 * i for i in range(20)]
    assert not pf._thread.is_alive()
    assert list(pf) == []  # exhausted stays exhausted


def test_queue_stays_bounded_while_consumer_is_slow():
    made = []

    def source():
        for i in range(1000):
            made.append(i)
            yield i

    with Prefetcher(source(), depth=2) as pf:
        time.sleep(0.3)
        assert pf.maxsize == 2
        assert len(made) <= 2 + 1  # queued + the one waiting to be queued
        assert next(pf) == 0


def test_source_error_reaches_consumer_after_earlier_items():
    released = []

    def source():
        try:
            yield 0
            yield 1
            raise VideoReadError("frame 2 is corrupt")
        finally:
            released.append(True)

    pf = Prefetcher(source(), depth=4)
    assert next(pf) == 0 and next(pf) == 1
    with pytest.raises(VideoReadError, match="frame 2 is corrupt"):
        next(pf)
    assert released == [True]
    with pytest.raises(StopIteration):
        next(pf)


def test_transform_error_reaches_consumer():
    def bad(x):
        if x == 3:
            raise ValueError("cannot preprocess 3")
        return x

    with pytest.raises(ValueError, match="cannot preprocess 3"):
        list(Prefetcher(range(10), transform=bad))


def test_close_early_stops_a_blocked_thread_and_releases_the_source():
    released = []

    def source():
        try:
            yield from range(10_000)
        finally:
            released.append(True)

    pf = Prefetcher(source(), depth=1)
    assert next(pf) == 0
    time.sleep(0.05)  # the thread is now blocked on the full queue
    pf.close()
    assert not pf._thread.is_alive() and released == [True]


def test_tracker_surfaces_decode_errors_and_leaves_no_thread():
    """SAM2 with RANDOM weights, 128 px: a reader that fails mid-video fails the track call."""
    import numpy as np

    from fastsam2.config import ObjectPrompt
    from fastsam2.models.factory import load_sam2
    from fastsam2.synthetic import first_frame_prompts, make_video
    from fastsam2.tracking.streaming import StreamingTracker

    video = make_video("v", num_frames=4, height=64, width=64, seed=1)
    prompt = first_frame_prompts(video)[0]

    def frames():
        yield video.frames[0]
        yield video.frames[1]
        raise VideoReadError("decoding v.mp4 failed: invalid data at frame 2")

    p = load_sam2("sam2.1_hiera_t", image_size=128, device="cpu", random_weights=True).model
    tracker = StreamingTracker(p)
    seen = []
    with pytest.raises(VideoReadError, match="invalid data at frame 2"):
        for r in tracker.track(frames(), 4, 64, 64, [ObjectPrompt(obj_id=1, point=prompt["point"])]):
            seen.append(r.frame_idx)
    assert seen == [0, 1]
    # stopping early (consumer breaks off) also ends the thread
    gen = tracker.track(iter(video.frames), 4, 64, 64, [ObjectPrompt(obj_id=1, point=prompt["point"])])
    assert next(gen).masks.shape == (1, 64, 64) and isinstance(np.asarray(video.frames[0]), np.ndarray)
    gen.close()
