"""Text relevance per token: dense CLIP similarity (default) and the paper's LSQ mode.

Dense CLIP (MaskCLIP style): run the open_clip visual tower up to its last
block, take that block's *value* path (``ln_1`` -> value projection ->
``out_proj``, no query/key mixing, so each patch keeps its own content), then
``ln_post`` and ``proj`` into the joint space, and take the cosine with the text
embedding. The patch grid (14x14 for ViT-B/16 at 224) is resized to the SAM2
token grid. It costs one CLIP forward, so the router computes it on keyframes
and reuses it in between.

With a ``box`` (a square of SAM2 tokens around the object's prior) only that
region goes through CLIP, at the input size that keeps the whole-frame patch
density (a box of half the frame's side at 112 px for a 224 px model: a quarter
of the patches, about a quarter of the cost); the positional embedding is
resampled to the smaller patch grid. Tokens outside the box get the box's lowest
similarity, so they rank last on this signal and the other signals decide
among them.

The paper's "training-free least-squares projection" solves
``W = argmin ||X W - 1 e^T||`` and scores ``X W e``; that equals
``||e||^2 X pinv(X) 1``, which does not depend on the text's direction at all.
It is kept as ``paper`` mode only to compare against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fastsam2.models.factory import ClipBundle
from fastsam2.models.weights import ClipWeightsUnavailable
from fastsam2.preprocess import SAM2_MEAN, SAM2_STD

log = logging.getLogger(__name__)


class ClipDenseSimilarity:
    """Patch-text cosine similarity from an open_clip model, on the SAM2 token grid.

    ``clip`` is a loaded bundle or a function that loads one: then nothing is
    built until the first phrase is scored, so a pruned run whose videos have no
    text never holds CLIP (about 600 MB for ViT-B/16 in fp32) beside SAM2. When
    that first load finds no weights (no network, no cache), the warning says so
    once and :meth:`similarity` returns None from then on: a run should not die
    for want of one of the router's four signals. Text embeddings are computed
    once per phrase and kept.
    """

    def __init__(
        self,
        clip: ClipBundle | Callable[[], ClipBundle],
        sam_mean: tuple[float, float, float] = SAM2_MEAN,
        sam_std: tuple[float, float, float] = SAM2_STD,
    ) -> None:
        self._clip = clip if isinstance(clip, ClipBundle) else None
        self._load = None if isinstance(clip, ClipBundle) else clip
        self.unavailable = False  # set when the deferred load found no weights
        self.sam_mean = torch.tensor(sam_mean).view(1, 3, 1, 1)
        self.sam_std = torch.tensor(sam_std).view(1, 3, 1, 1)
        self._text_cache: dict[str, Tensor] = {}

    @property
    def loaded(self) -> bool:
        """Whether the CLIP model has been built (it is built on first use when given a loader)."""
        return self._clip is not None

    @property
    def clip(self) -> ClipBundle:
        if self._clip is None:
            self._clip = self._load()
        return self._clip

    def _available(self) -> bool:
        """Load on first use; False (after one warning) when the weights cannot be had."""
        if self._clip is None and not self.unavailable:
            try:
                self._clip = self._load()
            except ClipWeightsUnavailable as exc:
                self.unavailable = True
                log.warning("%s -- routing without text relevance", exc)
        return self._clip is not None

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

    def to_clip_input(self, sam_image: Tensor, size: int | None = None) -> Tensor:
        """SAM2-normalised frames [B, 3, s, s] -> CLIP-normalised [B, 3, S, S] (S: the model's size)."""
        x = sam_image.float().to(self.device)
        x = x * self.sam_std.to(x.device) + self.sam_mean.to(x.device)
        size = size or self.clip.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.clip.mean, self.clip.std))
        return (x - mean) / std

    def _embeds(self, clip_image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch + class embeddings with positions, for any input size (multiple of the patch).

        At the model's own size this is open_clip's ``_embeds``; at another size the
        positional embedding of the patch grid is resampled (bicubic), as open_clip
        does when loading weights for a new resolution.
        """
        visual = self.clip.model.visual
        gh, gw = visual.grid_size
        ph, pw = clip_image.shape[-2] // visual.patch_size[0], clip_image.shape[-1] // visual.patch_size[1]
        if (ph, pw) == (gh, gw):
            return visual._embeds(clip_image), (gh, gw)
        x = visual.conv1(clip_image).flatten(2).transpose(1, 2)  # [B, N, W]
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        pos = visual.positional_embedding.to(x.dtype)
        grid_pos = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(ph, pw), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid_pos.permute(0, 2, 3, 1).reshape(ph * pw, -1)], dim=0)
        x = torch.cat([cls, x], dim=1) + pos
        return visual.ln_pre(visual.patch_dropout(x)), (ph, pw)

    @torch.no_grad()
    def dense_features(self, clip_image: Tensor) -> Tensor:
        """MaskCLIP patch embeddings in the joint space, [B, gh, gw, D], L2-normalised."""
        visual = self.clip.model.visual
        x, (gh, gw) = self._embeds(clip_image)  # [B, 1 + N, W]
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
        return F.normalize(x.float(), dim=-1).reshape(x.shape[0], gh, gw, -1)

    def crop_input_size(self, box_side: int, grid_side: int) -> int:
        """CLIP input side for a box of ``box_side`` of ``grid_side`` tokens: the
        whole-frame patch density, rounded to whole patches (at least 2x2)."""
        patch = self.clip.model.visual.patch_size[0]
        full = self.clip.image_size
        patches = max(2, round(full / patch * box_side / grid_side))
        return min(full, patches * patch)

    @torch.no_grad()
    def similarity(self, sam_image: Tensor, text: str, grid: tuple[int, int],
                   box: tuple[int, int, int, int] | None = None) -> Tensor | None:
        """Cosine similarity of each SAM2 token's area with ``text``: [B, H*W]; None
        when CLIP is unavailable.

        ``box`` = (y0, x0, y1, x1) in tokens (exclusive ends): only that region is
        scored (see the module notes); ``None`` scores the whole frame.
        """
        if not self._available():
            return None
        H, W = grid
        if box is None or tuple(box) == (0, 0, H, W):
            feats = self.dense_features(self.to_clip_input(sam_image))
            sim = feats @ self.text_embedding(text)  # [B, gh, gw]
            sim = F.interpolate(sim.unsqueeze(1), size=grid, mode="bilinear", align_corners=False)
            return sim.flatten(1).to(sam_image.device)
        y0, x0, y1, x1 = box
        sy, sx = sam_image.shape[-2] / H, sam_image.shape[-1] / W
        crop = sam_image[..., round(y0 * sy): round(y1 * sy), round(x0 * sx): round(x1 * sx)]
        size = self.crop_input_size(max(y1 - y0, x1 - x0), max(H, W))
        feats = self.dense_features(self.to_clip_input(crop, size))
        sim = feats @ self.text_embedding(text)
        sim = F.interpolate(sim.unsqueeze(1), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        out = sim.new_empty(sim.shape[0], 1, H, W)
        out[:] = sim.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
        out[..., y0:y1, x0:x1] = sim
        return out.flatten(1).to(sam_image.device)


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
