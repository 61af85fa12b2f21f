"""``coco-video``: one JSON in the YouTube-VIS / OVIS layout.

``videos`` (``file_names`` per frame, size, length), ``annotations`` (one per
object per video: ``segmentations`` / ``areas`` / ``bboxes`` per frame, ``None``
where the object is absent, COCO RLE as pycocotools writes it) and
``categories``. The annotations are written as they are read, so memory holds
one video; the ``videos`` list waits in a temp file and ``categories`` (one entry
per class) in memory, and both come after them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable

from fastsam2.export.categories import Categories
from fastsam2.export.source import RunVideo
from fastsam2.export.writer import ExportStats, open_text


def frame_name(video_id: str, frame_idx: int, ext: str = "jpg") -> str:
    return f"{video_id}/{frame_idx:05d}.{ext}"


def annotation(video: RunVideo, obj_id: int, ann_id: int, video_num: int, category_id: int) -> dict:
    segs, areas, boxes, scores = [], [], [], []
    rows = video.objects[obj_id]
    for t in range(video.num_frames):
        row = rows.get(t)
        if row is None or row.area == 0:
            segs.append(None), areas.append(None), boxes.append(None)
            continue
        x0, y0, x1, y1 = row.bbox
        segs.append({"size": [video.height, video.width], "counts": row.rle})
        areas.append(row.area)
        boxes.append([x0, y0, x1 - x0, y1 - y0])  # COCO: x, y, w, h
        scores.append(row.score)
    return {
        "id": ann_id, "video_id": video_num, "category_id": category_id, "iscrowd": 0,
        "height": video.height, "width": video.width, "length": 1,
        "segmentations": segs, "areas": areas, "bboxes": boxes,
        "score": sum(scores) / len(scores) if scores else 0.0, "fastsam2_obj_id": obj_id,
    }  # fmt: skip


def write_coco_video(videos: Iterable[RunVideo], out: str, categories: Categories, run: str,
                     storage_options: dict | None = None, frame_ext: str = "jpg") -> ExportStats:
    stats = ExportStats(out)
    ann_id = 0
    # The videos list (a file name per frame) goes after the annotations; it waits in a
    # local temp file, so memory holds one video whatever the run's size.
    with open_text(out, storage_options) as fh, tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        fh.write('{"info": ' + json.dumps({"description": f"fastsam2-batch labels of {run}"}) + ', "licenses": [],\n')
        fh.write('"annotations": [')
        for num, video in enumerate(videos, start=1):
            stats.add_video(video)
            entry = {
                "id": num, "name": video.video_id, "width": video.width, "height": video.height,
                "length": video.num_frames,
                "file_names": [frame_name(video.video_id, t, frame_ext) for t in range(video.num_frames)],
                "random_weights": bool(video.info.get("random_weights")),
            }  # fmt: skip
            spool.write(("" if num == 1 else ",\n") + json.dumps(entry))
            for obj_id in video.objects:
                cat = categories.id_for(categories.name_for(video.video_id, obj_id, video.phrase))
                ann_id += 1
                fh.write(("\n" if ann_id == 1 else ",\n") + json.dumps(annotation(video, obj_id, ann_id, num, cat)))
                stats.objects += 1
        fh.write("\n],\n")
        fh.write('"videos": [')
        spool.seek(0)
        shutil.copyfileobj(spool, fh)
        fh.write("],\n")
        fh.write('"categories": ' + json.dumps(categories.coco()) + "}\n")
    return stats
