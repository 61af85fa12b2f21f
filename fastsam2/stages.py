"""Ray Data stages: thin callable classes around the library, one per pipeline step.

Each stage loads its model once (in ``__init__``, i.e. once per actor) and then
handles one batch of videos per call. Rows travel as ``{"video_id", "task"}``
where ``task`` is a :class:`~fastsam2.config.VideoTask` as JSON, so no Arrow type
inference is involved. A failure on one video becomes an error row for that
video and never stops the others.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from fastsam2.config import JobConfig, VideoTask
from fastsam2.labeling import error_row, label_video_steps
from fastsam2.output import from_ipc, to_ipc, write_video
from fastsam2.progress import report
from fastsam2.schema import table_from_rows
from fastsam2.stage_specs import CAPTION, PROPOSE, TRACK, WRITE, captions

log = logging.getLogger(__name__)


def _tasks(batch: dict) -> list[VideoTask]:
    return [VideoTask.model_validate_json(str(t)) for t in batch["task"]]


def _set_threads(cfg: JobConfig, stage: str) -> None:
    """One torch thread per whole CPU this actor was given (at least one)."""
    import torch

    torch.set_num_threads(max(1, int(cfg.resource(stage).num_cpus)))


def _fail(task: VideoTask, stage: str, exc: BaseException, run_id: str) -> None:
    """Mark ``task`` failed at ``stage``; later stages pass it through to errors/."""
    log.warning("video %s failed in %s: %s: %s", task.video_id, stage, type(exc).__name__, exc)
    row = error_row(task, stage, exc, run_id)
    row.pop("failed_at")  # stamped when written
    task.error = row


def _rows(tasks: list[VideoTask], crops: list[list[bytes] | None] | None = None) -> dict:
    """A batch of rows; ``crops`` adds the ``region_jpegs`` column (every object's crop as JPEG
    bytes, what both caption paths read)."""
    out = {"video_id": np.array([t.video_id for t in tasks], dtype=object),
           "task": np.array([t.model_dump_json() for t in tasks], dtype=object)}
    if crops is not None:
        out["region_jpegs"] = np.array([list(c) if c else None for c in crops], dtype=object)
    return out


class ProposeStage:
    """Region-proposal actor: RPN box on the first frame that has one, then a distance-transform click.

    Only videos without a user prompt are touched; the others pass through.
    """

    spec = PROPOSE  # name, default resources, when a job needs it, GPUs: fastsam2.stage_specs

    def __init__(self, config_json: str):
        from fastsam2.prompts.click import CoarseMasker

        self.cfg = JobConfig.model_validate_json(config_json)
        _set_threads(self.cfg, self.spec.name)
        m = self.cfg.model
        self.proposer = load_proposer(self.cfg)
        self.masker = CoarseMasker(config_name=m.sam2_config, checkpoint=m.sam2_checkpoint,
                                   image_size=min(m.image_size, 1024), device=m.device, random_weights=m.random_weights)
        self._text_scorer = LazyTextScorer(self.cfg)  # CLIP, for text-grounded selection (built on use)

    def __call__(self, batch: dict) -> dict:
        from fastsam2.prompts.auto import object_regions, propose_prompts
        from fastsam2.sources import FrameReader

        tasks = _tasks(batch)
        crops: list[list[bytes] | None] = [None] * len(tasks)  # every object's crop, for captioning
        p = self.cfg.prompts
        for i, task in enumerate(tasks):
            if task.error or task.prompt_source != "auto":
                continue
            try:
                reader = FrameReader(task, self.cfg.storage_options, max_frames=self.cfg.max_frames)
                frame = propose_prompts(task, iter(reader), self.proposer, self.masker, multi_object_settings(self.cfg),
                                        max_frames=p.max_search_frames, text_scorer=self._text_scorer,
                                        text_threshold=p.text_threshold)
                if captions(self.cfg, task):
                    # The regions travel with the row: the caption stage (other actors, other GPUs)
                    # never decodes the video.
                    crops[i] = object_regions(frame, task)
            except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
                _fail(task, self.spec.name, exc, self.cfg.run_id)
        report(self.cfg.run_id, self.spec.name, len(tasks))
        return _rows(tasks, crops)


class LazyTextScorer:
    """A job's CLIP region-text scorer, built on the first call (the first video a phrase selects in).

    The model is the router's (same name, device and bf16 storage, through
    :func:`~fastsam2.models.factory.shared_clip`), so a tracking actor that
    also prunes with text relevance holds one CLIP, not two. Without weights the
    call fails with one line naming ``--text``, and every later call fails the
    same way at once (no new load, no new download attempt per video).
    """

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg
        self._scorer = None
        self._unavailable: str | None = None  # the one-line error, once the weights were found missing

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    def __call__(self):
        from fastsam2.models.weights import ClipWeightsUnavailable

        if self._unavailable is not None:
            raise ClipWeightsUnavailable(self._unavailable)
        if self._scorer is None:
            from fastsam2.models.factory import CLIP_WEIGHTS_DTYPE, shared_clip
            from fastsam2.prompts.grounding import RegionTextScorer

            pr, m = self.cfg.pruning, self.cfg.model
            try:
                clip = shared_clip(pr.clip_model, pr.clip_pretrained, random_weights=m.random_weights, device=m.device,
                                   weights_dtype=CLIP_WEIGHTS_DTYPE)
            except ClipWeightsUnavailable as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._unavailable = f"--text selects objects by CLIP, which is unavailable: {first_line}"
                raise ClipWeightsUnavailable(self._unavailable) from None
            self._scorer = RegionTextScorer(clip)
        return self._scorer


def load_proposer(cfg: JobConfig):
    """The region proposer of a job (the detector weights it names, or random ones)."""
    from fastsam2.models.detector import ProposalModel
    from fastsam2.models.factory import load_detector

    m = cfg.model
    weights = None if m.random_weights else (cfg.prompts.detector_weights or "default")
    # Actors may fetch torchvision's checkpoint once into its cache where there is network.
    return ProposalModel(load_detector(weights, device=m.device, download=True))


def multi_object_settings(cfg: JobConfig):
    """The proposal-selection settings of a job (one home for the mapping)."""
    from fastsam2.prompts.multi import MultiObjectSettings

    p = cfg.prompts
    return MultiObjectSettings(max_objects=p.max_objects, threshold=p.min_objectness,
                               nms_iou=p.nms_iou, dedup_mask_iou=p.dedup_mask_iou)


class CaptionStage:
    """LLaVA captions the proposed region; the caption is refined to a short phrase.

    The region arrives as JPEG bytes in the row (cut by :class:`ProposeStage`), so this
    stage never reads video. Backends (transformers in-process, vLLM engine in this
    actor, or an OpenAI-compatible endpoint) sit behind one interface; videos that
    already have text, or failed earlier, pass through. On clusters the vllm backend
    runs as a served stage instead (:func:`fastsam2.prompts.caption_vllm.served_caption_stage`).
    """

    spec = CAPTION

    def __init__(self, config_json: str):
        from fastsam2.prompts.captioners import make_captioner

        self.cfg = JobConfig.model_validate_json(config_json)
        _set_threads(self.cfg, self.spec.name)
        m, p = self.cfg.model, self.cfg.prompts
        self.captioner = make_captioner(p.caption_backend, p.caption_model, p.caption_endpoint,
                                        random_weights=m.random_weights, device=m.device,
                                        engine_kwargs=p.caption_engine or None)

    def __call__(self, batch: dict) -> dict:
        from fastsam2.prompts.auto import caption_prompts
        from fastsam2.prompts.caption import jpeg_to_array

        tasks = _tasks(batch)
        jpegs = batch.get("region_jpegs")
        todo, regions = [], []  # one region per object: all objects of the batch in one call
        for i, task in enumerate(tasks):
            if not captions(self.cfg, task):
                continue
            try:
                crops = None if jpegs is None else jpegs[i]
                if crops is None or len(crops) != len(task.objects):
                    raise ValueError("the propose stage sent no region image for this video's objects")
                regions.append([jpeg_to_array(c) for c in crops])
                todo.append(task)
            except Exception as exc:  # noqa: BLE001
                _fail(task, self.spec.name, exc, self.cfg.run_id)
        if todo:
            try:
                caption_prompts(todo, regions, self.captioner)
            except Exception as exc:  # noqa: BLE001
                for task in todo:
                    _fail(task, self.spec.name, exc, self.cfg.run_id)
        report(self.cfg.run_id, self.spec.name, len(tasks))
        return _rows(tasks)


class TrackStage:
    """SAM2 video actor: holds the model, tracks one video at a time with its own memory bank."""

    spec = TRACK

    def __init__(self, config_json: str):
        from fastsam2.tracking.factory import build_tracker, load_tracker_sam2

        self.cfg = JobConfig.model_validate_json(config_json)
        _set_threads(self.cfg, self.spec.name)
        self.sam2 = load_tracker_sam2(self.cfg)
        self.tracker = build_tracker(self.cfg, self.sam2)
        self._text_scorer = LazyTextScorer(self.cfg)  # a phrase selects late objects too (built on use)
        self.detector = self._new_object_detector() if self.cfg.prompts.detect_every else None

    def _new_object_detector(self):
        """Proposer, coarse masker (sharing the tracker's SAM2), captioner and (lazy) CLIP scorer
        for objects that enter later."""
        from fastsam2.prompts.captioners import make_captioner
        from fastsam2.prompts.click import CoarseMasker
        from fastsam2.prompts.multi import NewObjectDetector

        m, p = self.cfg.model, self.cfg.prompts
        proposer = load_proposer(self.cfg)
        masker = CoarseMasker(self.sam2)
        captioner = None
        if p.caption_backend != "none" and not p.text:
            captioner = make_captioner(p.caption_backend, p.caption_model, p.caption_endpoint,
                                       random_weights=m.random_weights, device=m.device)
        return NewObjectDetector(proposer, masker, multi_object_settings(self.cfg), p.new_object_iou, captioner,
                                 text_scorer=self._text_scorer, text_threshold=p.text_threshold)

    def _progress_hook(self, task: VideoTask):
        """Called as ``hook(frames_done, num_frames)`` after each tracked frame; None: no hook.

        A seam for subclasses (tests inject faults through it: tests/fault_injection.py).
        """
        return None

    def _label_steps(self, task: VideoTask, tracker):
        """One video's tracking coroutine on ``tracker`` (this actor's view for that video)."""
        detector = self.detector.for_video(task) if self.detector is not None else None
        return label_video_steps(task, tracker, self.cfg, progress=self._progress_hook(task), detector=detector)

    def _tables(self, task: VideoTask, outcome) -> tuple[dict, str]:
        """A video's tables, or its errors/ row when tracking it failed."""
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            tables = {
                "masks": table_from_rows("masks", outcome.masks),
                "frames": table_from_rows("frames", outcome.frames),
                "objects": table_from_rows("objects", outcome.objects),
                "videos": table_from_rows("videos", [outcome.video]),
            }
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            log.warning("video %s failed: %s: %s", task.video_id, type(exc).__name__, exc)
            return {"errors": table_from_rows("errors", [error_row(task, self.spec.name, exc, self.cfg.run_id)])}, "error"
        return tables, "ok"

    def __call__(self, batch: dict) -> dict:
        """Track the batch's videos, ``videos_per_actor`` at a time in lockstep
        (:func:`fastsam2.tracking.lockstep.run_lockstep`); rows leave in batch order."""
        from fastsam2.tracking.lockstep import run_lockstep

        tasks = list(_tasks(batch))
        done: dict[int, tuple[dict, str]] = {}
        for i, task in enumerate(tasks):
            if task.error is not None:  # failed in an earlier stage: pass it through
                row = {**task.error, "failed_at": dt.datetime.now(dt.timezone.utc)}
                done[i] = {"errors": table_from_rows("errors", [row])}, "error"
        jobs = [(i, lambda view, task=task: self._label_steps(task, view))
                for i, task in enumerate(tasks) if i not in done]
        for i, outcome in run_lockstep(self.tracker, jobs, self.cfg.videos_per_actor):
            done[i] = self._tables(tasks[i], outcome)
        out: dict[str, list] = {"video_id": [], "status": [], "payload": []}
        for i, task in enumerate(tasks):
            tables, status = done[i]
            out["video_id"].append(task.video_id)
            out["status"].append(status)
            out["payload"].append({name: to_ipc(t) for name, t in tables.items()})
        report(self.cfg.run_id, self.spec.name, len(out["video_id"]))
        return {k: np.array(v, dtype=object) for k, v in out.items()}


class WriteStage:
    """Writes each video's tables under the output root (atomic, retried on transient I/O errors).

    A write that still fails is reported in the summary row and, where the storage
    still takes it, as an errors/ row (the video is then redone by the next run);
    it does not stop the job.
    """

    spec = WRITE

    def __init__(self, config_json: str):
        self.cfg = JobConfig.model_validate_json(config_json)

    def _record_write_failure(self, video_id: str, payload: dict, exc: BaseException) -> None:
        """Best effort: an errors/ row for a video whose rows could not be written."""
        try:
            data = payload.get("videos") or payload.get("errors")
            first = from_ipc(data).to_pylist()[0] if data is not None else {}
            task = VideoTask(video_id=video_id, uri=str(first.get("uri") or ""), source_id=first.get("source_id"))
            row = error_row(task, self.spec.name, exc, self.cfg.run_id)
            write_video(self.cfg.output, video_id, {"errors": table_from_rows("errors", [row])}, self.cfg.storage_options)
        except Exception as again:  # noqa: BLE001 - e.g. the disk is still full
            log.error("could not record the write failure of %s either: %s: %s", video_id, type(again).__name__, again)

    def __call__(self, batch: dict) -> dict:
        summary: dict[str, list] = {"video_id": [], "status": [], "num_masks": [], "message": []}
        for video_id, status, payload in zip(batch["video_id"], batch["status"], batch["payload"]):
            video_id, status, message, num_masks = str(video_id), str(status), "", 0
            try:
                # Ray merges the payload dicts of a batch into one struct type: absent tables are None.
                tables = {name: from_ipc(data) for name, data in payload.items() if data is not None}
                write_video(self.cfg.output, video_id, tables, self.cfg.storage_options)
                if "errors" in tables:
                    err = tables["errors"].to_pylist()[0]
                    message = f"[{err['stage']}] {err['error_type']}: {err['message']}"
                else:
                    num_masks = tables["masks"].num_rows
            except Exception as exc:  # noqa: BLE001
                log.error("writing %s failed: %s: %s", video_id, type(exc).__name__, exc)
                status, message = "error", f"[write] {type(exc).__name__}: {exc} (not written; a re-run redoes it)"
                self._record_write_failure(video_id, payload, exc)
            summary["video_id"].append(video_id)
            summary["status"].append(status)
            summary["num_masks"].append(num_masks)
            summary["message"].append(message)
        report(self.cfg.run_id, self.spec.name, len(summary["video_id"]))
        return {k: np.array(v) for k, v in summary.items()}


#: The Ray class of each declared stage, by name (what the pipeline maps its stages to).
STAGE_CLASSES: dict[str, type] = {cls.spec.name: cls for cls in (ProposeStage, CaptionStage, TrackStage, WriteStage)}
