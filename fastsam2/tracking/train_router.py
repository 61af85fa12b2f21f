"""Train the router's fusion MLP on a DAVIS-layout dataset with ground-truth masks.

For each sampled frame: run the SAM2 image encoder (with the same taps the
predictor uses, so the uncertainty signal is identical), compute the semantic
map from the sequence's text phrase (its folder name, ``kite-surf`` -> ``kite
surf``, unless given), and build the MLP inputs exactly as the router does at
inference. Target per token: it overlaps the ground-truth object after dilating
by ``target_dilation`` tokens. Loss: class-balanced binary cross-entropy. With
probability ``text_dropout`` a frame is shown without text, so the MLP also
learns the no-text case.

Features are computed once and reused across epochs (the encoder is the
expensive part; the MLP is tiny). The weights are saved with the SAM2 config
and image size they were trained on (``Router.save``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastsam2.davis_layout import DEFAULT_RESOLUTION, annotations_dir, images_dir
from fastsam2.preprocess import preprocess_frame
from fastsam2.models.factory import CLIP_WEIGHTS_DTYPE
from fastsam2.tracking.router import Router, RouterConfig, RouterMLP, mlp_features
from fastsam2.tracking.signals import ClipDenseSimilarity, capture_encoder_taps, prior_from_masks

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of ``fastsam2-batch train-router``."""

    data_root: Path
    out: Path
    sequences: list[str] | None = None
    resolution: str = DEFAULT_RESOLUTION
    sam2_config: str = "sam2.1_hiera_t"
    sam2_checkpoint: str | None = None
    random_weights: bool = False
    image_size: int = 1024
    semantic: str = "clip"
    uncertainty: str = "closed_form"
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    clip_random_weights: bool = False
    text: str | None = None  # one phrase for every sequence (default: the folder name)
    frames_per_sequence: int = 8
    frame_stride: int = 4
    target_dilation: int = 1
    text_dropout: float = 0.3
    epochs: int = 20
    lr: float = 1e-3
    batch_tokens: int = 8192
    device: str = "auto"
    seed: int = 0


@dataclass
class TrainResult:
    losses: list[float]
    frames: int
    tokens: int
    positive_fraction: float
    out: Path
    sequences: list[str] = field(default_factory=list)


def davis_frames(root: Path, resolution: str, sequences: list[str] | None, per_seq: int, stride: int
                 ) -> list[tuple[str, Path, Path]]:
    """(sequence, image, annotation) triples, every ``stride``-th frame, up to ``per_seq`` each."""
    img_root, ann_root = Path(images_dir(root, resolution)), Path(annotations_dir(root, resolution))
    if not img_root.is_dir() or not ann_root.is_dir():
        raise FileNotFoundError(f"{root} is not a DAVIS layout ({img_root.relative_to(root)}, "
                                f"{ann_root.relative_to(root)})")
    names = sequences or sorted(p.name for p in img_root.iterdir() if p.is_dir())
    out = []
    for seq in names:
        images = sorted((img_root / seq).glob("*.jpg"))[:: max(1, stride)][:per_seq]
        for img in images:
            ann = ann_root / seq / (img.stem + ".png")
            if ann.is_file():
                out.append((seq, img, ann))
    if not out:
        raise FileNotFoundError(f"no annotated frames under {root}")
    return out


def sequence_text(seq: str) -> str:
    """``motocross-jump`` -> ``motocross jump``."""
    return seq.replace("-", " ").replace("_", " ")


def load_frame(path: Path, size: int) -> torch.Tensor:
    """An RGB frame as the tracker feeds it to SAM2 (:func:`~fastsam2.preprocess.preprocess_frame`): [1, 3, S, S]."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return preprocess_frame(rgb, size).unsqueeze(0)


def load_target(path: Path, grid: tuple[int, int], dilation: int) -> torch.Tensor:
    """Ground-truth token targets [N] float: tokens overlapping the dilated object."""
    mask = torch.from_numpy((np.asarray(Image.open(path)) > 0).astype(np.float32))
    logits = (mask * 2 - 1)[None, None]
    return prior_from_masks(logits, grid, dilation)[0].float()


@torch.no_grad()
def extract_features(
    cfg: TrainConfig, predictor, router: Router, frames: list[tuple[str, Path, Path]]
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Per frame: MLP inputs with text, without text, and token targets."""
    grid = (predictor.sam_image_embedding_size,) * 2
    trunk = predictor.image_encoder.trunk
    device = predictor.device
    with_text, without_text, targets = [], [], []
    for i, (seq, img_path, ann_path) in enumerate(frames):
        image = load_frame(img_path, predictor.image_size).to(device)
        with capture_encoder_taps(trunk, router.config.uncertainty_blocks,
                                  hidden=router.needs_hidden_taps, block_input=router.needs_block_input) as taps:
            backbone = predictor.forward_image(image)
        tokens = backbone["backbone_fpn"][-1].flatten(2).transpose(1, 2)  # [1, HW, C]
        unc = router.uncertainty_from_taps(taps, trunk, grid)
        text = cfg.text or sequence_text(seq)
        sem = router.semantic_map({}, 0, None, tokens, text, lambda im=image: im, grid, None)
        with_text.append(mlp_features(tokens, sem, unc)[0].cpu())
        without_text.append(mlp_features(tokens, None, unc)[0].cpu() if sem is not None else with_text[-1])
        targets.append(load_target(ann_path, grid, cfg.target_dilation))
        log.info("features %d/%d (%s %s)", i + 1, len(frames), seq, img_path.name)
    return with_text, without_text, torch.stack(targets)


def train_mlp(with_text: list[torch.Tensor], without_text: list[torch.Tensor], targets: torch.Tensor,
              cfg: TrainConfig, dim: int, on_epoch: Callable[[int, float], None] | None = None
              ) -> tuple[RouterMLP, list[float]]:
    """Class-balanced BCE on all tokens; returns the MLP and the mean loss per epoch."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    mlp = RouterMLP(dim)
    opt = torch.optim.AdamW(mlp.parameters(), lr=cfg.lr, weight_decay=1e-4)
    pos = targets.mean().clamp(1e-3, 1 - 1e-3)
    pos_weight = (1 - pos) / pos
    losses = []
    for epoch in range(cfg.epochs):
        # Text dropout: per frame, with or without the semantic channel.
        x = torch.cat([w if rng.random() >= cfg.text_dropout else wo for w, wo in zip(with_text, without_text, strict=True)])
        y = targets.reshape(-1)
        order = torch.randperm(y.numel())
        total, count = 0.0, 0
        mlp.train()
        for start in range(0, y.numel(), cfg.batch_tokens):
            idx = order[start : start + cfg.batch_tokens]
            logits = mlp(x[idx])
            loss = F.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            count += idx.numel()
        losses.append(total / count)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return mlp.eval(), losses


def train_router(cfg: TrainConfig, on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Extract features, train the fusion MLP, save it; returns the loss curve."""
    from fastsam2.models.factory import load_clip, load_sam2
    from fastsam2.models.weights import resolve_device

    random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    frames = davis_frames(cfg.data_root, cfg.resolution, cfg.sequences, cfg.frames_per_sequence, cfg.frame_stride)
    predictor = load_sam2(
        cfg.sam2_config, cfg.sam2_checkpoint, image_size=cfg.image_size, device=device,
        random_weights=cfg.random_weights, seed=cfg.seed,
    ).model
    clip = None
    if cfg.semantic == "clip":
        clip = ClipDenseSimilarity(
            load_clip(cfg.clip_model, cfg.clip_pretrained, random_weights=cfg.clip_random_weights, device=device,
                      weights_dtype=CLIP_WEIGHTS_DTYPE)
        )
    router_cfg = RouterConfig(semantic=cfg.semantic, uncertainty=cfg.uncertainty, seed=cfg.seed)
    signal_router = Router(router_cfg, clip=clip)
    with_text, without_text, targets = extract_features(cfg, predictor, signal_router, frames)
    dim = with_text[0].shape[-1] // 3
    mlp, losses = train_mlp(with_text, without_text, targets, cfg, dim, on_epoch)
    trained = Router(router_cfg, clip=clip, mlp=mlp)
    sequences = sorted({s for s, _, _ in frames})
    trained.save(
        cfg.out,
        sam2_config=cfg.sam2_config,
        image_size=cfg.image_size,
        clip_model=cfg.clip_model if clip is not None else None,
        random_weights=cfg.random_weights,
        extra={"train_log": {"losses": losses, "sequences": sequences, "frames": len(frames),
                             "target_dilation": cfg.target_dilation}},
    )
    return TrainResult(
        losses=losses,
        frames=len(frames),
        tokens=int(targets.numel()),
        positive_fraction=float(targets.mean()),
        out=cfg.out,
        sequences=sequences,
    )
