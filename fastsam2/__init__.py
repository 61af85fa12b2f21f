"""fastsam2-batch: auto-label video datasets with SAM2 at dataset scale.

The library does the work; Ray only moves it. Every step is a plain function or
class importable without Ray; ``fastsam2.stages`` wraps them for Ray Data and
``fastsam2.pipeline`` wires the stages.

From Python::

    import fastsam2
    for f in fastsam2.label_video("clip.mp4", point=(320, 240), text="a dog"):
        print(f.frame_idx, f.masks.shape, f.scores)
    summary = fastsam2.run(["videos/"], "out/", keep_ratio=0.5)

``label_video``, ``run`` and ``FrameLabels`` load on first use, so
``import fastsam2`` stays light (no torch, no Ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FrameLabels", "label_video", "run", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from fastsam2.api import FrameLabels, label_video, run


def __getattr__(name: str) -> Any:
    if name in ("label_video", "run", "FrameLabels"):
        from fastsam2 import api

        return getattr(api, name)
    raise AttributeError(f"module 'fastsam2' has no attribute {name!r}")
