"""The streaming tracker: same masks as stock SAM2, bounded memory, prompt validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsam2.config import ObjectPrompt
from fastsam2.models.factory import load_sam2
from fastsam2.sources import FrameReader, discover
from fastsam2.synthetic import first_frame_prompts, make_video, write_frames
from fastsam2.tracking.memory_bank import windows
from fastsam2.tracking.streaming import PromptError, StreamedFrames, StreamingTracker


@pytest.fixture(scope="module")
def predictor():
    return load_sam2("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True).model


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("v")
    video = make_video("v", num_frames=5, height=96, width=128, seed=3)
    write_frames(video, root, fmt="jpg")  # stock init_state reads <int>.jpg folders
    return root, video


def test_streamed_masks_equal_stock_sam2(predictor, video_dir):
    root, video = video_dir
    task = discover([str(root)])[0]
    reader = FrameReader(task)
    prompt = first_frame_prompts(video)[0]
    objs = [ObjectPrompt(obj_id=1, point=prompt["point"], box=prompt["box"])]
    ours = list(StreamingTracker(predictor).track(iter(reader), reader.info.num_frames, 96, 128, objs))

    state = predictor.init_state(task.uri)
    predictor.add_new_points_or_box(state, 0, 1, points=np.array([prompt["point"]], np.float32),
                                    labels=np.array([1], np.int32), box=np.array(prompt["box"], np.float32))
    stock = [(f, (m[:, 0] > 0).numpy()) for f, _, m in predictor.propagate_in_video(state)]

    assert [r.frame_idx for r in ours] == [f for f, _ in stock] == list(range(5))
    for r, (_, m) in zip(ours, stock):
        assert r.masks.shape == (1, 96, 128)
        np.testing.assert_array_equal(r.masks, m)


def test_memory_bank_stops_growing_once_windows_are_full(predictor):
    """Stock keeps every frame; ours plateaus after the pointer window."""
    _, ptr_window = windows(predictor)
    n = ptr_window + 6
    video = make_video("long", num_frames=n, height=64, width=64, seed=4)
    prompt = first_frame_prompts(video)[0]
    objs = [ObjectPrompt(obj_id=1, point=prompt["point"])]
    small = load_sam2("sam2.1_hiera_t", image_size=128, device="cpu", random_weights=True).model
    bounded = [r.memory_bank_bytes for r in StreamingTracker(small).track(video.frames, n, 64, 64, objs)]
    unbounded = [r.memory_bank_bytes for r in StreamingTracker(small, bounded_memory=False).track(video.frames, n, 64, 64, objs)]
    assert unbounded[-1] > unbounded[ptr_window] > unbounded[1]  # grows linearly
    assert bounded[-1] == bounded[-2] == bounded[ptr_window + 1]  # constant once full
    assert bounded[-1] < 0.6 * unbounded[-1]


def test_streamed_frames_are_read_once_in_order():
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(3)]
    images = StreamedFrames(frames, 3, 32)
    assert images[0].shape == (3, 32, 32)
    assert images[2] is images[2]
    with pytest.raises(IndexError, match="already streamed"):
        images[1]


@pytest.mark.parametrize(
    "obj,match",
    [
        (ObjectPrompt(point=[200, 10]), "outside"),
        (ObjectPrompt(box=[10, 10, 5, 40]), "empty or outside"),
        (ObjectPrompt(), "neither a point nor a box"),
    ],
)
def test_bad_prompts_are_rejected_before_tracking(predictor, obj, match):
    with pytest.raises(PromptError, match=match):
        next(StreamingTracker(predictor).track(iter([]), 3, 96, 128, [obj]))


def test_no_prompt_is_a_named_error(predictor):
    with pytest.raises(PromptError, match="no prompt"):
        next(StreamingTracker(predictor).track(iter([]), 3, 96, 128, []))


def test_bank_bytes_count_memory_features(predictor, video_dir):
    root, video = video_dir
    prompt = first_frame_prompts(video)[0]
    results = list(StreamingTracker(predictor).track(video.frames[:2], 2, 96, 128, [ObjectPrompt(point=prompt["point"])]))
    # per frame: 64 x (256/16)^2 bf16 memory features at least
    assert results[1].frame_bank_bytes >= 64 * 16 * 16 * 2
    assert results[1].memory_bank_bytes > results[0].memory_bank_bytes
    assert isinstance(torch.get_num_threads(), int)


def test_prompt_on_a_later_frame_tracks_from_there(predictor):
    video = make_video("late", num_frames=4, height=64, width=64, seed=5)
    prompt = first_frame_prompts(video)[0]
    objs = [ObjectPrompt(obj_id=1, point=prompt["point"], frame_idx=2)]
    results = list(StreamingTracker(predictor).track(video.frames, 4, 64, 64, objs))
    assert [r.frame_idx for r in results] == [2, 3]
    with pytest.raises(PromptError, match="outside the video"):
        next(StreamingTracker(predictor).track(video.frames, 4, 64, 64, [ObjectPrompt(point=[1, 1], frame_idx=4)]))
