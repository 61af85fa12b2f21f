"""The image encoder's positional encodings as broadcast views of sam2's cache, not copies.

sam2 1.1.0's :class:`~sam2.modeling.position_encoding.PositionEmbeddingSine` caches the
encoding of each feature size but hands out ``cache[None].repeat(B, 1, 1, 1)``: a fresh
copy on every call. The image encoder's neck asks for one per pyramid level on every
frame, so at 1024 px each frame copies 256x256 + 128x128 + 64x64 positions of 256 floats
(88 MB, about 70 ms on a 2-core CPU), and the video predictor keeps the copies with the
frame's cached features. Video tracking reads only the 64x64 level (memory attention);
the two high-resolution levels are never read at all.

:class:`BroadcastPositionEmbeddingSine` returns the cached tensor expanded to the batch
instead: the same numbers (so results stay bit-identical to stock sam2), no copy, no
extra memory per cached frame. Nothing in sam2 writes into a positional encoding in
place (the encodings are added out of place), which is what makes a shared view safe.
"""

from __future__ import annotations

import torch
from sam2.modeling.position_encoding import PositionEmbeddingSine


class BroadcastPositionEmbeddingSine(PositionEmbeddingSine):
    """sam2's sine encoding; a cached size comes back as a read-only-by-convention view."""

    @torch.no_grad()
    def _pe(self, B, device, *cache_key):
        if cache_key not in self.cache:
            super()._pe(1, device, *cache_key)  # computes and caches it
        return self.cache[cache_key].to(device)[None].expand(B, -1, -1, -1)

    @classmethod
    def like(cls, other: PositionEmbeddingSine) -> BroadcastPositionEmbeddingSine:
        """One with ``other``'s settings, sharing its cache."""
        new = cls(other.num_pos_feats * 2, temperature=other.temperature, normalize=other.normalize,
                  scale=other.scale if other.normalize else None, warmup_cache=False)
        new.cache = other.cache
        return new


def broadcast_image_positions(model: torch.nn.Module) -> None:
    """Give ``model``'s image-encoder neck the broadcasting encoding (a sam2 ``SAM2Base``)."""
    neck = model.image_encoder.neck
    if type(neck.position_encoding) is PositionEmbeddingSine:
        neck.position_encoding = BroadcastPositionEmbeddingSine.like(neck.position_encoding)
