"""``davis``: indexed-palette PNGs, one per frame per video (DAVIS / YouTube-VOS layout).

``OUT/Annotations/<video_id>/<frame:05d>.png`` where a pixel's palette index is
the object id (0 = background), as DAVIS and YouTube-VOS store them, plus
``OUT/meta.json`` (YouTube-VOS style: category and frames of each object) and
``OUT/ImageSets/videos.txt``. ``fastsam2-batch eval --gt OUT`` reads it back.
Where objects overlap, the larger id is drawn last and wins.

A video starts at its first labelled frame (the prompt frame): DAVIS takes the
objects of a sequence from its first annotation, so a video prompted on frame 2
would otherwise look object-less. File names keep the true frame numbers, so
they line up with the source frames (``meta.json`` says where each video starts).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from PIL import Image

from fastsam2 import rle
from fastsam2.export.categories import Categories
from fastsam2.export.source import ExportError, RunVideo
from fastsam2.export.writer import ExportStats, join, open_text, put_bytes

VOID = 255  # reserved by DAVIS for "don't care" pixels


@lru_cache(maxsize=1)
def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map: index -> RGB by interleaving the index's bits."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def label_map(video: RunVideo, frame_idx: int) -> np.ndarray:
    out = np.zeros((video.height, video.width), dtype=np.uint8)
    for obj_id, rows in video.objects.items():
        row = rows.get(frame_idx)
        if row is not None and row.area:
            out[rle.decode(row.rle, video.height, video.width)] = obj_id
    return out


def png_bytes(labels: np.ndarray) -> bytes:
    im = Image.fromarray(labels, mode="P")
    im.putpalette(davis_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_davis(videos: Iterable[RunVideo], out: str, categories: Categories,
                storage_options: dict | None = None) -> ExportStats:
    stats = ExportStats(out)
    names = []
    with open_text(join(out, "meta.json"), storage_options) as meta:
        meta.write('{"videos": {')
        for video in videos:
            bad = [o for o in video.objects if not 0 < o < VOID]
            if bad:
                raise ExportError(f"{video.video_id}: object id(s) {bad} do not fit a palette PNG (1..254)")
            stats.add_video(video)
            start = min((t for rows in video.objects.values() for t in rows), default=0)
            for t in range(start, video.num_frames):
                put_bytes(join(out, "Annotations", video.video_id, f"{t:05d}.png"), png_bytes(label_map(video, t)),
                          storage_options)
            objects = {
                str(obj_id): {"category": categories.name_for(video.video_id, obj_id, video.phrase),
                              "frames": [f"{t:05d}" for t, r in sorted(rows.items()) if r.area]}
                for obj_id, rows in video.objects.items()
            }  # fmt: skip
            stats.objects += len(objects)
            entry = {"objects": objects, "first_frame": f"{start:05d}", "random_weights": bool(video.info.get("random_weights"))}
            meta.write(("" if not names else ",") + f"\n{json.dumps(video.video_id)}: " + json.dumps(entry))
            names.append(video.video_id)
        meta.write("\n}}\n")
    put_bytes(join(out, "ImageSets", "videos.txt"), "".join(f"{n}\n" for n in names).encode(), storage_options)
    return stats
