"""Test-only fault injection: a tracking stage that kills its own actor process once, mid-video.

Not part of the package: a test puts the subclass in the pipeline's stage table
(:func:`use_stage`), so no user config carries fault fields.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastsam2 import stages
from fastsam2.stages import TrackStage

log = logging.getLogger(__name__)


def killing_track_stage(kill_at_frame: int, marker: Path) -> type[TrackStage]:
    """A :class:`TrackStage` whose actor process exits after ``kill_at_frame`` frames of a video.

    The marker file records where it fired (``<video_id> <frames done>``) and makes it fire once
    only, so the actor Ray restarts finishes the job. Made inside a function so Ray ships the
    class by value to its workers (the tests folder is not importable there).
    """
    marker = str(marker)

    class KillingTrackStage(TrackStage):
        def _progress_hook(self, task):
            def hook(frames_done: int, num_frames: int) -> None:
                if frames_done >= kill_at_frame and not os.path.exists(marker):
                    with open(marker, "w") as f:
                        f.write(f"{task.video_id} {frames_done}")
                    log.error("fault injection: killing tracking actor on %s at frame %d", task.video_id, frames_done)
                    os._exit(1)

            return hook

    return KillingTrackStage


def use_stage(monkeypatch, stage_cls: type) -> None:
    """Run ``stage_cls`` in place of the stage of its spec's name for this test."""
    monkeypatch.setitem(stages.STAGE_CLASSES, stage_cls.spec.name, stage_cls)
