"""SAM2's frame preprocessing, in one place: what the tracker feeds the model and what the router trains on.

sam2's own frame loader (``sam2.utils.misc._load_img_as_tensor``) resizes the
RGB frame to a square with PIL's default filter (bicubic), scales to [0, 1]
and normalises with ImageNet's mean and std. The streaming tracker and
``train-router`` both call :func:`preprocess_frame`, so the router is trained
on the very pixels it sees at inference.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: SAM2's input normalisation (``load_video_frames`` defaults: ImageNet mean/std).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


def preprocess_frame(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """RGB uint8 HxWx3 -> normalised 3xSxS float32, exactly as sam2's frame loader does."""
    img = np.array(Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC)) / 255.0
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    mean = torch.tensor(SAM2_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(SAM2_STD, dtype=torch.float32)[:, None, None]
    return (t - mean) / std
