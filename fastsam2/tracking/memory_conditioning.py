"""The pruned memory-conditioning step: which memory a frame reads, and the attention over it.

SAM2's ``_prepare_memory_conditioned_features`` picks the memory frames (prompted
frames plus the last ``num_maskmem - 1``), gathers their features, position
encodings and the object pointers, and runs memory attention over the dense grid.
Here the same selection is re-stated for memory stored pruned (each frame keeps
its own ``k`` tokens plus their indices, :data:`~fastsam2.tracking.memory_bank.INDICES_KEY`)
and the attention runs on the current frame's kept tokens only
(:func:`~fastsam2.tracking.subset_attention.memory_attention_subset`).

The step is split so several streams can share the attention: :func:`prepare_conditioning`
gathers one stream's request, :func:`condition` runs it alone, :func:`condition_streams`
runs many (videos x objects, stepped in lockstep) with one call per group of equal
shapes, and :func:`finish_conditioning` scatters the kept tokens back to the grid.

Functions take the SAM2 model (``sam``) as their first argument and read only its
configuration and stock submodules; with every token kept they reproduce the stock
step (``tests/test_pruning_exactness.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sam2.modeling.sam2_base import SAM2Base
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from torch import Tensor

from fastsam2.tracking.memory_bank import INDICES_KEY
from fastsam2.tracking.subset_attention import memory_attention_streams, memory_attention_subset


def memory_frames(sam: SAM2Base, frame_idx: int, output_dict: dict, track_in_reverse: bool):
    """Which memory frames to attend to, with their temporal position (as in stock SAM2)."""
    cond_outputs = output_dict["cond_frame_outputs"]
    assert len(cond_outputs) > 0
    selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, sam.max_cond_frames_in_attn)
    t_pos_and_prevs = [(0, out) for out in selected.values()]
    stride = 1 if sam.training else sam.memory_temporal_stride_for_eval
    for t_pos in range(1, sam.num_maskmem):
        t_rel = sam.num_maskmem - t_pos
        if t_rel == 1:
            prev_frame_idx = frame_idx + t_rel if track_in_reverse else frame_idx - t_rel
        elif not track_in_reverse:
            prev_frame_idx = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev_frame_idx = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        out = output_dict["non_cond_frame_outputs"].get(prev_frame_idx, None)
        if out is None:
            out = unselected.get(prev_frame_idx, None)
        t_pos_and_prevs.append((t_pos, out))
    return t_pos_and_prevs, selected, unselected


def object_pointers(sam: SAM2Base, frame_idx: int, output_dict: dict, num_frames: int | None,
                    track_in_reverse: bool, selected: dict, unselected: dict, B: int, device: torch.device):
    """Object-pointer tokens and their position embeddings (as in stock SAM2)."""
    C = sam.hidden_dim
    max_ptrs = min(num_frames, sam.max_obj_ptrs_in_encoder)
    if not sam.training and sam.only_obj_ptrs_in_the_past_for_eval:
        ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
    else:
        ptr_cond = selected
    sign = -1 if track_in_reverse else 1
    pos_and_ptrs = [
        ((frame_idx - t) * sign if sam.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o["obj_ptr"])
        for t, o in ptr_cond.items()
    ]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        o = output_dict["non_cond_frame_outputs"].get(t, unselected.get(t, None))
        if o is not None:
            pos_and_ptrs.append((t_diff, o["obj_ptr"]))
    if not pos_and_ptrs:
        return None, None
    pos_list, ptrs_list = zip(*pos_and_ptrs, strict=True)
    obj_ptrs = torch.stack(ptrs_list, dim=0)
    if sam.add_tpos_enc_to_obj_ptrs:
        t_diff_max = max_ptrs - 1
        tpos_dim = C if sam.proj_tpos_enc_in_obj_ptrs else sam.mem_dim
        obj_pos = torch.tensor(pos_list).to(device=device, non_blocking=True)
        obj_pos = get_1d_sine_pe(obj_pos / t_diff_max, dim=tpos_dim)
        obj_pos = sam.obj_ptr_tpos_proj(obj_pos)
        obj_pos = obj_pos.unsqueeze(1).expand(-1, B, sam.mem_dim)
    else:
        obj_pos = obj_ptrs.new_zeros(len(pos_list), B, sam.mem_dim)
    if sam.mem_dim < C:
        obj_ptrs = obj_ptrs.reshape(-1, B, C // sam.mem_dim, sam.mem_dim)
        obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(C // sam.mem_dim, dim=0)
    return obj_ptrs, obj_pos


@dataclass
class MemoryInputs:
    """One stream's memory for one frame: what memory attention reads besides the frame.

    ``tokens``/``pos`` [sum_i k_i + P, B, Cmem] are the memory frames' kept tokens (in
    the order of ``indices``, one entry per frame, None = dense) followed by
    ``num_ptr`` object-pointer tokens.
    """

    tokens: Tensor
    pos: Tensor
    indices: list[Tensor | None]
    num_ptr: int


def memory_inputs(sam: SAM2Base, frame_idx: int, output_dict: dict, num_frames: int | None,
                  track_in_reverse: bool, B: int, device: torch.device) -> MemoryInputs:
    """Gather a stream's memory frames (kept tokens, gathered position encodings) and pointers."""
    t_pos_and_prevs, selected, unselected = memory_frames(sam, frame_idx, output_dict, track_in_reverse)
    memory, memory_pos, memory_idx = [], [], []
    for t_pos, prev in t_pos_and_prevs:
        if prev is None:
            continue
        m = prev["maskmem_features"].to(device, non_blocking=True)
        memory.append(m.flatten(2).permute(2, 0, 1))
        enc = prev["maskmem_pos_enc"][-1].to(device).flatten(2)
        m_idx = prev.get(INDICES_KEY)
        if m_idx is not None:
            m_idx = m_idx.to(device=device, dtype=torch.long)
            enc = enc.index_select(2, m_idx)
        enc = enc.permute(2, 0, 1) + sam.maskmem_tpos_enc[sam.num_maskmem - t_pos - 1]
        memory_pos.append(enc)
        memory_idx.append(m_idx)
    num_ptr = 0
    if sam.use_obj_ptrs_in_encoder:
        ptrs, ptr_pos = object_pointers(
            sam, frame_idx, output_dict, num_frames, track_in_reverse, selected, unselected, B, device
        )
        if ptrs is not None:
            memory.append(ptrs)
            memory_pos.append(ptr_pos)
            num_ptr = ptrs.shape[0]
    return MemoryInputs(torch.cat(memory, dim=0), torch.cat(memory_pos, dim=0), memory_idx, num_ptr)


@dataclass
class ConditioningRequest:
    """One stream's memory-conditioning step, gathered and ready for attention.

    ``feats``/``pos`` [HW, B, C] are the frame's dense tokens, ``kept`` the kept flat
    indices (all of them when dense), ``memory`` what the stream's memory attention reads.
    ``stats`` is the frame stats record the step's time goes to (None: not collected).
    """

    feats: Tensor
    pos: Tensor
    grid: tuple[int, int]
    kept: Tensor
    memory: MemoryInputs
    stats: dict | None = None

    @property
    def dense(self) -> bool:
        return self.kept.numel() == self.feats.shape[0]

    @property
    def curr_indices(self) -> Tensor | None:
        return None if self.dense else self.kept

    def current(self) -> tuple[Tensor, Tensor]:
        """The kept current tokens and their position embeddings, [k, B, C]."""
        if self.dense:
            return self.feats, self.pos
        return self.feats.index_select(0, self.kept), self.pos.index_select(0, self.kept)

    @property
    def shape_key(self) -> tuple:
        """Streams with equal keys can share one attention call (batch dimension)."""
        return (self.kept.numel(), self.memory.tokens.shape[0], self.memory.num_ptr, self.grid,
                self.feats.shape[1], self.feats.dtype, self.memory.tokens.dtype)


def prepare_conditioning(sam: SAM2Base, frame_idx: int, feats: Tensor, pos: Tensor, grid: tuple[int, int],
                         output_dict: dict, num_frames: int | None, track_in_reverse: bool,
                         kept: Tensor) -> ConditioningRequest:
    """Gather what one stream's memory attention needs (its memory and kept tokens)."""
    mem = memory_inputs(sam, frame_idx, output_dict, num_frames, track_in_reverse, feats.shape[1], feats.device)
    return ConditioningRequest(feats, pos, grid, kept.to(feats.device), mem)


def finish_conditioning(sam: SAM2Base, req: ConditioningRequest, out: Tensor) -> Tensor:
    """The decoder's dense input [B, C, H, W] from the kept tokens' attention output:
    pruned positions get ``raw + no_mem_embed`` (what SAM2 feeds the decoder on
    memory-less frames)."""
    H, W = req.grid
    HW, B, C = req.feats.shape
    if not req.dense:
        full = (req.feats + sam.no_mem_embed).to(out.dtype)
        out = full.index_copy(0, req.kept, out)
    return out.permute(1, 2, 0).view(B, C, H, W)


def condition(sam: SAM2Base, req: ConditioningRequest) -> Tensor:
    """One stream's pruned memory conditioning (:func:`memory_attention_subset`)."""
    curr, curr_pos = req.current()
    mem = req.memory
    out = memory_attention_subset(
        sam.memory_attention, curr, curr_pos, mem.tokens, mem.pos, req.curr_indices, mem.indices, req.grid,
        mem.num_ptr,
    )
    return finish_conditioning(sam, req, out)


def condition_streams(sam: SAM2Base, requests: list[ConditioningRequest]) -> list[Tensor]:
    """Several streams' pruned memory conditioning, one attention call per shape group.

    Streams whose kept count, memory length and pointer count agree (all pruned
    streams share ``k``; memory lengths differ only while a video's bank fills up)
    are stacked on the batch dimension and run as one call
    (:func:`memory_attention_streams`, each row with its own RoPE tables); a stream
    with no partner runs alone. No padding: a padded key would change the softmax
    unless masked, and grouping is exact. Results come back in request order.
    """
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.shape_key if req.feats.shape[1] == 1 else ("alone", i), []).append(i)
    results: list[Tensor | None] = [None] * len(requests)
    for members in groups.values():
        if len(members) == 1:
            results[members[0]] = condition(sam, requests[members[0]])
            continue
        reqs = [requests[i] for i in members]
        currents = [r.current() for r in reqs]
        out = memory_attention_streams(
            sam.memory_attention,
            torch.cat([c for c, _ in currents], dim=1),
            torch.cat([p for _, p in currents], dim=1),
            torch.cat([r.memory.tokens for r in reqs], dim=1),
            torch.cat([r.memory.pos for r in reqs], dim=1),
            [r.curr_indices for r in reqs],
            [r.memory.indices for r in reqs],
            reqs[0].grid,
            reqs[0].memory.num_ptr,
        )
        for j, (i, req) in enumerate(zip(members, reqs, strict=True)):
            results[i] = finish_conditioning(sam, req, out[:, j:j + 1])
    return results  # type: ignore[return-value]
