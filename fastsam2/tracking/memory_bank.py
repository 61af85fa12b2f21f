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

import os
from typing import Any

import torch
from torch import Tensor

#: Key of a frame's kept-token indices in its output dict (pruned predictor only).
INDICES_KEY = "maskmem_indices"

# Per-frame keys that only the mask-memory window reads (obj_ptr and scores stay longer).
_MASK_WINDOW_KEYS = ("maskmem_features", "maskmem_pos_enc", "pred_masks", INDICES_KEY)


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


def process_memory_bytes(device: torch.device | str | None = None) -> int:
    """CUDA peak allocated bytes on GPU, current process RSS on CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, Tensor) else 0


def memory_bank_stats(inference_state: dict[str, Any]) -> dict[str, int | float]:
    """Bytes held per kind across all objects and frames, plus bytes per stored frame.

    Works for the stock predictor too (dense memory, no indices). ``bank_bytes``
    is what memory attention reads (features + indices + object pointers);
    ``mask_bytes`` the stored low-res mask logits. ``bank_bytes_per_frame`` is one
    memory frame (features + indices + pointer), averaged over the frames whose
    features are still held: entries past the mask window keep only a pointer.
    """
    feats = idx = ptr = masks = 0
    frames = held = 0
    for obj_out in inference_state.get("output_dict_per_obj", {}).values():
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for out in obj_out[key].values():
                f, i, p = (_nbytes(out.get(k)) for k in ("maskmem_features", INDICES_KEY, "obj_ptr"))
                feats, idx, ptr = feats + f, idx + i, ptr + p
                masks += _nbytes(out.get("pred_masks"))
                if f:
                    frames += 1
                    held += f + i + p
    bank = feats + idx + ptr
    return {
        "bank_bytes": bank,
        "feature_bytes": feats,
        "index_bytes": idx,
        "obj_ptr_bytes": ptr,
        "mask_bytes": masks,
        "total_bytes": bank + masks,
        "frames": frames,
        "bank_bytes_per_frame": held / frames if frames else 0.0,
    }


def memory_bank_bytes(inference_state: dict[str, Any], include_masks: bool = True) -> int:
    """Bytes of maskmem_features + indices + obj_ptr (+ pred_masks) over all objects and frames."""
    s = memory_bank_stats(inference_state)
    return int(s["total_bytes"] if include_masks else s["bank_bytes"])



def frame_entry_bytes(inference_state: dict[str, Any], frame_idx: int) -> int:
    """Bank bytes one frame adds (features + indices + object pointer, all objects).

    This is what stock SAM2 accumulates per frame for the whole video.
    """
    total = 0
    for obj_out in inference_state["output_dict_per_obj"].values():
        for bucket in ("cond_frame_outputs", "non_cond_frame_outputs"):
            out = obj_out[bucket].get(frame_idx) or {}
            total += sum(_nbytes(out.get(k)) for k in ("maskmem_features", INDICES_KEY, "obj_ptr"))
    return total
