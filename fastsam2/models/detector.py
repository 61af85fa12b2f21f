"""Class-agnostic region proposals from torchvision's Faster R-CNN RPN.

Only the region proposal network is run (transform -> backbone -> RPN): its
objectness score says "something is here" without naming a class, which is what
an auto prompt needs for objects outside COCO's 80 classes. The ROI heads are
built (so full detector checkpoints load strictly) but never called.

Weights are loaded by :func:`fastsam2.models.factory.load_detector` (torchvision's
pretrained detector from its cache, or a local file, or random weights for tests
and smoke runs, said in the log and recorded on the bundle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from fastsam2.models.weights import REGISTRY, known_weights

if TYPE_CHECKING:
    from fastsam2.models.factory import ModelBundle

#: Detector used with pretrained weights (the strongest RPN torchvision ships).
DEFAULT_ARCH = "fasterrcnn_resnet50_fpn_v2"
#: Detector used with random weights: same classes, fast on CPU.
RANDOM_ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"

#: The torchvision detectors we know (the registry's entries for them).
ARCHS: tuple[str, ...] = tuple(k for k in REGISTRY if k.startswith("fasterrcnn"))


class Proposal(NamedTuple):
    """One class-agnostic box: ``(x0, y0, x1, y1)`` in frame pixels, objectness in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


def detector_builder(arch: str):
    """torchvision's builder function for ``arch`` (a named ValueError for an unknown one)."""
    from torchvision.models import detection

    return getattr(detection, known_weights(arch, "detector").name)


def calibrate_batchnorm(model: torch.nn.Module, seed: int) -> None:
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

    Built around the bundle :func:`fastsam2.models.factory.load_detector` returns
    (its ``model`` is the torchvision detector, its ``name`` the architecture).
    """

    def __init__(self, detector: ModelBundle) -> None:
        self.model = detector.model
        self.arch = detector.name
        self.random_weights = detector.random_weights
        self.device = next(self.model.parameters()).device

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
