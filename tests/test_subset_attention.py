"""Attention on kept tokens equals dense attention with the pruned keys masked out.

RoPE acts per token, so gathering the full-grid frequencies by index and
attending over a subset must give exactly what dense attention gives when the
other keys are masked (up to float reassociation in the softmax), and with
every index kept the forwards must reproduce the stock sam2 modules bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention

from fastsam2.tracking.subset_attention import (
    full_grid_freqs,
    gather_freqs,
    memory_attention_subset,
    rope_attention,
)

GRID = (8, 8)
N = GRID[0] * GRID[1]
D, DKV, NPTR = 64, 32, 4


def _cross_attn() -> RoPEAttention:
    return RoPEAttention(D, 1, kv_in_dim=DKV, rope_k_repeat=True, feat_sizes=GRID).eval()


def _self_attn() -> RoPEAttention:
    return RoPEAttention(D, 1, feat_sizes=GRID).eval()


def _masked_dense(attn, q, k, v, num_frames, key_mask, n_excl):
    """Dense reference: stock rotation of all tokens (keys repeat the query table), then
    SDPA with the pruned keys masked out."""
    qp = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    kp = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    vp = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    n_rope = kp.shape[-2] - n_excl
    qr, kr = apply_rotary_enc(qp, kp[:, :, :n_rope], freqs_cis=attn.freqs_cis, repeat_freqs_k=num_frames > 1)
    kp = torch.cat([kr, kp[:, :, n_rope:]], dim=2)
    out = F.scaled_dot_product_attention(qr, kp, vp, attn_mask=key_mask.view(1, 1, 1, -1))
    return attn.out_proj(attn._recombine_heads(out))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_full_indices_match_stock_rope_attention(gen):
    torch.manual_seed(0)
    attn = _cross_attn()
    q = torch.randn(1, N, D, generator=gen)
    k = torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    v = torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    full = full_grid_freqs(attn, *GRID)
    with torch.no_grad():
        stock = attn(q, k.clone(), v, num_k_exclude_rope=NPTR)
        ours = rope_attention(attn, q, k, v, full, torch.cat([full, full]), NPTR)
    assert torch.equal(ours, stock)


def test_pruned_cross_attention_equals_masked_dense(gen):
    torch.manual_seed(1)
    attn = _cross_attn()
    q = torch.randn(1, N, D, generator=gen)
    k = torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    v = torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    q_idx = torch.randperm(N, generator=gen)[:20].sort().values
    m_idx = [torch.randperm(N, generator=gen)[:n].sort().values for n in (17, 30)]  # per memory frame
    key_keep = torch.zeros(2 * N + NPTR, dtype=torch.bool)
    key_keep[m_idx[0]] = True
    key_keep[N + m_idx[1]] = True
    key_keep[2 * N :] = True  # object pointers are always attended
    full = full_grid_freqs(attn, *GRID)
    with torch.no_grad():
        ref = _masked_dense(attn, q, k, v, 2, key_keep, NPTR)[:, q_idx]
        ours = rope_attention(
            attn,
            q[:, q_idx],
            k[:, key_keep],
            v[:, key_keep],
            gather_freqs(full, q_idx),
            torch.cat([gather_freqs(full, m_idx[0]), gather_freqs(full, m_idx[1])]),
            NPTR,
        )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_pruned_self_attention_equals_masked_dense(gen):
    torch.manual_seed(2)
    attn = _self_attn()
    x = torch.randn(1, N, D, generator=gen)
    idx = torch.randperm(N, generator=gen)[:25].sort().values
    keep = torch.zeros(N, dtype=torch.bool)
    keep[idx] = True
    full = full_grid_freqs(attn, *GRID)
    with torch.no_grad():
        ref = _masked_dense(attn, x, x, x, 1, keep, 0)[:, idx]
        f = gather_freqs(full, idx)
        ours = rope_attention(attn, x[:, idx], x[:, idx], x[:, idx], f, f)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def _memory_attention() -> MemoryAttention:
    torch.manual_seed(3)
    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=RoPEAttention(D, 1, kv_in_dim=DKV, rope_k_repeat=True, feat_sizes=GRID, dropout=0.1),
        d_model=D,
        dim_feedforward=128,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(D, 1, feat_sizes=GRID, dropout=0.1),
    )
    return MemoryAttention(d_model=D, pos_enc_at_input=True, layer=layer, num_layers=2).eval()


def test_memory_attention_full_indices_bit_identical_to_stock(gen):
    ma = _memory_attention()
    curr, curr_pos = torch.randn(N, 1, D, generator=gen), torch.randn(N, 1, D, generator=gen)
    mem, mem_pos = torch.randn(2 * N + NPTR, 1, DKV, generator=gen), torch.randn(2 * N + NPTR, 1, DKV, generator=gen)
    with torch.no_grad():
        stock = ma(curr=[curr], curr_pos=[curr_pos], memory=mem, memory_pos=mem_pos, num_obj_ptr_tokens=NPTR)
        ours = memory_attention_subset(ma, curr, curr_pos, mem, mem_pos, None, [None, None], GRID, NPTR)
    assert torch.equal(ours, stock)


def test_memory_attention_subset_of_keys_only(gen):
    """Dense queries against one dense and one pruned memory frame equal dense
    attention with that frame's pruned keys masked out."""
    ma = _memory_attention()
    layer = ma.layers[0]
    attn = layer.cross_attn_image
    q = torch.randn(1, N, D, generator=gen)
    mem = torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    m_idx = [None, torch.arange(0, N, 3)]
    keep = torch.ones(2 * N + NPTR, dtype=torch.bool)
    keep[N:2 * N] = False
    keep[N + m_idx[1]] = True
    full = full_grid_freqs(attn, *GRID)
    with torch.no_grad():
        ref = _masked_dense(attn, q, mem, mem, 2, keep, NPTR)
        ours = rope_attention(attn, q, mem[:, keep], mem[:, keep], full,
                              torch.cat([full, gather_freqs(full, m_idx[1])]), NPTR)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_stock_rope_attention_on_a_subset_silently_rebuilds_frequencies(gen):
    """The pitfall this module exists for: stock RoPEAttention infers a square grid
    from the query count, so a pruned subset changes its frequency table."""
    attn = _self_attn()
    x = torch.randn(1, 16, D, generator=gen)  # 16 kept tokens of an 8x8 grid
    with torch.no_grad():
        attn(x, x, x)  # no error...
    assert attn.freqs_cis.shape[0] == 16  # ...but positions now come from a 4x4 grid


def _masked_memory_attention(ma, curr, curr_pos, mem, mem_pos, q_keep, k_keep, n_frames, n_ptr):
    """Dense reference of the whole module (batch first): pruned current tokens are
    masked as self-attention keys, pruned memory tokens as cross-attention keys."""
    out = curr + 0.1 * curr_pos
    for layer in ma.layers:
        t2 = layer.norm1(out)
        out = out + _masked_dense(layer.self_attn, t2, t2, t2, 1, q_keep, 0)
        t2 = layer.norm2(out)
        out = out + _masked_dense(layer.cross_attn_image, t2, mem + mem_pos, mem, n_frames, k_keep, n_ptr)
        t2 = layer.norm3(out)
        out = out + layer.linear2(layer.activation(layer.linear1(t2)))
    return ma.norm(out)


def test_pruned_memory_attention_module_equals_masked_dense(gen):
    ma = _memory_attention()
    curr, curr_pos = torch.randn(1, N, D, generator=gen), torch.randn(1, N, D, generator=gen)
    mem, mem_pos = torch.randn(1, 2 * N + NPTR, DKV, generator=gen), torch.randn(1, 2 * N + NPTR, DKV, generator=gen)
    q_idx = torch.randperm(N, generator=gen)[:19].sort().values
    m_idx = [torch.randperm(N, generator=gen)[:n].sort().values for n in (19, 23)]
    q_keep = torch.zeros(N, dtype=torch.bool)
    q_keep[q_idx] = True
    k_keep = torch.zeros(2 * N + NPTR, dtype=torch.bool)
    k_keep[m_idx[0]] = True
    k_keep[N + m_idx[1]] = True
    k_keep[2 * N :] = True
    with torch.no_grad():
        ref = _masked_memory_attention(ma, curr, curr_pos, mem, mem_pos, q_keep, k_keep, 2, NPTR)[:, q_idx]
        ours = memory_attention_subset(
            ma,
            curr[:, q_idx].transpose(0, 1),
            curr_pos[:, q_idx].transpose(0, 1),
            mem[:, k_keep].transpose(0, 1),
            mem_pos[:, k_keep].transpose(0, 1),
            q_idx,
            m_idx,
            GRID,
            NPTR,
        ).transpose(0, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
