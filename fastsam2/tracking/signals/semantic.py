"""Text relevance per token: dense CLIP similarity (default) and the paper's LSQ mode.

Dense CLIP (MaskCLIP style): run the open_clip visual tower up to its last
block, take that block's *value* path (``ln_1`` -> value projection ->
``out_proj``, no query/key mixing, so each patch keeps its own content), then
``ln_post`` and ``proj`` into the joint space, and take the cosine with the text
embedding. The patch grid (14x14 for ViT-B/16 at 224) is resized to the SAM2
token grid. It costs one CLIP forward, so the router computes it on keyframes
and reuses it in between.

The paper's "training-free least-squares projection" solves
``W = argmin ||X W - 1 e^T||`` and scores ``X W e``; that equals
``||e||^2 X pinv(X) 1``, which does not depend on the text's direction at all.
It is kept as ``paper`` mode only to compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastsam2.models.clip import ClipBundle

#: SAM2's input normalisation (``load_video_frames`` defaults).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


class ClipDenseSimilarity:
    """Patch-text cosine similarity from an open_clip model, on the SAM2 token grid."""

    def __init__(
        self,
        clip: ClipBundle,
        sam_mean: tuple[float, float, float] = SAM2_MEAN,
        sam_std: tuple[float, float, float] = SAM2_STD,
    ) -> None:
        self.clip = clip
        self.sam_mean = torch.tensor(sam_mean).view(1, 3, 1, 1)
        self.sam_std = torch.tensor(sam_std).view(1, 3, 1, 1)
        self.clip_mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(clip.std).view(1, 3, 1, 1)
        self._text_cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    @torch.no_grad()
    def text_embedding(self, text: str) -> Tensor:
        """L2-normalised text embedding [D] (cached per phrase)."""
        if text not in self._text_cache:
            tokens = self.clip.tokenizer([text]).to(self.device)
            emb = self.clip.model.encode_text(tokens)[0].float()
            self._text_cache[text] = F.normalize(emb, dim=0)
        return self._text_cache[text]

    def to_clip_input(self, sam_image: Tensor) -> Tensor:
        """SAM2-normalised frames [B, 3, s, s] -> CLIP-normalised [B, 3, S, S]."""
        x = sam_image.float().to(self.device)
        x = x * self.sam_std.to(x.device) + self.sam_mean.to(x.device)
        size = self.clip.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.clip_mean.to(x.device)) / self.clip_std.to(x.device)

    @torch.no_grad()
    def dense_features(self, clip_image: Tensor) -> Tensor:
        """MaskCLIP patch embeddings in the joint space, [B, gh, gw, D], L2-normalised."""
        visual = self.clip.model.visual
        x = visual._embeds(clip_image)  # [B, 1 + N, W]
        transformer = visual.transformer
        batch_first = getattr(transformer, "batch_first", True)
        blocks = transformer.resblocks
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
        last = blocks[-1]
        attn = getattr(last, "attn", None)
        if not isinstance(attn, torch.nn.MultiheadAttention):
            raise NotImplementedError(f"dense CLIP needs nn.MultiheadAttention blocks, got {type(attn)}")
        width = attn.embed_dim
        y = last.ln_1(x)
        bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        v = F.linear(y, attn.in_proj_weight[2 * width :], bias)
        x = attn.out_proj(v)
        if not batch_first:
            x = x.transpose(0, 1)
        x = visual.ln_post(x[:, 1:])  # drop the class token
        if visual.proj is not None:
            x = x @ visual.proj
        gh, gw = visual.grid_size
        return F.normalize(x.float(), dim=-1).reshape(x.shape[0], gh, gw, -1)

    @torch.no_grad()
    def similarity(self, sam_image: Tensor, text: str, grid: tuple[int, int]) -> Tensor:
        """Cosine similarity of each SAM2 token's area with ``text``: [B, H*W]."""
        feats = self.dense_features(self.to_clip_input(sam_image))
        sim = feats @ self.text_embedding(text)  # [B, gh, gw]
        sim = F.interpolate(sim.unsqueeze(1), size=grid, mode="bilinear", align_corners=False)
        return sim.flatten(1).to(sam_image.device)


@torch.no_grad()
def paper_lsq_relevance(tokens: Tensor, text_embedding: Tensor | None = None) -> Tensor:
    """The paper's least-squares text projection, scored per token: [B, N].

    ``W = argmin ||X W - 1 e^T||`` gives ``e' = W e = ||e||^2 pinv(X) 1`` and the
    score ``X e'``: the projection of the all-ones vector on the token span,
    scaled by ``||e||^2``. Only the norm of the text embedding enters, never its
    direction, so two different phrases rank tokens identically. Comparison only.
    """
    x = tokens.float()  # [B, N, C]
    ones = torch.ones(x.shape[0], x.shape[1], 1, device=x.device)
    w = torch.linalg.lstsq(x.cpu(), ones.cpu()).solution.to(x.device)  # [B, C, 1]
    scale = 1.0 if text_embedding is None else float(text_embedding.float().pow(2).sum())
    return (x @ w).squeeze(-1) * scale
