"""``fastsam2-batch train-router``: train the router's fusion MLP (fastsam2.tracking.train_router)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fastsam2.davis_layout import DEFAULT_RESOLUTION
from fastsam2.tracking.router import SEMANTIC_MODES, UNCERTAINTY_MODES


@click.command("train-router")
@click.option("--data-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="DAVIS layout: JPEGImages/<res>/<seq>/*.jpg and Annotations/<res>/<seq>/*.png")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where to save the router weights (.pt)")
@click.option("--sequence", "sequences", multiple=True, help="train on these sequences only (repeatable)")
@click.option("--resolution", default=DEFAULT_RESOLUTION, show_default=True, help="DAVIS resolution folder (JPEGImages/<resolution>).")
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
