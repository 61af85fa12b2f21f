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
"""

from __future__ import annotations

import torch
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
