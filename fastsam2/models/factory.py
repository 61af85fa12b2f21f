"""Every model the project runs, built one way: ``load_<kind>(...) -> bundle``.

Shape follows open_clip's ``factory.py`` (weights come from
:mod:`fastsam2.models.weights`, its ``pretrained.py``). Each loader takes a name,
a weight source or ``random_weights=True`` (for smoke tests on machines without
downloads: nothing is fetched, the weights come from a fixed seed, a warning
says so), and a device; each returns a :class:`ModelBundle` whose
``random_weights`` and ``name`` are what outputs record, so no caller reads them
back from attributes patched onto the model.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fastsam2.models.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED
from fastsam2.models.llava import DEFAULT_LLAVA
from fastsam2.models.weights import ClipWeightsUnavailable, WeightsUnavailable, resolve_device

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """A loaded model with what it needs around it.

    ``processor`` is what turns raw input into the model's input (an open_clip
    transform, a Hugging Face processor, torchvision's detection transform), or
    None where the model's own code does it (SAM2 reads frames itself).
    """

    model: Any
    processor: Any
    name: str
    random_weights: bool

    @property
    def label(self) -> str:
        """The name as recorded beside outputs: ``+random`` when the weights are random."""
        return f"{self.name}+random" if self.random_weights else self.name


@dataclass
class ClipBundle(ModelBundle):
    """An open_clip model: its tokenizer, input size and normalisation beside it."""

    tokenizer: Callable[..., torch.Tensor]
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_sam2(
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | None = None,
    *,
    image_size: int = 1024,
    device: str | torch.device = "auto",
    random_weights: bool = False,
    predictor_target: str | None = None,
    extra_overrides: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    seed: int = 0,
) -> ModelBundle:
    """A SAM2 video predictor (stock class by default) ready for inference; ``model`` is the predictor.

    ``predictor_target`` is the dotted path of the class to instantiate; our
    pruned predictor subclasses the stock one, so both load the same weights.
    The checkpoint (``checkpoint`` path/URI, else the official one for
    ``config_name``) goes through our one safe loader, not SAM2's own torch.load.
    """
    from sam2.build_sam import build_sam2_video_predictor

    from fastsam2.logs import quiet_sam2
    from fastsam2.models.checkpoint import UnsafeCheckpoint, load_mapping
    from fastsam2.models.sam2 import STOCK_PREDICTOR, config_file, hydra_overrides
    from fastsam2.models.weights import fetch_checkpoint, known_weights

    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
    quiet_sam2()
    dev = resolve_device(device)
    ckpt = None if random_weights else str(fetch_checkpoint(config_name, checkpoint, storage_options))
    overrides = hydra_overrides(image_size, predictor_target or STOCK_PREDICTOR) + list(extra_overrides or [])
    # build_sam2_video_predictor puts the stock target first; ours come later and win.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = build_sam2_video_predictor(
            config_file(config_name), ckpt_path=None, device=str(dev), hydra_overrides_extra=overrides
        )
    if ckpt is not None:
        state = load_mapping(ckpt, "SAM2 checkpoint")
        if not isinstance(state.get("model"), dict):
            raise UnsafeCheckpoint(f"SAM2 checkpoint {ckpt} has no 'model' state dict")
        predictor.load_state_dict(state["model"], strict=True)  # names missing/unexpected keys
    else:
        log.warning("SAM2 %s built with RANDOM weights: masks are meaningless", config_name)
    return ModelBundle(predictor, None, known_weights(config_name).name, random_weights)


def load_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    *,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    weights_dtype: torch.dtype | None = None,
) -> ClipBundle:
    """An open_clip model in eval mode.

    ``random_weights=True`` builds the architecture with ``pretrained=None`` from a
    fixed seed (similarities are meaningless but shapes and costs are real).
    ``model_name`` may also be ``fastsam2-tiny`` (see ``clip.TINY_OVERRIDES``).
    Pretrained weights that cannot be had raise :class:`ClipWeightsUnavailable`.
    ``weights_dtype`` (e.g. ``torch.bfloat16``) stores the weight matrices in that
    type and computes in fp32 (see :func:`store_weights_as`); the model is built in
    that type from the start, so no fp32 copy of it ever exists.
    """
    import open_clip

    from fastsam2.models.clip import CUSTOM_MODELS

    base, extra = CUSTOM_MODELS.get(model_name, (model_name, {}))
    weights = None if random_weights else pretrained
    if weights is None and not random_weights:
        raise ValueError("pass pretrained=<tag or path> or random_weights=True")
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            torch.set_default_dtype(weights_dtype or default_dtype)
            model, _, preprocess = open_clip.create_model_and_transforms(
                base, pretrained=weights, device=resolve_device(device), **{**extra, **(overrides or {})}
            )
        except Exception as exc:  # noqa: BLE001 - re-raised with a named cause
            if weights is None:
                raise
            raise ClipWeightsUnavailable(
                f"could not load CLIP {model_name} weights {weights!r} ({exc}); "
                "pass a local checkpoint path or use random weights for a smoke test"
            ) from exc
        finally:
            torch.set_default_dtype(default_dtype)
    model.eval().requires_grad_(False)
    if weights_dtype is not None:
        store_weights_as(model, weights_dtype)
    if random_weights:
        log.warning("CLIP %s built with RANDOM weights: text relevance is meaningless", model_name)
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    return ClipBundle(
        model=model,
        processor=preprocess,
        name=model_name,
        random_weights=random_weights,
        tokenizer=open_clip.get_tokenizer(base),
        pretrained=weights,
        image_size=int(visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
    )


#: How the CLIP models we run keep their weight matrices (computed in fp32): the router, its
#: training (so it trains on the features it will see) and ``--text`` selection alike, so
#: one shared copy (:func:`shared_clip`) serves them all.
CLIP_WEIGHTS_DTYPE = torch.bfloat16

_SHARED_CLIP: weakref.WeakValueDictionary[tuple, ClipBundle] = weakref.WeakValueDictionary()
_SHARED_CLIP_LOCK = threading.Lock()


def _device_key(device: str | torch.device) -> str:
    """``auto``, ``cuda`` and ``cuda:0`` name one device when CUDA device 0 is current."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


def shared_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    *,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
    weights_dtype: torch.dtype | None = None,
) -> ClipBundle:
    """:func:`load_clip`, built once per process for the same model, device and storage
    while anyone holds it, for callers that only read the model.

    A tracking actor of a ``--text --detect-every`` run asks for CLIP twice: the
    router's text relevance and the phrase that selects late objects. Each
    loading its own would hold a second ViT-B/16 (300 MB in bf16, 600 MB in
    fp32) beside SAM2. The cache holds bundles weakly: once no caller keeps one,
    it is freed as before. Whoever changes a model (e.g. :func:`store_weights_as`)
    must call :func:`load_clip` for a copy of its own.
    """
    key = (model_name, None if random_weights else pretrained, random_weights, _device_key(device), weights_dtype)
    with _SHARED_CLIP_LOCK:
        bundle = _SHARED_CLIP.get(key)
        if bundle is None:
            bundle = load_clip(model_name, pretrained, random_weights=random_weights, device=device,
                               weights_dtype=weights_dtype)
            _SHARED_CLIP[key] = bundle
        return bundle


class _Upcast(torch.nn.Module):
    """Parametrization: a weight stored compactly, handed to the layer in fp32."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.float()


def store_weights_as(model: torch.nn.Module, dtype: torch.dtype, min_numel: int = 4096) -> torch.nn.Module:
    """Keep ``model``'s weight matrices in ``dtype`` and compute in fp32 (inference only).

    Each matrix (2-D or more, ``min_numel`` elements or more: linear, attention,
    patch and token embeddings) is kept as a ``dtype`` tensor behind a
    parametrization that upcasts it when the layer reads it, so only the layer
    that runs holds an fp32 copy. Half the resident bytes for bf16, with fp32
    arithmetic: on CPUs without bf16 units this costs only the conversions, and
    the result differs from the fp32 model only by the weights' rounding
    (bf16: 8 significant bits). Everything else (norms, biases, scalars,
    buffers) is made fp32, whatever type the model was built in.
    """
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            matrix = param.dim() >= 2 and param.numel() >= min_numel
            want = dtype if matrix else torch.float32
            if param.is_floating_point() and param.dtype != want:
                module._parameters[name] = torch.nn.Parameter(param.detach().to(want), requires_grad=False)
            if matrix:
                parametrize.register_parametrization(module, name, _Upcast(), unsafe=True)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_floating_point():
                module._buffers[name] = buf.float()
    return model


def load_detector(
    weights: str | None = "default",
    *,
    arch: str | None = None,
    random_weights: bool = False,
    device: str | torch.device = "auto",
    download: bool = False,
    post_nms_top_n: int = 300,
    seed: int = 0,
) -> ModelBundle:
    """A torchvision Faster R-CNN for :class:`~fastsam2.models.detector.ProposalModel`.

    ``weights``: ``"default"`` (torchvision's pretrained checkpoint, from its
    cache; fetched there with ``download``), a file path (the state dict itself
    or ``{"model": state_dict}``), or ``None`` for random weights (the same as
    ``random_weights=True``). ``arch`` defaults to ``DEFAULT_ARCH`` with
    pretrained weights and to the fast ``RANDOM_ARCH`` with random ones.
    """
    from fastsam2.models.checkpoint import load_mapping
    from fastsam2.models.detector import DEFAULT_ARCH, RANDOM_ARCH, calibrate_batchnorm, detector_builder
    from fastsam2.models.weights import fetch_detector_weights

    random_weights = random_weights or weights is None
    arch = arch or (RANDOM_ARCH if random_weights else DEFAULT_ARCH)
    builder = detector_builder(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # weights_backbone=None: never reach for ImageNet weights behind our back.
        model = builder(weights=None, weights_backbone=None, rpn_post_nms_top_n_test=post_nms_top_n)
    if random_weights:
        log.warning("region proposals: %s with RANDOM weights: boxes and objectness are noise", arch)
        calibrate_batchnorm(model, seed)
    else:
        state = load_mapping(fetch_detector_weights(arch, weights, download), "detector weights")
        if "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(state)
    model = model.eval().to(resolve_device(device))
    return ModelBundle(model, model.transform, arch, random_weights)


def load_llava(
    model_id: str = DEFAULT_LLAVA,
    *,
    random_weights: bool = False,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """LLaVA ready for generation on ``device``.

    ``random_weights`` builds the tiny model (no download, words are noise).
    Otherwise ``model_id`` is an hf hub id (resolved through the local hf cache,
    downloaded there if allowed) or a local folder; a failure raises
    :class:`WeightsUnavailable` naming the model.
    """
    from fastsam2.models.llava import TINY_LLAVA_NAME, build_tiny_llava

    dev = resolve_device(device)
    if random_weights:
        log.warning("captioner: tiny LLaVA with RANDOM weights instead of %s: captions are noise", model_id)
        model, processor = build_tiny_llava()
        return ModelBundle(model.to(dev), processor, TINY_LLAVA_NAME, True)
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = LlavaForConditionalGeneration.from_pretrained(model_id, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - re-raised with a named cause
        raise WeightsUnavailable(
            f"could not load LLaVA {model_id!r} ({exc}). Put it in the hf cache (HF_HOME), pass a "
            "local folder with --caption-model, or use --random-weights for a smoke test."
        ) from exc
    processor.tokenizer.padding_side = "left"
    return ModelBundle(model.to(dev).eval(), processor, model_id, False)
