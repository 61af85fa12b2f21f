"""Make one video's prompt: box -> click -> caption -> phrase, user values winning.

A plain function over already-loaded models, so it runs the same in a test, a
script, or inside a Ray actor (``fastsam2.stages`` wraps it). Each step runs
only when the user did not give its value:

- ``box`` (``--box``): else the best RPN proposal in the first ``max_frames``
  frames (:func:`~fastsam2.prompts.proposals.pick_box`); with a user click but no
  box, the best proposal on the click's frame that contains the click, if any;
- ``point`` (``--point``): else the distance-transform click of SAM2's coarse
  mask for the box (box centre if the mask is empty);
- ``text`` (``--text``): else LLaVA's caption of the region, refined to a phrase.

Everything chosen, and where it came from, ends up in :class:`AutoPrompt`,
whose :meth:`AutoPrompt.video_row` fills the prompt columns of ``videos/``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fastsam2.prompts.caption import Captioner
from fastsam2.prompts.click import CoarseMasker
from fastsam2.prompts.proposals import (
    BoxFilter,
    Proposer,
    box_contains,
    filter_proposals,
    pick_box,
)
from fastsam2.prompts.refine import MAX_WORDS, refine_caption

Box = tuple[float, float, float, float]


@dataclass
class AutoPrompt:
    """The prompt of one video and its provenance.

    ``sources`` says, per field (``box``, ``point``, ``text``), whether it is
    ``"user"``, ``"auto"``, or ``"none"``; ``prompt_source`` sums them up:
    ``"auto"`` (nothing from the user), ``"user"`` (nothing automatic) or
    ``"mixed"``. ``random_weights`` maps each model that ran to whether its
    weights were random; :attr:`any_random_weights` is what a run reports.
    """

    frame_idx: int
    box: Box | None
    point: tuple[float, float] | None
    phrase: str
    objectness: float | None = None
    caption: str | None = None
    point_from_mask: bool | None = None
    sources: dict[str, str] = field(default_factory=dict)
    detector_model: str | None = None
    mask_model: str | None = None
    caption_backend: str | None = None
    caption_model: str | None = None
    random_weights: dict[str, bool] = field(default_factory=dict)
    #: The prompt frame itself (RGB uint8), so a later stage can crop the region from it
    #: without decoding the video again; not part of any output row.
    frame: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def prompt_source(self) -> str:
        used = {s for s in self.sources.values() if s != "none"}
        if used == {"user"}:
            return "user"
        if used == {"auto"} or not used:
            return "auto"
        return "mixed"

    @property
    def any_random_weights(self) -> bool:
        return any(self.random_weights.values())

    def video_row(self) -> dict:
        """The prompt columns of ``videos/`` (see ``fastsam2.schema.VIDEOS``), plus extras.

        ``text`` holds the phrase SAM2 is prompted with; keys not in the schema
        (``phrase``, ``detector_model``, ...) are ignored by ``table_from_rows``.
        """
        return {
            "prompt_source": self.prompt_source,
            "point": list(self.point) if self.point is not None else None,
            "box": list(self.box) if self.box is not None else None,
            "prompt_frame_idx": self.frame_idx,
            "text": self.phrase,
            "caption": self.caption,
            "objectness": self.objectness,
            "caption_backend": self.caption_backend,
            "caption_model": self.caption_model,
            "phrase": self.phrase,
            "detector_model": self.detector_model,
            "mask_model": self.mask_model,
            "prompt_sources": dict(self.sources),
            "prompt_random_weights": self.any_random_weights,
        }


def _frame_at(frames: Iterable[np.ndarray], idx: int) -> np.ndarray:
    for frame in itertools.islice(frames, idx, idx + 1):
        return frame
    raise ValueError(f"prompt frame {idx} is past the end of the video")


def _as_box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box is x0, y0, x1, y1; got {list(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box has no area: {[x0, y0, x1, y1]}")
    return (x0, y0, x1, y1)


def _need(model, what: str, step: str):
    if model is None:
        raise ValueError(f"{step} is automatic here, so make_auto_prompt needs {what}")
    return model


def make_auto_prompt(
    frames: Iterable[np.ndarray],
    *,
    proposer: Proposer | None = None,
    masker: CoarseMasker | None = None,
    captioner: Captioner | None = None,
    user_box: Sequence[float] | None = None,
    user_point: Sequence[float] | None = None,
    user_text: str | None = None,
    user_frame_idx: int = 0,
    max_frames: int = 5,
    threshold: float = 0.5,
    box_filter: BoxFilter = BoxFilter(),
    max_words: int = MAX_WORDS,
    with_caption: bool = True,
) -> AutoPrompt:
    """Build one video's prompt from its frames (RGB uint8 HxWx3, read lazily).

    Models are needed only for the steps that run: ``proposer`` for the box,
    ``masker`` for the click, ``captioner`` for the text. Raises
    :class:`~fastsam2.prompts.proposals.NoProposalError` when no box can be found.
    ``with_caption=False`` stops after the click (the pipeline captions in a stage of
    its own, on other hardware); the phrase is then the user's text or empty.
    """
    sources: dict[str, str] = {}
    random: dict[str, bool] = {}
    objectness: float | None = None
    detector_name = mask_name = None
    it = iter(frames)

    # 1. Box (and the frame everything else looks at).
    if user_box is not None:
        box: Box | None = _as_box(user_box)
        frame_idx = user_frame_idx
        frame = _frame_at(it, frame_idx)
        sources["box"] = "user"
    elif user_point is not None:
        proposer = _need(proposer, "a proposer", "the box")
        frame_idx = user_frame_idx
        frame = _frame_at(it, frame_idx)
        h, w = frame.shape[:2]
        inside = [p for p in filter_proposals(proposer.propose(frame), h, w, box_filter)
                  if box_contains(p.box, user_point)]
        box = tuple(inside[0].box) if inside else None
        objectness = float(inside[0].score) if inside else None
        sources["box"] = "auto" if inside else "none"
    else:
        proposer = _need(proposer, "a proposer", "the box")
        picked = pick_box(it, proposer, max_frames=max_frames, threshold=threshold, box_filter=box_filter)
        frame_idx, frame, box, objectness = picked.frame_idx, picked.frame, picked.box, picked.objectness
        sources["box"] = "auto"
    if user_box is None:  # the detector ran
        detector_name = getattr(proposer, "name", type(proposer).__name__)
        random["detector"] = bool(getattr(proposer, "random_weights", False))

    # 2. Click.
    point_from_mask: bool | None = None
    if user_point is not None:
        if len(user_point) != 2:
            raise ValueError(f"a point is x, y; got {list(user_point)}")
        point: tuple[float, float] | None = (float(user_point[0]), float(user_point[1]))
        sources["point"] = "user"
    else:
        assert box is not None  # no user point means a box was found above or given
        masker = _need(masker, "a masker", "the click")
        click = masker.click(frame, box)
        point, point_from_mask = click.point, click.from_mask
        mask_name = getattr(masker, "name", type(masker).__name__)
        random["sam2_mask"] = bool(getattr(masker, "random_weights", False))
        sources["point"] = "auto"

    # 3-4. Caption and phrase.
    caption: str | None = None
    backend = caption_model = None
    if user_text is not None and user_text.strip():
        phrase = user_text.strip()
        sources["text"] = "user"
    elif not with_caption:
        phrase = ""
        sources["text"] = "none"
    else:
        captioner = _need(captioner, "a captioner", "the text")
        caption = captioner.caption([frame], [box])[0]
        phrase = refine_caption(caption, max_words=max_words)
        backend, caption_model = captioner.backend, captioner.model
        random["captioner"] = bool(getattr(captioner, "random_weights", False))
        sources["text"] = "auto"

    return AutoPrompt(
        frame_idx=frame_idx,
        box=box,
        point=point,
        phrase=phrase,
        objectness=objectness,
        caption=caption,
        point_from_mask=point_from_mask,
        sources=sources,
        detector_model=detector_name,
        mask_model=mask_name,
        caption_backend=backend,
        caption_model=caption_model,
        random_weights=random,
        frame=frame,
    )

