"""Bounded memory for SAM2's inference state: evict what can never be read again.

Stock SAM2 keeps every frame's output (memory features, a 4x-upsampled mask
logit map, the object pointer) for the whole video, so memory grows with video
length. During forward propagation, ``_prepare_memory_conditioned_features``
only ever reads:

- the conditioning (prompted) frames,
- the last ``num_maskmem - 1`` non-conditioning frames (times the temporal
  stride) for mask memory,
- object pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames.

So after frame ``t`` is produced we drop memory features and masks of frames
older than the mask window, and whole entries older than the pointer window.
Memory then stays constant however long the video is.
"""

from __future__ import annotations

import torch

# Per-frame keys that only the mask-memory window reads (obj_ptr and scores stay longer).
_MASK_WINDOW_KEYS = ("maskmem_features", "maskmem_pos_enc", "pred_masks", "maskmem_indices")


def windows(predictor) -> tuple[int, int]:
    """(mask-memory window, pointer window), in frames back from the next frame."""
    stride = max(1, int(getattr(predictor, "memory_temporal_stride_for_eval", 1)))
    mask_window = (predictor.num_maskmem - 1) * stride + 1
    ptr_window = max(mask_window, int(predictor.max_obj_ptrs_in_encoder))
    return mask_window, ptr_window


def evict_unreachable(predictor, inference_state: dict, frame_idx: int) -> int:
    """Drop per-frame outputs that no later (forward) frame can read; return entries touched."""
    mask_window, ptr_window = windows(predictor)
    next_frame = frame_idx + 1
    touched = 0
    for obj_idx, obj_out in inference_state["output_dict_per_obj"].items():
        non_cond = obj_out["non_cond_frame_outputs"]
        for t in list(non_cond):
            age = next_frame - t
            if age >= ptr_window:
                del non_cond[t]
                touched += 1
            elif age > mask_window and non_cond[t].get("pred_masks") is not None:
                out = non_cond[t]
                for key in _MASK_WINDOW_KEYS:
                    if key in out:
                        out[key] = None
                touched += 1
        tracked = inference_state["frames_tracked_per_obj"].get(obj_idx, {})
        for t in [t for t in tracked if next_frame - t >= ptr_window]:
            del tracked[t]
    return touched


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0


def memory_bank_bytes(inference_state: dict) -> int:
    """Bytes held in per-frame outputs (memory features, kept indices, masks, pointers).

    ``maskmem_pos_enc`` is a view of one cached constant, so it is not counted per
    frame. Works for stock and pruned predictors alike.
    """
    total = 0
    for obj_out in inference_state["output_dict_per_obj"].values():
        for bucket in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for out in obj_out[bucket].values():
                for key, value in out.items():
                    if key != "maskmem_pos_enc":
                        total += _tensor_bytes(value)
    return total


def frame_entry_bytes(inference_state: dict, frame_idx: int) -> int:
    """Bytes one frame adds to the bank (all objects): what stock SAM2 accumulates per frame."""
    total = 0
    for obj_out in inference_state["output_dict_per_obj"].values():
        for bucket in ("cond_frame_outputs", "non_cond_frame_outputs"):
            out = obj_out[bucket].get(frame_idx)
            if out:
                total += sum(_tensor_bytes(v) for k, v in out.items() if k != "maskmem_pos_enc")
    return total
