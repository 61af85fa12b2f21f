"""Tiny DAVIS-layout datasets and run outputs written from label arrays, for the eval tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as mask_utils

from fastsam2.schema import table_from_rows

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]


def write_png(path: Path, labels: np.ndarray, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette(PALETTE)
    im.save(path)


def write_davis(
    root: Path, seqs: dict[str, np.ndarray], palette: bool = True, layout: str = "Annotations/480p"
) -> Path:
    for name, stack in seqs.items():
        for t, frame in enumerate(stack):
            write_png(root / layout / name / f"{t:05d}.png", frame, palette)
    return root


def write_run(
    root: Path, masks: dict[str, dict[int, np.ndarray]], skip: set[tuple[str, int, int]] = frozenset()
) -> Path:
    """A run output root with masks/<video>.parquet, masks given per video as {obj_id: (T, H, W)}."""
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for video, objs in masks.items():
        rows = []
        for obj, stack in objs.items():
            for t, m in enumerate(stack):
                if (video, obj, t) in skip:
                    continue
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                rows.append(
                    dict(video_id=video, obj_id=obj, frame_idx=t, height=m.shape[0], width=m.shape[1],
                         rle=rle["counts"].decode(), area=int(m.sum()), bbox=[0.0] * 4, score=1.0)
                )  # fmt: skip
        pq.write_table(table_from_rows("masks", rows), root / "masks" / f"{video}.parquet")
    return root


def read_stack(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def ellipse(h, w, cy, cx, ry, rx):
    """A filled ellipse mask of an (h, w) frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def two_object_sequence(t=6, h=48, w=64):
    """DAVIS labels (t, h, w): object 1 drifts right, object 2 stays put."""
    labels = np.zeros((t, h, w), np.uint8)
    for k in range(t):
        labels[k][ellipse(h, w, 20, 15 + k, 8, 10)] = 1
        labels[k][ellipse(h, w, 30, 45, 6, 6)] = 2
    return labels
