"""Text-grounded selection: the phrase picks which proposed objects are tracked.

With ``--prompts auto --text "PHRASE"`` (or a manifest ``text`` and no box or
point), every distinct object on the prompt frame
(:func:`~fastsam2.prompts.multi.objects_on_frame`) is scored by CLIP's
region-text similarity: the cosine between the embedding of its crop (box plus
a margin, padded square, as the captioner sees it) and the phrase's embedding.
Those at or above the threshold, best first, up to ``max_objects``, are
tracked, with the phrase as their router text. The CLIP model is the one the
router loads (``pruning.clip_model``); without its weights this fails with one
line rather than guessing.

The same rule picks objects that enter later in a text run
(:class:`~fastsam2.prompts.multi.NewObjectDetector`): :func:`candidate_settings`,
:func:`rank_by_text`, :func:`matching` and
:func:`~fastsam2.prompts.multi.grounded_prompts` serve the first frame and every
detection frame alike; a frame where nothing matches is an error on the first
frame (:func:`select_by_text`) and just nothing new later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from fastsam2.models.factory import ClipBundle
from fastsam2.prompts.region import crop_with_margin, pad_to_square

if TYPE_CHECKING:  # fastsam2.prompts.multi uses this module (late objects in a text run)
    from fastsam2.prompts.multi import FoundObject, MultiObjectSettings


#: Candidates per object wanted when a phrase selects: the phrase chooses among more objects than it keeps.
CANDIDATES_PER_OBJECT = 3


def candidate_settings(settings: MultiObjectSettings) -> MultiObjectSettings:
    """``settings`` with room for :data:`CANDIDATES_PER_OBJECT` times as many candidates, for a phrase to score."""
    return dataclasses.replace(settings, max_objects=CANDIDATES_PER_OBJECT * settings.max_objects)


class NoMatchingObject(RuntimeError):
    """No proposed object is similar enough to the phrase; the video gets an errors/ row."""

    stage = "propose"


class RegionTextScorer:
    """CLIP similarity between region crops of a frame and a phrase (one batched image forward)."""

    def __init__(self, clip: ClipBundle, device: str | torch.device | None = None) -> None:
        self.clip = clip
        self.device = torch.device(device) if device is not None else next(clip.model.parameters()).device

    def _pixels(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        size = self.clip.image_size
        arr = np.stack([np.asarray(Image.fromarray(pad_to_square(c)).resize((size, size), Image.BICUBIC)) for c in crops])
        x = torch.from_numpy(arr).float().div(255.0).permute(0, 3, 1, 2)
        mean = torch.tensor(self.clip.mean)[None, :, None, None]
        std = torch.tensor(self.clip.std)[None, :, None, None]
        return ((x - mean) / std).to(self.device)

    @torch.inference_mode()
    def scores(self, frame: np.ndarray, boxes: Sequence[Sequence[float]], text: str) -> list[float]:
        """Cosine similarity of each box's crop to ``text`` (in [-1, 1])."""
        if not len(boxes):
            return []
        model = self.clip.model
        img = model.encode_image(self._pixels([crop_with_margin(frame, b) for b in boxes]))
        txt = model.encode_text(self.clip.tokenizer([text]).to(self.device))
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return [float(v) for v in (img @ txt[0])]


@dataclass(frozen=True)
class Grounded:
    """An object the phrase selected, with its CLIP score."""

    obj: FoundObject
    clip_score: float


def rank_by_text(frame: np.ndarray, found: Sequence[FoundObject], text: str,
                 scorer: RegionTextScorer) -> list[Grounded]:
    """Every object of ``found`` with its CLIP score against ``text``, best first."""
    scores = scorer.scores(frame, [f.box for f in found], text)
    return [Grounded(f, s) for f, s in sorted(zip(found, scores), key=lambda fs: -fs[1])]


def matching(ranked: Sequence[Grounded], threshold: float, max_objects: int) -> list[Grounded]:
    """The ranked objects at ``threshold`` or more, best first, at most ``max_objects`` (maybe none)."""
    return [g for g in ranked if g.clip_score >= threshold][:max_objects]


def select_by_text(frame: np.ndarray, found: Sequence[FoundObject], text: str, scorer: RegionTextScorer,
                   threshold: float, max_objects: int) -> list[Grounded]:
    """The objects whose crop matches ``text`` at ``threshold`` or more, best first, at most ``max_objects``.

    Raises :class:`NoMatchingObject` (naming the best score) when none does.
    """
    ranked = rank_by_text(frame, found, text, scorer)
    kept = matching(ranked, threshold, max_objects)
    if not kept:
        best = f"{ranked[0].clip_score:.3f}" if ranked else "none"
        raise NoMatchingObject(f"no proposed object matches {text!r} at CLIP score >= {threshold:g} "
                               f"(best of {len(ranked)}: {best})")
    return kept
