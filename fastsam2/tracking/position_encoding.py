"""The image encoder's positional encodings as shared, ready tensors, not per-frame copies.

sam2 1.1.0's :class:`~sam2.modeling.position_encoding.PositionEmbeddingSine` caches the
encoding of each feature size but hands out ``cache[None].repeat(B, 1, 1, 1)``: a fresh
fp32 copy on every call, which the neck then converts to the features' dtype (a second
copy under bf16 autocast). The neck asks for one per pyramid level on every frame, so at
1024 px each frame copies 256x256 + 128x128 + 64x64 positions of 256 values (88 MB in
fp32, about 70 ms on a 2-core CPU), and the video predictor keeps them with the frame's
cached features. Video tracking reads only the 64x64 level (memory attention); the two
high-resolution levels are never read at all.

:class:`BroadcastPositionEmbeddingSine` converts sam2's own encoding once per (size,
device, dtype) and returns it expanded to the batch: the same numbers stock sam2 would
produce in that dtype (so results stay bit-identical), no copy, no memory per cached
frame, whatever the precision. Nothing in sam2 or in this project writes into a
positional encoding in place (they are added out of place), which is what makes a shared
tensor safe.

The trunk has the same habit: Hiera's ``_get_pos_embed`` interpolates its learned 7x7
embedding bicubically to the patch grid and adds the tiled window embedding on every
call, a function of the weights and the grid alone (at 1024 px 256x256x96 values, about
45 ms per frame on a 2-core CPU). :class:`PositionCachedHiera` computes it once per
grid, device, dtype, autocast state and weights version, and hands out that tensor.
"""

from __future__ import annotations

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.position_encoding import PositionEmbeddingSine


class BroadcastPositionEmbeddingSine(PositionEmbeddingSine):
    """sam2's sine encoding, in the features' dtype, as a view of one tensor per size."""

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        pos = self.ready.get(key)
        if pos is None:
            # Exactly what stock returns for one image (its own cache included), in the dtype
            # the neck converts it to.
            pos = self.ready[key] = super()._pe(1, x.device, x.shape[-2], x.shape[-1])[0].to(x.dtype)
        return pos[None].expand(x.shape[0], -1, -1, -1)

    @classmethod
    def like(cls, other: PositionEmbeddingSine) -> BroadcastPositionEmbeddingSine:
        """One with ``other``'s settings, sharing its cache."""
        new = cls(other.num_pos_feats * 2, temperature=other.temperature, normalize=other.normalize,
                  scale=other.scale if other.normalize else None, warmup_cache=False)
        new.cache = other.cache
        new.ready = {}
        return new


def broadcast_image_positions(model: torch.nn.Module) -> None:
    """Give ``model``'s image-encoder neck the broadcasting encoding (a sam2 ``SAM2Base``)."""
    neck = model.image_encoder.neck
    if type(neck.position_encoding) is PositionEmbeddingSine:
        neck.position_encoding = BroadcastPositionEmbeddingSine.like(neck.position_encoding)


class PositionCachedHiera(Hiera):
    """sam2's Hiera trunk whose interpolated position embedding is computed once, not per frame.

    The cache key holds everything the value depends on: the grid, the device, dtype and
    autocast state, and the two embedding parameters' storage and version counters (loading
    weights into them, as ``load_state_dict`` does, bumps the version, so new weights are
    never served stale values). Moving the module (``.to()``, ``.cuda()``, ``.half()``)
    drops the cache, so a new storage that happens to reuse an old address with a fresh
    version counter cannot match it. While autograd records (training the embedding)
    nothing is cached.
    """

    _pos_cache: tuple[tuple, torch.Tensor] | None = None

    def _apply(self, fn, recurse: bool = True):
        self._pos_cache = None
        return super()._apply(fn, recurse)

    def _get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pe, window = self.pos_embed, self.pos_embed_window
        if torch.is_grad_enabled() and (pe.requires_grad or window.requires_grad):
            return super()._get_pos_embed(hw)
        device = pe.device.type
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        key = (tuple(hw), pe.device, pe.dtype, autocast, pe.data_ptr(), pe._version, window.data_ptr(), window._version)
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = (key, super()._get_pos_embed(hw))
        return self._pos_cache[1]


def cache_trunk_positions(model: torch.nn.Module) -> None:
    """Make ``model``'s Hiera trunk a :class:`PositionCachedHiera` (same module, same weights:
    only the class of the instance changes, which adds the cache and nothing else)."""
    trunk = model.image_encoder.trunk
    if type(trunk) is Hiera:
        trunk.__class__ = PositionCachedHiera
