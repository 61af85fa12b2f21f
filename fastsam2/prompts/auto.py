"""The prompt library: every object's box and click, then every object's caption and phrase.

Two plain functions over already-loaded models, so they run the same in a test,
a script, or inside a Ray actor: the pipeline's ``ProposeStage`` is
:func:`propose_prompts` per video and its ``CaptionStage`` is
:func:`caption_prompts` per batch of videos (the served vLLM path ends in
:func:`record_captions` too). They split where the pipeline splits: proposals
need the frames and SAM2, captions only small region crops and a captioner on
other hardware.

What they decide is written onto the :class:`~fastsam2.config.VideoTask` itself
(one :class:`~fastsam2.config.ObjectPrompt` per object: box, objectness, click,
caption, phrase, CLIP score, where it came from). That task is the one
provenance record: it travels through the stages, and
:mod:`fastsam2.labeling` turns it into the ``objects/`` and ``videos/`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from fastsam2.config import PromptConfig, VideoTask
from fastsam2.prompts.caption import Captioner, region_jpeg
from fastsam2.prompts.click import CoarseMasker
from fastsam2.prompts.grounding import RegionTextScorer, candidate_settings, select_by_text
from fastsam2.prompts.multi import MultiObjectSettings, apply_captions, find_objects, found_to_prompts, grounded_prompts
from fastsam2.prompts.proposals import Proposer
from fastsam2.prompts.region import region_image

#: The CLIP region-text similarity a phrase needs to select an object: the job config's default.
DEFAULT_TEXT_THRESHOLD: float = PromptConfig.model_fields["text_threshold"].default


def propose_prompts(
    task: VideoTask,
    frames: Iterable[np.ndarray],
    proposer: Proposer,
    masker: CoarseMasker,
    settings: MultiObjectSettings = MultiObjectSettings(),
    *,
    max_frames: int = 5,
    text_scorer: Callable[[], RegionTextScorer] | None = None,
    text_threshold: float = DEFAULT_TEXT_THRESHOLD,
) -> np.ndarray:
    """Find the objects of ``task``'s video and write their prompts onto ``task``; returns the prompt frame.

    ``frames`` (RGB uint8 HxWx3) are read lazily, at most ``max_frames`` of them,
    until one has objects (:func:`~fastsam2.prompts.multi.find_objects`).
    Without ``task.text`` the distinct proposals become the objects (source
    ``auto``). With ``task.text`` the phrase picks them: more candidates
    (:func:`~fastsam2.prompts.grounding.candidate_settings`) are scored by CLIP
    region-text similarity and those at ``text_threshold`` or more are kept (source ``text``, their phrase the
    task's, their ``clip_score`` set). ``text_scorer`` returns the scorer and is
    called only for a phrase, so CLIP is loaded only where it is used.

    Raises :class:`~fastsam2.prompts.proposals.NoProposalError` (no object) or
    :class:`~fastsam2.prompts.grounding.NoMatchingObject` (none matches the phrase).
    """
    if task.text:
        if text_scorer is None:
            raise ValueError(f"the phrase {task.text!r} selects objects by CLIP here: propose_prompts needs a text_scorer")
        frame_idx, frame, found = find_objects(frames, proposer, masker, candidate_settings(settings),
                                               max_frames=max_frames)
        picked = select_by_text(frame, found, task.text, text_scorer(), text_threshold, settings.max_objects)
        task.objects = grounded_prompts(picked, frame_idx, 1, task.text)
        task.prompt_source = "text"
    else:
        frame_idx, frame, found = find_objects(frames, proposer, masker, settings, max_frames=max_frames)
        task.objects = found_to_prompts(found, frame_idx, first_id=1)
    task.objectness = task.objects[0].objectness
    return frame


def object_regions(frame: np.ndarray, task: VideoTask) -> list[bytes]:
    """Each object's crop of the prompt frame as JPEG bytes, in ``task.objects`` order.

    What travels from the propose stage to the caption stage (a few kB per
    object in the row), so captioning never decodes video.
    """
    return [region_jpeg(region_image(frame, o.box, "crop")) for o in task.objects]


def caption_prompts(tasks: Sequence[VideoTask], regions: Sequence[Sequence[np.ndarray]], captioner: Captioner) -> None:
    """Caption every object of every task in one batched call; each object gets its caption and phrase.

    ``regions[i]`` holds one RGB region per object of ``tasks[i]``, in
    ``tasks[i].objects`` order (e.g. :func:`object_regions`, decoded). Raises
    ``ValueError`` when they do not line up, before the captioner runs.
    """
    if len(regions) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but regions for {len(regions)}")
    for task, own in zip(tasks, regions):
        if len(own) != len(task.objects) or not own:
            raise ValueError(f"video {task.video_id} has {len(task.objects)} object(s) but {len(own)} region image(s)")
    captions = iter(captioner.caption_regions([r for own in regions for r in own]))
    for task in tasks:
        record_captions(task, [next(captions) for _ in task.objects], captioner.backend, captioner.model)


def record_captions(task: VideoTask, captions: Sequence[str], backend: str, model: str) -> None:
    """Write one caption per object onto ``task``: each object's phrase (its router text) is refined
    from its own caption; ``videos/`` keeps the first object's; the backend and model are recorded."""
    if len(captions) != len(task.objects):
        raise ValueError(f"video {task.video_id}: {len(captions)} caption(s) for {len(task.objects)} object(s)")
    apply_captions(task.objects, captions)
    first = task.objects[0]
    task.caption, task.text = first.caption, first.text
    task.caption_backend, task.caption_model = backend, model
