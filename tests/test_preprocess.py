"""One preprocessing for SAM2's input: the tracker, router training and sam2's own loader agree bit for bit."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fastsam2.preprocess import SAM2_MEAN, SAM2_STD, preprocess_frame
from fastsam2.tracking.train_router import davis_frames, load_frame


def _textured_frames(folder, n=2, h=75, w=131):
    """JPEG frames with sharp edges and gradients: resampling filters differ on them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        yy, xx = np.mgrid[:h, :w]
        rgb = np.stack([(xx * 2 + i * 7) % 256, (yy * 3) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i:05d}.jpg", quality=95)
    return sorted(folder.glob("*.jpg"))


def test_inference_input_is_sam2s_own_loader(tmp_path):
    from sam2.utils.misc import load_video_frames

    paths = _textured_frames(tmp_path / "seq")
    size = 64
    theirs, _, _ = load_video_frames(str(tmp_path / "seq"), size, offload_video_to_cpu=True,
                                     img_mean=SAM2_MEAN, img_std=SAM2_STD, compute_device=torch.device("cpu"))
    ours = torch.stack([preprocess_frame(np.asarray(Image.open(p).convert("RGB")), size) for p in paths])
    assert torch.equal(ours, theirs)


def test_router_trains_on_the_pixels_the_tracker_sees(tmp_path):
    (path,) = _textured_frames(tmp_path / "seq", n=1)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    for size in (64, 256):
        x = load_frame(path, size)
        assert x.shape == (1, 3, size, size)
        assert torch.equal(x[0], preprocess_frame(rgb, size))


def test_sources_eval_and_router_training_read_one_davis_layout(tmp_path):
    """The synthetic writer, sources, eval's ground truth and router training share fastsam2.davis_layout."""
    from fastsam2.eval.readers import GroundTruthSet
    from fastsam2.sources import discover
    from fastsam2.synthetic import make_video, write_frames

    root = tmp_path / "davis"
    for name in ("aa", "bb"):
        write_frames(make_video(name, num_frames=4, height=32, width=40), root)
    assert sorted(t.video_id for t in discover([str(root)])) == ["aa", "bb"]
    assert GroundTruthSet(str(root)).sequences == ["aa", "bb"]
    triples = davis_frames(root, "480p", None, per_seq=2, stride=1)
    assert [(s, i.name, a.name) for s, i, a in triples] == [
        ("aa", "00000.jpg", "00000.png"), ("aa", "00001.jpg", "00001.png"),
        ("bb", "00000.jpg", "00000.png"), ("bb", "00001.jpg", "00001.png")]
