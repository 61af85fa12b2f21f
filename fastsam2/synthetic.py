"""Synthetic videos with exact ground truth: moving shapes on a textured background.

Used by the tests and by ``fastsam2-batch demo``. Each video has one or more
objects (disc, square, ring) moving on straight paths that bounce off the
borders; the ground truth is the exact pixel mask of each object per frame.
Written either as a DAVIS-layout frame folder with palette annotations, or as
an mp4 (PyAV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fastsam2.davis_layout import annotations_dir, images_dir

SHAPES = ("disc", "square", "ring")
COLORS = ((230, 60, 50), (40, 170, 70), (50, 90, 220), (240, 200, 40))


@dataclass
class SyntheticVideo:
    name: str
    frames: list[np.ndarray]  # uint8 H x W x 3
    masks: list[np.ndarray]  # uint8 H x W, 0 = background, k = object k


def _shape_mask(shape: str, cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if shape == "square":
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    d = np.hypot(xx - cx, yy - cy)
    if shape == "ring":
        return (d <= r) & (d >= 0.5 * r)
    return d <= r


def make_video(
    name: str = "shapes",
    num_frames: int = 8,
    height: int = 120,
    width: int = 160,
    num_objects: int = 1,
    seed: int = 0,
    appear_at: dict[int, int] | None = None,
) -> SyntheticVideo:
    """A deterministic video of ``num_objects`` shapes moving on a noisy gradient.

    ``appear_at`` maps an object number (1-based, its label value) to the first
    frame it is drawn on: objects that enter mid-video.
    """
    appear_at = appear_at or {}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack(
        [60 + 40 * xx / width, 70 + 30 * yy / height, 90 + 20 * (xx + yy) / (width + height)], axis=-1
    )
    background = background + rng.normal(0, 6, size=background.shape)
    objs = []
    for k in range(num_objects):
        r = rng.uniform(0.12, 0.2) * min(height, width)
        objs.append(
            {
                "shape": SHAPES[(seed + k) % len(SHAPES)],
                "r": r,
                "pos": np.array([rng.uniform(r, width - r), rng.uniform(r, height - r)]),
                "vel": rng.uniform(-0.04, 0.04, size=2) * np.array([width, height]),
                "color": np.array(COLORS[k % len(COLORS)], dtype=float),
            }
        )
    frames, masks = [], []
    for t in range(num_frames):
        img = background.copy()
        label = np.zeros((height, width), dtype=np.uint8)
        for k, o in enumerate(objs, start=1):
            m = _shape_mask(o["shape"], o["pos"][0], o["pos"][1], o["r"], height, width)
            if t >= appear_at.get(k, 0):  # later objects are drawn over earlier ones
                img[m] = o["color"]
                label[m] = k
            o["pos"] = o["pos"] + o["vel"]
            for axis, size in ((0, width), (1, height)):
                if not o["r"] <= o["pos"][axis] <= size - o["r"]:
                    o["vel"][axis] *= -1
                    o["pos"][axis] = np.clip(o["pos"][axis], o["r"], size - o["r"])
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(label)
    return SyntheticVideo(name=name, frames=frames, masks=masks)


def three_shapes_and_a_late_one(name: str = "late", num_frames: int = 10, height: int = 96, width: int = 128,
                                seed: int = 3) -> SyntheticVideo:
    """Three moving shapes from frame 0 and a fourth that appears at frame 6."""
    return make_video(name, num_frames=num_frames, height=height, width=width, num_objects=4, seed=seed,
                      appear_at={4: 6})


class GroundTruthProposer:
    """TEST DOUBLE behind the proposer interface: proposes the exact boxes of the synthetic
    shapes visible on a frame (objectness 0.99), read from the video's ground truth.

    Random-weight RPNs propose nothing meaningful; tests that need proposals that
    hit the shapes use this instead. The frame is matched to the nearest frame of
    ``video`` (exact for in-memory frames, nearest for decoded ones). ``only``
    restricts the objects it reports (label values).
    """

    name = "ground-truth-proposer (test double)"
    random_weights = False

    def __init__(self, video: SyntheticVideo, only: set[int] | None = None) -> None:
        self.video = video
        self.only = only

    def propose(self, frame: np.ndarray):
        from fastsam2.models.detector import Proposal

        diffs = [np.abs(f.astype(np.int16) - frame.astype(np.int16)).mean() for f in self.video.frames]
        label = self.video.masks[int(np.argmin(diffs))]
        out = []
        for k in sorted(int(v) for v in np.unique(label) if v):
            if self.only is not None and k not in self.only:
                continue
            ys, xs = np.nonzero(label == k)
            out.append(Proposal((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), 0.99))
        return out


def first_frame_prompts(video: SyntheticVideo) -> list[dict]:
    """A click at each object's deepest interior point and its tight box, on frame 0."""
    from scipy.ndimage import distance_transform_edt

    prompts = []
    label = video.masks[0]
    for k in sorted(int(v) for v in np.unique(label) if v):
        m = label == k
        dist = distance_transform_edt(m)
        y, x = np.unravel_index(int(np.argmax(dist)), m.shape)
        ys, xs = np.nonzero(m)
        prompts.append(
            {"obj_id": k, "point": [float(x), float(y)], "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]}
        )
    return prompts


def _palette() -> list[int]:
    pal = [0, 0, 0] + [c for color in COLORS for c in color]
    return pal + [0] * (768 - len(pal))


def write_frames(video: SyntheticVideo, root: str | Path, fmt: str = "jpg") -> Path:
    """Write DAVIS layout: ``root/JPEGImages/480p/<name>/00000.jpg`` and palette annotations."""
    root = Path(root)
    img_dir = Path(images_dir(root)) / video.name
    ann_dir = Path(annotations_dir(root)) / video.name
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i, (frame, mask) in enumerate(zip(video.frames, video.masks)):
        Image.fromarray(frame).save(img_dir / f"{i:05d}.{fmt}", quality=95)
        ann = Image.fromarray(mask, mode="P")
        ann.putpalette(_palette())
        ann.save(ann_dir / f"{i:05d}.png")
    return img_dir


def write_mp4(video: SyntheticVideo, path: str | Path, fps: int = 10) -> Path:
    """Encode the frames as an mp4 (H.264 where PyAV has it, MPEG-4 part 2 otherwise)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = video.frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
        except Exception:  # noqa: BLE001 - encoder availability depends on the PyAV build
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for frame in video.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clip_dataset(root: str | Path, frames: dict[str, int], height: int = 64, width: int = 80) -> Path:
    """One small mp4 per ``{name: num_frames}`` entry (one moving shape each) and a manifest
    CSV with a first-frame click per object; returns the manifest path.

    What load tests, fault tests and benchmarks feed the pipeline.
    """
    import csv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, (name, n) in enumerate(frames.items()):
        video = make_video(name, num_frames=n, height=height, width=width, num_objects=1, seed=seed)
        path = write_mp4(video, root / f"{name}.mp4")
        for p in first_frame_prompts(video):
            rows.append({"uri": str(path), "obj_id": p["obj_id"], "point": "{},{}".format(*p["point"])})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["uri", "obj_id", "point"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
