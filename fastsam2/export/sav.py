"""``sa-v``: one JSON of masklets per video, laid out as the SA-V release's ``<video>_manual.json``.

``masklet[i][k]`` is the COCO RLE of masklet ``k`` on the ``i``-th annotated
frame (every ``every``-th frame; SA-V annotates every 4th frame of 24 fps video),
an empty RLE where the object is absent; ``masklet_id`` are positions
0..N-1 as in SA-V, and ``fastsam2_obj_id`` keeps our object ids. Our masklets are
machine-made, so ``masklet_type`` is ``"auto"`` and files are named
``<video_id>_auto.json`` unless ``suffix="manual"`` (what SAM2's training loader
reads) is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from fastsam2 import rle
from fastsam2.export.categories import Categories
from fastsam2.export.source import RunVideo
from fastsam2.export.writer import ExportStats, join, put_bytes


def _bucket(area: float) -> str:
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def masklets(video: RunVideo, categories: Categories, every: int = 1) -> dict:
    h, w = video.height, video.width
    empty = rle.encode(np.zeros((h, w), dtype=bool))[0]
    frames = list(range(0, video.num_frames, every))
    obj_ids = list(video.objects)
    masklet, visible = [], {o: [] for o in obj_ids}
    for t in frames:
        per_frame = []
        for o in obj_ids:
            row = video.objects[o].get(t)
            seen = row is not None and row.area > 0
            visible[o].append(row.area if seen else 0)
            per_frame.append({"size": [h, w], "counts": row.rle if seen else empty})
        masklet.append(per_frame)
    size_abs, first, changes, stability = [], [], [], []
    for o in obj_ids:
        areas = visible[o]
        shown = [a for a in areas if a]
        size_abs.append(float(np.mean(shown)) if shown else 0.0)
        first.append(next((i for i, a in enumerate(areas) if a), 0))
        flags = [bool(a) for a in areas[first[-1]:]]
        changes.append(sum(a != b for a, b in zip(flags, flags[1:])))
        scores = [r.score for r in video.objects[o].values() if r.area]
        stability.append(float(np.mean(scores)) if scores else None)
    n = len(obj_ids)
    return {
        "video_id": video.video_id, "video_duration": None, "video_frame_count": video.num_frames,
        "video_height": h, "video_width": w, "video_resolution": h * w,
        "video_environment": None, "video_split": None,
        "masklet": masklet, "masklet_id": list(range(n)),
        "masklet_size_rel": [a / (h * w) if h * w else 0.0 for a in size_abs],
        "masklet_size_abs": size_abs, "masklet_size_bucket": [_bucket(a) for a in size_abs],
        "masklet_visibility_changes": changes, "masklet_first_appeared_frame": first,
        "masklet_frame_count": [len(frames)] * n, "masklet_edited_frame_count": [0] * n,
        "masklet_type": ["auto"] * n, "masklet_stability_score": stability, "masklet_num": n,
        # Ours, beside SA-V's keys: the object ids, the annotated frame numbers, what they are.
        "fastsam2_obj_id": obj_ids, "fastsam2_frame_idx": frames,
        "fastsam2_category": [categories.name_for(video.video_id, o, video.phrase) for o in obj_ids],
        "fastsam2_random_weights": bool(video.info.get("random_weights")),
    }  # fmt: skip


def write_sav(videos: Iterable[RunVideo], out: str, categories: Categories, every: int = 1, suffix: str = "auto",
              storage_options: dict | None = None) -> ExportStats:
    stats = ExportStats(out)
    for video in videos:
        stats.add_video(video)
        doc = masklets(video, categories, every)
        stats.objects += doc["masklet_num"]
        put_bytes(join(out, f"{video.video_id}_{suffix}.json"), json.dumps(doc).encode(), storage_options)
    return stats
