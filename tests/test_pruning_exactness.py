"""Keep ratio 1.0 reproduces stock SAM2 exactly (same weights, click prompt, 4 frames).

Two paths are checked: the default one (sam2's own code plus timers) and the
pruned code path forced with every token kept (our memory gathering, RoPE
gathered by index, our memory-attention forward).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastsam2.models.sam2 import STOCK_PREDICTOR
from fastsam2.schema import COMPONENTS
from fastsam2.tracking.memory_bank import memory_bank_bytes
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET, STATS_KEY
from helpers import tiny_sam2, track_from_frame0, write_disc_video

NUM_FRAMES = 4
CLICK = [[48.0, 60.0]]


def track(target: str, video: Path, **pruning) -> tuple[dict, dict[int, torch.Tensor]]:
    predictor = tiny_sam2(target)
    if pruning:
        predictor.configure_pruning(**pruning)
    return track_from_frame0(predictor, video, clicks={1: CLICK})


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_disc_video(tmp_path_factory.mktemp("exact") / "video", NUM_FRAMES)


@pytest.fixture(scope="module")
def stock(video):
    return track(STOCK_PREDICTOR, video)


def assert_identical(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (sa, ma), (sb, mb) = a, b
    assert ma.keys() == mb.keys() == set(range(NUM_FRAMES))
    for f in ma:
        assert torch.equal(ma[f], mb[f]), f"video-res masks differ on frame {f}"
    oa, ob = sa["output_dict_per_obj"][0], sb["output_dict_per_obj"][0]
    for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
        assert oa[key].keys() == ob[key].keys()
        for t in oa[key]:
            x, y = oa[key][t], ob[key][t]
            assert torch.equal(x["pred_masks"], y["pred_masks"]), (key, t)
            assert torch.equal(x["maskmem_features"], y["maskmem_features"]), (key, t)
            assert torch.equal(x["obj_ptr"], y["obj_ptr"]), (key, t)
            assert torch.equal(x["object_score_logits"], y["object_score_logits"]), (key, t)
            assert y.get("maskmem_indices") is None


def test_keep_one_is_stock_bit_for_bit(video, stock):
    ours = track(PREDICTOR_TARGET, video, keep_ratio=1.0)
    assert_identical(stock, ours)
    # The stats path only adds timers: every frame has every component key.
    stats = ours[0][STATS_KEY]
    assert set(stats) == set(range(NUM_FRAMES))
    for f, s in stats.items():
        assert all(f"ms_{c}" in s for c in COMPONENTS)
        assert s["tokens_kept"] == s["tokens_total"] == 16 * 16
    assert stats[1]["ms_memory_attention"] > 0 and stats[1]["ms_image_encoder"] > 0
    assert memory_bank_bytes(ours[0]) == memory_bank_bytes(stock[0])


def test_pruned_code_path_with_every_token_kept_is_stock(video, stock):
    ours = track(PREDICTOR_TARGET, video, keep_ratio=1.0, subset_at_full_keep=True)
    assert_identical(stock, ours)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_neck_hands_out_its_encodings_without_copying_them(dtype):
    """Our predictor's image-encoder positions are one tensor per size and dtype, handed out as
    views (stock copies them every call, and again into bf16 under autocast); the values are what
    the stock neck produces (``position_encoding(x).to(x.dtype)``), so the tests above hold."""
    stock_neck, ours_neck = tiny_sam2(STOCK_PREDICTOR).image_encoder.neck, tiny_sam2(PREDICTOR_TARGET).image_encoder.neck
    x = torch.zeros(2, 8, 48, 48, dtype=dtype)
    first, second = ours_neck.position_encoding(x), ours_neck.position_encoding(x)
    assert first.dtype == dtype and first.data_ptr() == second.data_ptr()  # nothing copied for the second frame
    assert first.untyped_storage().nbytes() == first[0].numel() * first.element_size()  # one copy for the batch
    assert first.to(dtype).data_ptr() == first.data_ptr()  # the neck's own .to(dtype) is free
    want = stock_neck.position_encoding(x)
    assert want.data_ptr() != stock_neck.position_encoding(x).data_ptr()  # stock copies every call
    assert torch.equal(first, want.to(dtype))


def test_the_trunk_interpolates_its_position_embedding_once_per_weights():
    """Our predictor's Hiera computes its interpolated position embedding once (stock redoes it
    every frame): the same values as stock's, the same tensor for the next frame, and new
    values as soon as new weights are loaded (a cache keyed on the grid alone would serve the
    random initialisation's embedding after a checkpoint load)."""
    from sam2.modeling.backbones.hieradet import Hiera

    stock, ours = tiny_sam2(STOCK_PREDICTOR).image_encoder.trunk, tiny_sam2(PREDICTOR_TARGET).image_encoder.trunk
    assert type(stock) is Hiera and isinstance(ours, Hiera)
    with torch.no_grad():
        ours.load_state_dict(stock.state_dict())
        first, second = ours._get_pos_embed((64, 64)), ours._get_pos_embed((64, 64))
        assert first.data_ptr() == second.data_ptr()
        assert torch.equal(first, stock._get_pos_embed((64, 64)))
        stock.pos_embed.add_(1.0)
        ours.load_state_dict(stock.state_dict())
        assert torch.equal(ours._get_pos_embed((64, 64)), stock._get_pos_embed((64, 64)))
        assert torch.equal(ours._get_pos_embed((32, 32)), stock._get_pos_embed((32, 32)))  # another grid
        ours.double(), stock.double()  # a move drops the cache: values in the new dtype
        assert torch.equal(ours._get_pos_embed((32, 32)), stock._get_pos_embed((32, 32)))
