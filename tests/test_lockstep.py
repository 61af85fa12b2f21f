"""Several videos per tracker in lockstep equal tracking them one by one.

SAM2.1 hiera-t with RANDOM weights at 256 px, fp32 on CPU (masks are meaningless,
numerics are real). Videos have different lengths, so one ends mid-way and the
next from the queue takes its place; one video's frames fail mid-way and it must
fail alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from fastsam2.config import ObjectPrompt
from fastsam2.models.factory import load_sam2
from fastsam2.synthetic import first_frame_prompts, make_video
from fastsam2.tracking import memory_conditioning
from fastsam2.tracking.lockstep import run_lockstep
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.tracking.streaming import StreamingTracker

H, W = 64, 80
#: (name, frames, objects, frame at which decoding fails or None)
VIDEOS = [("a", 4, 1, None), ("b", 2, 2, None), ("bad", 3, 1, 2), ("c", 3, 1, None)]
FEATURE_TOL = 1e-5


class DecodeError(RuntimeError):
    pass


@pytest.fixture(scope="module")
def predictor():
    return load_sam2("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True,
                     predictor_target=PREDICTOR_TARGET).model


def _video(name: str, n: int, objects: int, fail_at: int | None):
    video = make_video(name, num_frames=n, height=H, width=W, num_objects=objects, seed=len(name) * 7 + n)
    prompts = [ObjectPrompt(obj_id=p["obj_id"], point=p["point"]) for p in first_frame_prompts(video)]

    def frames():
        for i, f in enumerate(video.frames):
            if i == fail_at:
                raise DecodeError(f"corrupt frame {i} of {name}")
            yield f

    return frames, n, prompts


def _track(tracker: StreamingTracker, spec):
    """One video's coroutine: per frame, its masks plus every object's memory and pointer."""
    frames, n, prompts = _video(*spec)
    records = []
    for fr in tracker.track(frames(), n, H, W, prompts):
        state = tracker.session.state
        memory = {}
        for obj_idx, out in state["output_dict_per_obj"].items():
            entry = out["cond_frame_outputs"].get(fr.frame_idx) or out["non_cond_frame_outputs"][fr.frame_idx]
            memory[obj_idx] = (entry["maskmem_features"].float().clone(), entry["obj_ptr"].float().clone())
        records.append((fr.frame_idx, fr.masks.copy(), memory, fr.stats.get("encoder_calls")))
        yield fr.frame_idx
    return records


def _one_by_one(predictor, videos=VIDEOS):
    """The reference: each video alone, each of its objects after the other (as sam2 tracks them)."""
    tracker = StreamingTracker(predictor)
    out = {}
    before, predictor.attention_batching = predictor.attention_batching, False
    try:
        for spec in videos:
            steps = _track(tracker, spec)
            try:
                while True:
                    next(steps)
            except StopIteration as done:
                out[spec[0]] = done.value
            except DecodeError as exc:
                out[spec[0]] = exc
    finally:
        predictor.attention_batching = before
    return out


class _CountStreams:
    """Counts the streams of every batched memory-attention call (``memory_attention_streams``)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.original = memory_conditioning.memory_attention_streams

    def __enter__(self) -> list[int]:
        def counting(memory_attention, curr, *args):
            self.calls.append(curr.shape[1])
            return self.original(memory_attention, curr, *args)

        memory_conditioning.memory_attention_streams = counting
        return self.calls

    def __exit__(self, *exc) -> None:
        memory_conditioning.memory_attention_streams = self.original


def _assert_same_tracking(ours, ref, name: str, n: int, objects: int) -> None:
    """Masks equal, memory features and object pointers within FEATURE_TOL, every frame encoded once."""
    assert [r[0] for r in ours] == [r[0] for r in ref] == list(range(n))
    for (t, masks, memory, calls), (_, ref_masks, ref_memory, ref_calls) in zip(ours, ref):
        assert masks.shape[0] == objects
        np.testing.assert_array_equal(masks, ref_masks, err_msg=f"{name} frame {t}")
        assert calls == ref_calls == 1, f"{name} frame {t}: every frame is encoded exactly once"
        for obj_idx, (feats, ptr) in memory.items():
            ref_feats, ref_ptr = ref_memory[obj_idx]
            assert feats.shape == ref_feats.shape
            torch.testing.assert_close(feats, ref_feats, atol=FEATURE_TOL, rtol=0)
            torch.testing.assert_close(ptr, ref_ptr, atol=FEATURE_TOL, rtol=0)


def _lockstep(predictor, per_step: int):
    jobs = [(spec[0], lambda view, spec=spec: _track(view, spec)) for spec in VIDEOS]
    return dict(run_lockstep(StreamingTracker(predictor), jobs, videos_per_step=per_step))


@pytest.fixture
def batched_streams(predictor):
    """The GPU's path on CPU: streams share one memory-attention call (on CPU the device rule,
    :func:`attention_batches_on`, runs one call per stream)."""
    predictor.attention_batching = True
    yield predictor
    predictor.attention_batching = None


@pytest.mark.parametrize("keep, batching", [(0.3, True), (1.0, True), (0.3, None)],
                         ids=["keep0.3-batched", "keep1.0-batched", "keep0.3-cpu-rule"])
def test_lockstep_equals_one_by_one(predictor, keep, batching):
    """``batching=True`` runs the GPU's path on CPU (one encoder call over the live videos'
    frames, one memory-attention call over their streams); None follows the device rules,
    which on CPU encode each frame alone and run each stream's attention alone."""
    predictor.configure_pruning(keep_ratio=keep)
    reference = _one_by_one(predictor)

    batch_sizes: list[int] = []
    forward_image = predictor.forward_image

    def counting(img_batch):
        batch_sizes.append(img_batch.shape[0])
        return forward_image(img_batch)

    predictor.forward_image = counting
    predictor.encoder_batching = predictor.attention_batching = batching
    try:
        with _CountStreams() as attention_streams:
            batched = _lockstep(predictor, per_step=3)
    finally:
        del predictor.forward_image
        predictor.encoder_batching = predictor.attention_batching = None
    if batching is None:  # on CPU every stream alone (attention_batches_on)
        assert attention_streams == []
    elif keep < 1.0:
        # one attention call over every (video, object) stream of a step: a, b's two objects and
        # bad on frame 1 (later rounds group by memory length while the banks fill)
        assert attention_streams[0] == 4, attention_streams
    else:  # dense streams run sam2's own attention, one per stream (bit-identical to stock)
        assert attention_streams == []
    if batching:
        # a, b, bad start (their prompt frames: 1 each); frame 1 of all three in one call; b ends
        # and c takes its slot (prompt frame: 1); frame 2 of a and frame 1 of c (bad's frame 2
        # fails to decode: it ends alone); frame 3 of a with frame 2 of c.
        assert batch_sizes == [1, 1, 1, 3, 1, 2, 2]
    else:  # on CPU each frame alone (encoder_batches_on): 4 prompt frames, 7 tracked ones
        assert batch_sizes == [1] * 11
    assert set(batched) == {spec[0] for spec in VIDEOS}

    assert isinstance(batched["bad"], DecodeError) and isinstance(reference["bad"], DecodeError)
    for name, n, objects, _ in (v for v in VIDEOS if v[3] is None):
        _assert_same_tracking(batched[name], reference[name], name, n, objects)


def _object_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("object-step")]


@pytest.mark.parametrize("keep", [0.3, 0.1])
def test_objects_of_one_video_meet_in_one_attention_call_per_frame(predictor, batched_streams, keep):
    """Pruned, a video's objects step together on each frame: one memory-attention call over
    all of them (not one per object), with results equal to one object after another, and the
    object step threads gone when the video ends."""
    predictor.configure_pruning(keep_ratio=keep)
    spec = ("trio", 5, 3, None)
    reference = _one_by_one(predictor, [spec])["trio"]
    with _CountStreams() as attention_streams:
        steps = _track(StreamingTracker(predictor), spec)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            ours = done.value
    assert attention_streams == [3] * 4, attention_streams  # frames 1-4, three objects each
    _assert_same_tracking(ours, reference, "trio", 5, 3)
    assert not _object_threads()


def test_lockstep_rejects_zero_videos(predictor):
    with pytest.raises(ValueError, match="videos_per_step must be at least 1"):
        list(run_lockstep(StreamingTracker(predictor), [], videos_per_step=0))


def _request(predictor, gen: torch.Generator, k: int, memory_frames: int, pointers: int):
    """A stream's conditioning request with random tokens: ``memory_frames`` pruned frames of
    ``k`` kept tokens each (their own indices) plus ``pointers`` object pointers."""
    from fastsam2.tracking.memory_conditioning import ConditioningRequest, MemoryInputs

    side = predictor.sam_image_embedding_size
    n, C, Cm = side * side, predictor.hidden_dim, predictor.mem_dim
    kept = torch.randperm(n, generator=gen)[:k].sort().values if k < n else torch.arange(n)
    indices = [torch.randperm(n, generator=gen)[:k].sort().values for _ in range(memory_frames)]
    m = memory_frames * k + 4 * pointers
    memory = MemoryInputs(torch.randn(m, 1, Cm, generator=gen), torch.randn(m, 1, Cm, generator=gen),
                          indices, 4 * pointers)
    return ConditioningRequest(torch.randn(n, 1, C, generator=gen), torch.randn(n, 1, C, generator=gen),
                               (side, side), kept, memory)


def test_streams_attention_equals_each_stream_alone(predictor):
    """Grouping by shape: two groups of different memory lengths, a dense stream and a stream
    of its own; every row's RoPE tables are its own (kept tokens differ per stream)."""
    from fastsam2.tracking.memory_conditioning import condition, condition_streams

    gen = torch.Generator().manual_seed(0)
    n = predictor.sam_image_embedding_size ** 2
    k = round(0.3 * n)
    shapes = [(k, 2, 3), (k, 2, 3), (k, 3, 3), (k, 2, 3), (k, 3, 3), (n, 1, 2), (k, 1, 1)]
    requests = [_request(predictor, gen, *shape) for shape in shapes]
    with torch.inference_mode():
        together = condition_streams(predictor, requests)
        alone = [condition(predictor, r) for r in requests]
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        torch.testing.assert_close(a, b, atol=FEATURE_TOL, rtol=0, msg=f"stream {i}")


def _timed(tracker: StreamingTracker, spec, times: list[float]):
    frames, n, prompts = _video(*spec)
    for fr in tracker.track(frames(), n, H, W, prompts):
        times.append(fr.ms_total)
        yield fr.frame_idx
    return len(times)


def test_lockstep_frame_times_are_not_counted_twice(predictor, batched_streams):
    """Each video's ``ms_total`` holds its own work and its share of the batched calls, not the
    time it waited while the other videos stepped: summed over every frame of every video they
    stay within the wall time of the whole lockstep run (counted once per video they would be
    about V times more)."""
    predictor.configure_pruning(keep_ratio=0.3)
    times: list[float] = []
    specs = [("a", 4, 1, None), ("b", 4, 2, None), ("c", 4, 1, None)]
    jobs = [(spec[0], lambda view, spec=spec: _timed(view, spec, times)) for spec in specs]
    t0 = time.perf_counter()
    done = dict(run_lockstep(StreamingTracker(predictor), jobs, videos_per_step=3))
    wall_ms = (time.perf_counter() - t0) * 1000.0
    assert set(done) == {"a", "b", "c"} and len(times) == 12
    assert all(t > 0 for t in times), times
    assert sum(times) <= 1.05 * wall_ms, (sum(times), wall_ms)


def _step_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lockstep-step")]


def test_lockstep_steps_run_on_long_lived_threads(predictor, batched_streams):
    """Round after round, the steps go to the run's few step threads, not to a fresh thread
    per video per step (each new thread starts a new OpenMP team and malloc arena: slower on
    CPU), and those threads stop when the run ends."""
    predictor.configure_pruning(keep_ratio=0.3)
    ran_on: list[threading.Thread] = []  # held, so a dead thread's id cannot come back

    def steps(view, spec):
        for t in _track(view, spec):
            ran_on.append(threading.current_thread())
            yield t

    specs = [("a", 4, 1, None), ("c", 4, 1, None)]
    done = dict(run_lockstep(StreamingTracker(predictor), [(s[0], lambda v, s=s: steps(v, s)) for s in specs],
                             videos_per_step=2))
    assert set(done) == {"a", "c"} and len(ran_on) == 8
    workers = {t for t in ran_on if t is not threading.main_thread()}
    assert len(workers) == 2, f"3 lockstep rounds of 2 videos ran on {len(workers)} threads"
    assert not any(t.is_alive() for t in workers) and not _step_threads()


def test_closing_lockstep_early_closes_its_live_videos(predictor, batched_streams):
    """A lockstep run abandoned mid-way (the actor is told to stop) closes every live video's
    tracking generator, so their decode threads and states go at once, not at garbage collection
    (the test holds a reference to each generator to tell the two apart)."""
    predictor.configure_pruning(keep_ratio=0.3)
    closed: list[str] = []
    held = []

    def steps(view, spec):
        try:
            yield from _track(view, spec)
        finally:
            closed.append(spec[0])

    def start(view, spec):
        held.append(steps(view, spec))
        return held[-1]

    specs = [("a", 4, 1, None), ("c", 2, 1, None)]
    run = run_lockstep(StreamingTracker(predictor), [(s[0], lambda v, s=s: start(v, s)) for s in specs],
                       videos_per_step=2)
    key, _ = next(run)  # c ends first; a is still live
    assert key == "c" and closed == ["c"]
    run.close()
    assert closed == ["c", "a"]
    assert not _step_threads(), "closing the run stops its step threads"


def test_objects_stepped_together_run_under_the_callers_torch_modes(predictor, batched_streams):
    """Autocast and inference mode are per thread in torch: a frame's objects, stepped on the
    video's object threads, must run under the modes of the thread that propagates (here a
    user's own ``torch.autocast``, as sam2's README wraps propagation), not under none."""
    predictor.configure_pruning(keep_ratio=0.3)
    frames, n, prompts = _video("trio", 3, 3, None)
    seen: list[tuple[str, bool, bool, torch.dtype]] = []
    run_object = predictor._run_object

    def recording(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.is_inference_mode_enabled(),
                     torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return run_object(*args, **kwargs)

    predictor._run_object = recording
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for _ in StreamingTracker(predictor).track(frames(), n, H, W, prompts):
                pass
    finally:
        del predictor._run_object
    on_threads = [s for s in seen if s[0].startswith("object-step")]
    assert len(on_threads) == 3 * 2, seen  # frames 1 and 2, three objects each
    assert all(s[1:] == (True, True, torch.bfloat16) for s in on_threads), on_threads


def test_closing_a_video_mid_way_stops_its_object_threads(predictor, batched_streams):
    """A multi-object video abandoned after two frames (its generator closed, as an actor told
    to stop does) leaves no object step thread behind."""
    predictor.configure_pruning(keep_ratio=0.3)
    frames, n, prompts = _video("trio", 5, 3, None)
    run = StreamingTracker(predictor).track(frames(), n, H, W, prompts)
    next(run), next(run)
    assert _object_threads(), "frame 1's three objects stepped on object threads"
    run.close()
    assert not _object_threads()
