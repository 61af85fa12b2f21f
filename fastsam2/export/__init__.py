"""Export a run's Parquet masks to the formats training code reads.

- ``coco-video``: one JSON, YouTube-VIS / OVIS layout (:mod:`.coco_video`);
- ``davis``: palette PNGs per frame, DAVIS / YouTube-VOS layout (:mod:`.davis`);
- ``sa-v``: per-video masklet JSON as the SA-V release (:mod:`.sav`).

Every exporter reads the run one video at a time (:func:`.source.iter_run`),
local or ``s3://``, and writes local or ``s3://``.
"""

from __future__ import annotations

from fastsam2.export.categories import Categories, load_category_map
from fastsam2.export.source import ExportError, iter_run
from fastsam2.export.writer import ExportStats, join

FORMATS = ("coco-video", "davis", "sa-v")


def export_run(
    run: str,
    output: str,
    fmt: str,
    *,
    category_map: dict[str, str] | None = None,
    videos: list[str] | None = None,
    every: int = 1,
    sav_suffix: str = "auto",
    frame_ext: str = "jpg",
    storage_options: dict | None = None,
) -> ExportStats:
    """Write ``run``'s finished videos to ``output`` in format ``fmt``; returns what was written.

    For ``coco-video`` an ``output`` not ending in ``.json`` is a folder and the
    file is ``output/instances.json``; frames are named ``<video>/<frame:05d>.<frame_ext>``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if every < 1:
        raise ExportError(f"every must be >= 1, got {every}")
    cats = Categories(category_map)
    stream = iter_run(run, storage_options, videos)
    if fmt == "coco-video":
        from fastsam2.export.coco_video import write_coco_video

        target = output if output.lower().endswith(".json") else join(output, "instances.json")
        return write_coco_video(stream, target, cats, run, storage_options, frame_ext=frame_ext.lstrip("."))
    if fmt == "davis":
        from fastsam2.export.davis import write_davis

        return write_davis(stream, output, cats, storage_options)
    from fastsam2.export.sav import write_sav

    return write_sav(stream, output, cats, every=every, suffix=sav_suffix, storage_options=storage_options)


__all__ = ["FORMATS", "ExportError", "ExportStats", "export_run", "load_category_map"]
