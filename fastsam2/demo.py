"""Sample videos for ``fastsam2-batch demo``: synthetic, with exact ground truth.

Writes a DAVIS-layout root (``JPEGImages/480p``, ``Annotations/480p``) holding
two frame-folder videos and the ground truth of a third video stored as mp4,
plus a manifest CSV that prompts each video with a first-frame click and box.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fastsam2.synthetic import first_frame_prompts, make_video, write_frames, write_mp4

SAMPLES = (("shapes-disc", 1, 0), ("shapes-ring", 1, 2), ("shapes-pair", 2, 1))


def make_samples(root: str | Path, num_frames: int = 12, height: int = 240, width: int = 320) -> Path:
    """Write the sample videos and their manifest; return the manifest path."""
    root = Path(root)
    rows = []
    for i, (name, num_objects, seed) in enumerate(SAMPLES):
        video = make_video(name, num_frames=num_frames, height=height, width=width, num_objects=num_objects, seed=seed)
        frames_dir = write_frames(video, root)  # also writes Annotations/480p/<name>
        if i == len(SAMPLES) - 1:  # the last sample travels as an mp4
            uri = str(write_mp4(video, root / "videos" / f"{name}.mp4"))
            for f in frames_dir.iterdir():
                f.unlink()
            frames_dir.rmdir()
        else:
            uri = str(frames_dir)
        for p in first_frame_prompts(video):
            rows.append({"uri": uri, "video_id": name, "obj_id": p["obj_id"],
                         "point": ",".join(f"{v:g}" for v in p["point"]),
                         "box": ",".join(f"{v:g}" for v in p["box"])})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri", "video_id", "obj_id", "point", "box"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
