"""Class-agnostic region proposals from torchvision's Faster R-CNN RPN.

Only the region proposal network is run (transform -> backbone -> RPN): its
objectness score says "something is here" without naming a class, which is what
an auto prompt needs for objects outside COCO's 80 classes. The ROI heads are
built (so full detector checkpoints load strictly) but never called.

Weights: torchvision's pretrained detector, read from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``) or a local file, downloaded into that cache
only when ``download=True``; or random weights for tests and smoke runs, said in
the log and recorded on the model (``random_weights``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fastsam2.models.sam2 import WeightsUnavailable, resolve_device

log = logging.getLogger(__name__)

#: Detector used with pretrained weights (the strongest RPN torchvision ships).
DEFAULT_ARCH = "fasterrcnn_resnet50_fpn_v2"
#: Detector used with random weights: same classes, fast on CPU.
RANDOM_ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"

ARCHS = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)


class Proposal(NamedTuple):
    """One class-agnostic box: ``(x0, y0, x1, y1)`` in frame pixels, objectness in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


def _builder_and_weights(arch: str):
    from torchvision.models import detection

    if arch not in ARCHS:
        raise ValueError(f"unknown detector {arch!r}; choose one of {list(ARCHS)}")
    weights_enum = {
        "fasterrcnn_resnet50_fpn": detection.FasterRCNN_ResNet50_FPN_Weights,
        "fasterrcnn_resnet50_fpn_v2": detection.FasterRCNN_ResNet50_FPN_V2_Weights,
        "fasterrcnn_mobilenet_v3_large_fpn": detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights,
        "fasterrcnn_mobilenet_v3_large_320_fpn": detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    }[arch]
    return getattr(detection, arch), weights_enum.DEFAULT


def torchvision_cache_path(arch: str) -> Path:
    """Where torchvision keeps (or would download) the pretrained ``arch`` checkpoint."""
    _, weights = _builder_and_weights(arch)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def load_detector_state(arch: str, weights: str, download: bool = False) -> dict:
    """Resolve ``weights`` (``"default"`` or a file path) to a state dict.

    ``"default"`` means torchvision's pretrained checkpoint for ``arch``, read
    from torchvision's cache; with ``download`` it is fetched there when absent.
    A file may hold the state dict itself or ``{"model": state_dict}``.
    """
    if weights == "default":
        path = torchvision_cache_path(arch)
        if not path.is_file():
            if not download:
                raise WeightsUnavailable(
                    f"pretrained {arch} weights not in torchvision's cache ({path}); pass "
                    "--detector-weights FILE, allow the download, or use --random-weights"
                )
            _, enum = _builder_and_weights(arch)
            try:
                return enum.get_state_dict(progress=False, check_hash=True)
            except Exception as exc:  # noqa: BLE001 - re-raised with a named cause
                raise WeightsUnavailable(f"could not download {arch} weights from {enum.url}: {exc}") from exc
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"detector weights file not found: {path}")
    from fastsam2.models.checkpoint import load_mapping

    state = load_mapping(path, "detector weights")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def _calibrate_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give a random backbone BatchNorm statistics from one pass over fixed noise.

    A plain random init drives MobileNet-V3's features to ~1e-8, so every
    objectness is exactly sigmoid(0) = 0.5 and nothing clears a threshold. With
    running statistics measured on noise (a data-dependent init, as in LSUV),
    activations keep unit scale and random objectness spreads over (0, 1), so a
    random-weights run exercises the same thresholding as a real one.
    """
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
        bn.train()
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.rand(3, 320, 320, generator=gen) for _ in range(2)]
    with torch.no_grad():
        images, _ = model.transform(noise)
        model.backbone(images.tensors)
    for bn in norms:
        bn.eval()


class ProposalModel:
    """Faster R-CNN's RPN as a class-agnostic box proposer; load once, call per frame.

    ``weights``: ``"default"`` (torchvision's pretrained checkpoint, from its
    cache), a file path, or ``None`` for random weights (the same as
    ``random_weights=True``). ``arch`` defaults to :data:`DEFAULT_ARCH` with
    pretrained weights and to the fast :data:`RANDOM_ARCH` with random ones.
    """

    def __init__(
        self,
        weights: str | None = "default",
        *,
        arch: str | None = None,
        random_weights: bool = False,
        device: str | torch.device = "auto",
        download: bool = False,
        post_nms_top_n: int = 300,
        seed: int = 0,
    ) -> None:
        random_weights = random_weights or weights is None
        self.arch = arch or (RANDOM_ARCH if random_weights else DEFAULT_ARCH)
        self.random_weights = random_weights
        self.device = resolve_device(device) if isinstance(device, str) else device
        builder, _ = _builder_and_weights(self.arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # weights_backbone=None: never reach for ImageNet weights behind our back.
            model = builder(weights=None, weights_backbone=None, rpn_post_nms_top_n_test=post_nms_top_n)
        if random_weights:
            log.warning("region proposals: %s with RANDOM weights: boxes and objectness are noise", self.arch)
            _calibrate_batchnorm(model, seed)
        else:
            model.load_state_dict(load_detector_state(self.arch, weights, download=download))
        self.model = model.eval().to(self.device)

    @property
    def name(self) -> str:
        """Model name as recorded in ``videos/`` (``+random`` when weights are random)."""
        return f"{self.arch}+random" if self.random_weights else self.arch

    @torch.inference_mode()
    def propose_batch(self, frames: list[np.ndarray]) -> list[list[Proposal]]:
        """Proposals for RGB uint8 HxWx3 frames, best objectness first, in frame pixels."""
        from torchvision.ops import boxes as box_ops
        from torchvision.models.detection.transform import resize_boxes

        if not frames:
            return []
        tensors = [
            torch.tensor(np.asarray(f)[..., :3], device=self.device).permute(2, 0, 1).float().div_(255)
            for f in frames
        ]
        original = [tuple(t.shape[-2:]) for t in tensors]
        images, _ = self.model.transform(tensors)
        features = self.model.backbone(images.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        rpn = self.model.rpn
        # RegionProposalNetwork.forward keeps the scores to itself; this is its
        # inference path with filter_proposals' (boxes, scores) returned.
        feats = list(features.values())
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(images, feats)
        per_level = [o[0].numel() for o in objectness]
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, scores = rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        out = []
        for b, s, size, orig in zip(boxes, scores, images.image_sizes, original):
            # Back to frame pixels; clip again, the rescale can overshoot by a rounding error.
            b = box_ops.clip_boxes_to_image(resize_boxes(b, size, orig), orig).cpu().numpy()
            s = s.float().cpu().numpy()
            order = np.argsort(-s, kind="stable")
            out.append([Proposal(tuple(float(v) for v in b[i]), float(s[i])) for i in order])
        return out

    def propose(self, frame: np.ndarray) -> list[Proposal]:
        """Proposals for one RGB uint8 HxWx3 frame, best objectness first."""
        return self.propose_batch([frame])[0]
