"""Click pieces of the tracking stage: ``train-router`` and the pruning options.

``train_router_command`` is registered in the main CLI group elsewhere.
``pruning_options`` adds ``--keep-ratio`` / ``--router-weights`` / signal options
to any command, and ``configure_pruning_from_options`` applies them to a
``PrunedSAM2VideoPredictor``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fastsam2.tracking.router import SEMANTIC_MODES, UNCERTAINTY_MODES


def pruning_options(f: Callable) -> Callable:
    """Options that choose the keep ratio and the router (defaults: 0.3, CLIP + closed form)."""
    options = [
        click.option("--keep-ratio", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.3,
                     show_default=True, help="share of tokens per frame through memory attention (1.0 = dense)"),
        click.option("--router-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="trained fusion MLP (train-router); training-free fusion without it"),
        click.option("--semantic", type=click.Choice(SEMANTIC_MODES), default=None,
                     help="text relevance: clip (default), paper (LSQ, comparison only), none"),
        click.option("--uncertainty", type=click.Choice(UNCERTAINTY_MODES), default=None,
                     help="closed_form (default), mc (sampled, --mc-passes), none"),
        click.option("--mc-passes", type=int, default=None, help="MC dropout passes (paper: 5)"),
        click.option("--clip-model", default="ViT-B-16", show_default=True, help="open_clip model for text relevance."),
        click.option("--clip-pretrained", default="openai", show_default=True, help="open_clip pretrained tag."),
        click.option("--clip-random-weights", is_flag=True, help="random CLIP weights (smoke tests)"),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def router_from_options(opts: dict[str, Any], device: str = "cpu"):
    """Build the router the pruning options describe (None when keep ratio is 1.0)."""
    from fastsam2.tracking.router import build_router

    if opts.get("keep_ratio", 0.3) >= 1.0:
        return None
    extra = {"mc_passes": opts["mc_passes"]} if opts.get("mc_passes") else {}
    return build_router(
        opts.get("semantic"),
        opts.get("uncertainty"),
        clip_model=opts.get("clip_model", "ViT-B-16"),
        clip_pretrained=opts.get("clip_pretrained", "openai"),
        clip_random_weights=opts.get("clip_random_weights", False),
        router_weights=opts.get("router_weights"),
        device=device,
        **extra,
    )


def configure_pruning_from_options(predictor, opts: dict[str, Any]):
    """Apply the pruning options to a ``PrunedSAM2VideoPredictor``; returns it."""
    keep = float(opts.get("keep_ratio", 0.3))
    return predictor.configure_pruning(keep_ratio=keep, router=router_from_options(opts, str(predictor.device)))


@click.command("train-router")
@click.option("--data-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="DAVIS layout: JPEGImages/<res>/<seq>/*.jpg and Annotations/<res>/<seq>/*.png")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where to save the router weights (.pt)")
@click.option("--sequence", "sequences", multiple=True, help="train on these sequences only (repeatable)")
@click.option("--resolution", default="480p", show_default=True, help="DAVIS resolution folder (JPEGImages/<resolution>).")
@click.option("--sam2-config", default="sam2.1_hiera_t", show_default=True, help="SAM2 model config.")
@click.option("--sam2-checkpoint", default=None, help="local path or URI; default: the official checkpoint")
@click.option("--random-weights", is_flag=True, help="random SAM2 weights (smoke tests only)")
@click.option("--image-size", type=int, default=1024, show_default=True, help="SAM2 input size (multiple of 16).")
@click.option("--semantic", type=click.Choice(SEMANTIC_MODES), default="clip", show_default=True,
              help="Router text relevance signal.")
@click.option("--uncertainty", type=click.Choice(UNCERTAINTY_MODES), default="closed_form", show_default=True,
              help="Router uncertainty signal.")
@click.option("--clip-model", default="ViT-B-16", show_default=True, help="open_clip model for text relevance.")
@click.option("--clip-pretrained", default="openai", show_default=True, help="open_clip pretrained tag.")
@click.option("--clip-random-weights", is_flag=True, help="Random CLIP weights (smoke tests only).")
@click.option("--text", default=None, help="one phrase for every sequence (default: the sequence name)")
@click.option("--frames-per-sequence", type=int, default=8, show_default=True, help="Training frames per sequence.")
@click.option("--frame-stride", type=int, default=4, show_default=True, help="Take every N-th frame.")
@click.option("--target-dilation", type=int, default=1, show_default=True, help="tokens")
@click.option("--epochs", type=int, default=20, show_default=True, help="Training epochs.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate (Adam).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (sampling, init).")
def train_router_command(**kw: Any) -> None:
    """Train the router's fusion MLP on ground-truth masks and save it with its SAM2 config."""
    from fastsam2.tracking.train_router import TrainConfig, train_router

    kw["sequences"] = list(kw["sequences"]) or None
    cfg = TrainConfig(**kw)

    def on_epoch(epoch: int, loss: float) -> None:
        click.echo(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f}")

    result = train_router(cfg, on_epoch=on_epoch)
    click.echo(json.dumps({
        "out": str(result.out),
        "frames": result.frames,
        "tokens": result.tokens,
        "positive_fraction": round(result.positive_fraction, 4),
        "first_loss": round(result.losses[0], 4),
        "last_loss": round(result.losses[-1], 4),
        "sequences": result.sequences,
    }))
