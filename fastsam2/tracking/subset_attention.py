"""Memory attention on a subset of tokens, with RoPE positions gathered by index.

Stock ``RoPEAttention.forward`` infers a square grid from the *query count*
(``w = h = sqrt(N)``) and repeats the query frequencies for the keys. With a
pruned subset of queries that silently rebuilds frequencies for a fractional
grid (and overwrites ``self.freqs_cis``); with memory frames of different
lengths it fails. So here the axial frequencies of the full token grid are
computed once and *gathered* by index: for the kept queries of the current
frame and, separately, for each memory frame's own kept indices. Object-pointer
tokens (appended last) stay out of RoPE, as in stock SAM2.

RoPE acts per token, so rotating then gathering equals gathering then rotating:
attention over a subset of keys equals dense attention with the other keys
masked out (``tests/test_subset_attention.py`` checks exactly that), and with
every index kept the forward below reproduces the stock layers bit for bit.

Nothing here copies sam2 weights or patches sam2 modules: the forwards are small
re-statements of ``MemoryAttention.forward`` / ``MemoryAttentionLayer.forward`` /
``RoPEAttention.forward`` that call the stock submodules (projections, norms,
MLPs) and pass explicit per-token frequencies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention
from torch import Tensor

__all__ = [
    "full_grid_freqs",
    "gather_freqs",
    "rope_attention",
    "memory_attention_subset",
    "memory_attention_streams",
]


def full_grid_freqs(attn: RoPEAttention, height: int, width: int) -> Tensor:
    """Axial RoPE frequencies of the full ``height x width`` grid, [H*W, head_dim/2] complex.

    Reuses the module's own table when it was built for this grid (so values are
    identical to what the stock forward uses), otherwise computes it with the
    module's own ``compute_cis`` (same dim and theta).
    """
    n = height * width
    if attn.freqs_cis.shape[0] == n and height == width:
        return attn.freqs_cis
    # compute_axial_cis enumerates x fastest (t % end_x), matching flatten(2) of [H, W].
    return attn.compute_cis(end_x=width, end_y=height)


def gather_freqs(freqs: Tensor, indices: Tensor | None) -> Tensor:
    """Rows of a full-grid frequency table for the given flat token indices (None = all)."""
    if indices is None:
        return freqs
    return freqs.index_select(0, indices.to(device=freqs.device, dtype=torch.long))


def _rotate(x: Tensor, freqs: Tensor) -> Tensor:
    """Apply RoPE to ``x`` [B, heads, N, d] with per-token ``freqs`` [N, d/2], or with one
    table per batch row, [B, N, d/2] (streams of different kept tokens batched together).

    One table: sam2's own ``apply_rotary_enc`` (with ``x`` in the query slot and no
    keys). Per-row tables: the same complex product, broadcast over heads instead
    (sam2's helper only broadcasts one table).
    """
    if x.shape[-2] == 0:
        return x
    if freqs.dim() == 3:
        x_c = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(x_c * freqs.to(x.device)[:, None]).flatten(3).type_as(x)
    out, _ = apply_rotary_enc(x, x[..., :0, :], freqs_cis=freqs.to(x.device))
    return out


def rope_attention(
    attn: RoPEAttention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_freqs: Tensor,
    k_freqs: Tensor,
    num_k_exclude_rope: int = 0,
) -> Tensor:
    """``RoPEAttention.forward`` with explicit per-token frequencies.

    ``q`` [B, Nq, C], ``k``/``v`` [B, Nk, Ckv]; ``q_freqs`` [Nq, d/2] and
    ``k_freqs`` [Nk - num_k_exclude_rope, d/2] (or one table per batch row, with a
    leading B). The last ``num_k_exclude_rope`` keys (object pointers) are not rotated.
    """
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)

    num_k_rope = k.size(-2) - num_k_exclude_rope
    if k_freqs.shape[-2] != num_k_rope:
        raise ValueError(f"k_freqs has {k_freqs.shape[-2]} rows for {num_k_rope} rotated keys")
    q = _rotate(q, q_freqs)
    k_rot = _rotate(k[:, :, :num_k_rope], k_freqs)
    if num_k_exclude_rope > 0:
        k = torch.cat([k_rot, k[:, :, num_k_rope:]], dim=2)
    else:
        k = k_rot

    dropout_p = attn.dropout_p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return attn.out_proj(attn._recombine_heads(out))


def _layer_forward(
    layer: MemoryAttentionLayer,
    tgt: Tensor,
    memory: Tensor,
    pos: Tensor,
    query_pos: Tensor,
    q_freqs: Tensor,
    k_freqs: Tensor,
    num_k_exclude_rope: int,
) -> Tensor:
    """``MemoryAttentionLayer.forward`` (batch first) with gathered RoPE frequencies."""
    # Self-attention among the kept current-frame tokens.
    tgt2 = layer.norm1(tgt)
    q = kk = tgt2 + query_pos if layer.pos_enc_at_attn else tgt2
    tgt2 = rope_attention(layer.self_attn, q, kk, tgt2, q_freqs, q_freqs)
    tgt = tgt + layer.dropout1(tgt2)
    # Cross-attention to the (pruned) memory bank plus object pointers.
    tgt2 = layer.norm2(tgt)
    tgt2 = rope_attention(
        layer.cross_attn_image,
        tgt2 + query_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
        memory + pos if layer.pos_enc_at_cross_attn_keys else memory,
        memory,
        q_freqs,
        k_freqs,
        num_k_exclude_rope,
    )
    tgt = tgt + layer.dropout2(tgt2)
    # MLP
    tgt2 = layer.norm3(tgt)
    tgt2 = layer.linear2(layer.dropout(layer.activation(layer.linear1(tgt2))))
    return tgt + layer.dropout3(tgt2)


def memory_attention_subset(
    memory_attention: MemoryAttention,
    curr: Tensor,
    curr_pos: Tensor,
    memory: Tensor,
    memory_pos: Tensor,
    curr_indices: Tensor | None,
    memory_indices: list[Tensor | None],
    grid: tuple[int, int],
    num_obj_ptr_tokens: int = 0,
) -> Tensor:
    """Run ``MemoryAttention`` on kept tokens only.

    Args:
        curr, curr_pos: kept current-frame tokens and their position embeddings, [k, B, C]
            (sequence first, like the stock module).
        memory, memory_pos: concatenated memory tokens [sum_i k_i + P, B, Cmem], in the
            order of ``memory_indices``, followed by ``num_obj_ptr_tokens`` pointer tokens.
        curr_indices: flat grid indices of ``curr`` (None = the full grid, in order).
        memory_indices: one entry per memory frame, its flat grid indices (None = dense).
        grid: (H, W) of the full token grid.

    Returns the normed output for the kept tokens, [k, B, C] (sequence first).
    """
    def tables(full: Tensor) -> tuple[Tensor, Tensor]:
        return _stream_tables(full, curr_indices, memory_indices)

    return _run_layers(memory_attention, curr, curr_pos, memory, memory_pos, grid, tables, num_obj_ptr_tokens)


def memory_attention_streams(
    memory_attention: MemoryAttention,
    curr: Tensor,
    curr_pos: Tensor,
    memory: Tensor,
    memory_pos: Tensor,
    curr_indices: list[Tensor | None],
    memory_indices: list[list[Tensor | None]],
    grid: tuple[int, int],
    num_obj_ptr_tokens: int = 0,
) -> Tensor:
    """:func:`memory_attention_subset` for S streams in one call, one stream per batch row.

    Streams (videos x objects) keep different tokens, so each batch row gets its own
    RoPE tables (``curr_indices[s]``, ``memory_indices[s]``); what must agree is the
    shapes: the kept count ``k`` (all pruned streams of one keep ratio share it), the
    memory length and the number of pointer tokens (group streams by them).
    ``curr``/``curr_pos`` [k, S, C], ``memory``/``memory_pos`` [M, S, Cmem]; returns [k, S, C].
    """
    if not len(curr_indices) == len(memory_indices) == curr.shape[1]:
        raise ValueError(f"{curr.shape[1]} streams but {len(curr_indices)} / {len(memory_indices)} index lists")

    def tables(full: Tensor) -> tuple[Tensor, Tensor]:
        per_stream = [_stream_tables(full, c, m) for c, m in zip(curr_indices, memory_indices, strict=True)]
        return torch.stack([q for q, _ in per_stream]), torch.stack([k for _, k in per_stream])

    return _run_layers(memory_attention, curr, curr_pos, memory, memory_pos, grid, tables, num_obj_ptr_tokens)


def _stream_tables(full: Tensor, curr_indices: Tensor | None,
                   memory_indices: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """One stream's query and key RoPE tables, gathered from the full grid's."""
    qf = gather_freqs(full, curr_indices)
    parts = [full if idx is None else gather_freqs(full, idx) for idx in memory_indices]
    return qf, torch.cat(parts, dim=0) if parts else full[:0]


def _run_layers(memory_attention: MemoryAttention, curr: Tensor, curr_pos: Tensor, memory: Tensor,
                memory_pos: Tensor, grid: tuple[int, int], tables_of, num_obj_ptr_tokens: int) -> Tensor:
    """``MemoryAttention.forward`` with RoPE tables from ``tables_of(full grid table)``."""
    height, width = grid
    n_full = height * width
    # Frequencies per distinct attention config (all layers share one in SAM2, but
    # do not assume it).
    cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _tables(attn: RoPEAttention) -> tuple[Tensor, Tensor]:
        kw = getattr(attn.compute_cis, "keywords", {})
        key = (kw.get("dim"), kw.get("theta"), attn.freqs_cis.shape[0] == n_full)
        if key not in cache:
            cache[key] = tables_of(full_grid_freqs(attn, height, width))
        return cache[key]

    output = curr
    if memory_attention.pos_enc_at_input and curr_pos is not None:
        output = output + 0.1 * curr_pos
    if memory_attention.batch_first:
        output = output.transpose(0, 1)
        curr_pos = curr_pos.transpose(0, 1)
        memory = memory.transpose(0, 1)
        memory_pos = memory_pos.transpose(0, 1)

    for layer in memory_attention.layers:
        if not isinstance(layer.self_attn, RoPEAttention) or not isinstance(
            layer.cross_attn_image, RoPEAttention
        ):
            raise TypeError("memory_attention_subset needs RoPEAttention self- and cross-attention")
        q_freqs, _ = _tables(layer.self_attn)
        cq_freqs, ck_freqs = _tables(layer.cross_attn_image)
        if not torch.equal(q_freqs, cq_freqs):  # pragma: no cover - not the case in SAM2 configs
            raise ValueError("self- and cross-attention RoPE tables differ")
        output = _layer_forward(
            layer, output, memory, memory_pos, curr_pos, q_freqs, ck_freqs, num_obj_ptr_tokens
        )

    normed = memory_attention.norm(output)
    if memory_attention.batch_first:
        normed = normed.transpose(0, 1)
    return normed
