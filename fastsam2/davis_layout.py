"""The DAVIS folder layout, in one place: ``ROOT/JPEGImages/<res>/<seq>/`` and ``ROOT/Annotations/<res>/<seq>/``.

Sources (frames to label), eval (ground truth) and router training (frames with
ground truth) all read it; the helpers return ``/``-joined strings, so they serve
local paths and object-store paths alike (``pathlib.Path`` callers wrap them).
"""

from __future__ import annotations

IMAGES = "JPEGImages"
ANNOTATIONS = "Annotations"
#: The resolution folders DAVIS ships, the default first.
RESOLUTIONS = ("480p", "Full-Resolution")
DEFAULT_RESOLUTION = RESOLUTIONS[0]


def _join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts])


def images_dir(root: str, resolution: str = DEFAULT_RESOLUTION) -> str:
    """``ROOT/JPEGImages/<resolution>``: one folder of JPEG frames per sequence."""
    return _join(root, IMAGES, resolution)


def annotations_dir(root: str, resolution: str = DEFAULT_RESOLUTION) -> str:
    """``ROOT/Annotations/<resolution>``: one folder of palette PNGs per sequence."""
    return _join(root, ANNOTATIONS, resolution)


def image_roots(root: str) -> list[str]:
    """Where a DAVIS root may keep its sequences' frames, most specific first."""
    return [images_dir(root, r) for r in RESOLUTIONS] + [_join(root, IMAGES)]


def annotation_roots(root: str) -> list[str]:
    """Where a ground-truth root may keep its sequences' PNGs, most specific first.

    The root itself comes last, so a path straight to ``Annotations/480p`` (or any
    folder of ``<seq>/`` folders) works too.
    """
    return [annotations_dir(root), _join(root, ANNOTATIONS), str(root).rstrip("/")]
