"""What SAM2 itself needs to be built: its hydra config path and our overrides.

The loader is :func:`fastsam2.models.factory.load_sam2`; the checkpoint it loads
comes from :mod:`fastsam2.models.weights`.
"""

from __future__ import annotations

from fastsam2.models.weights import known_weights

#: The predictor class that stock ``build_sam2_video_predictor`` instantiates.
STOCK_PREDICTOR = "sam2.sam2_video_predictor.SAM2VideoPredictor"


def config_file(config_name: str) -> str:
    """Map ``sam2.1_hiera_t`` to the hydra config path inside the sam2 package."""
    name = known_weights(config_name).name  # an unknown name is a named ValueError
    folder = "sam2.1" if name.startswith("sam2.1") else "sam2"
    return f"configs/{folder}/{name}.yaml"


def hydra_overrides(image_size: int, predictor_target: str = STOCK_PREDICTOR) -> list[str]:
    """Overrides that set the predictor class and a non-default image size.

    RoPE in memory attention is built for a fixed token grid (image_size / 16);
    it must match the image size, otherwise RoPE silently rebuilds its frequencies
    every call (see docs on the RoPE pitfall).
    """
    grid = image_size // 16
    return [
        f"++model._target_={predictor_target}",
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]
