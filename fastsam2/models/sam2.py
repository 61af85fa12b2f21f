"""Build SAM2 video predictors from a named config plus optional weights.

Shape follows open_clip's factory: one entry point resolves a config name
(``sam2.1_hiera_t``), an image size, a device and a weight source: a local path,
a URI (``s3://``...), the official checkpoint downloaded once into a cache, or
random weights (``random_weights=True``) for smoke tests on machines without
downloads.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Official SAM2 / SAM2.1 checkpoints, by config name.
CHECKPOINT_URLS: dict[str, str] = {
    "sam2.1_hiera_t": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
    "sam2_hiera_t": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
    "sam2_hiera_s": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt",
    "sam2_hiera_b+": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
}

#: The predictor class that stock ``build_sam2_video_predictor`` instantiates.
STOCK_PREDICTOR = "sam2.sam2_video_predictor.SAM2VideoPredictor"


class WeightsUnavailable(RuntimeError):
    """No checkpoint could be found or downloaded (e.g. no network)."""


def cache_dir() -> Path:
    """Where downloaded weights live (``FASTSAM2_CACHE`` or ``~/.cache/fastsam2``)."""
    return Path(os.environ.get("FASTSAM2_CACHE", Path.home() / ".cache" / "fastsam2"))


def config_file(config_name: str) -> str:
    """Map ``sam2.1_hiera_t`` to the hydra config path inside the sam2 package."""
    name = config_name.removesuffix(".yaml")
    if name not in CHECKPOINT_URLS:
        raise ValueError(
            f"unknown SAM2 config {config_name!r}; choose one of {sorted(CHECKPOINT_URLS)}"
        )
    folder = "sam2.1" if name.startswith("sam2.1") else "sam2"
    return f"configs/{folder}/{name}.yaml"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is visible")
    return torch.device(device)


def fetch_checkpoint(
    config_name: str,
    checkpoint: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Return a local path to the checkpoint, downloading it once if needed.

    ``checkpoint`` may be a local path or any fsspec URI (``s3://bucket/x.pt``).
    Without it the official checkpoint for ``config_name`` is looked for, in
    order: in our cache dir (an earlier direct download), in the Hugging Face hub
    cache (the repos sam2's ``build_sam2_video_predictor_hf`` names; no network
    needed), downloaded through the hub, and last downloaded directly from the
    official URL with its SHA-256 checked (against the hub's published digest or
    ``FASTSAM2_SAM2_SHA256``). Raises :class:`WeightsUnavailable` with a clear
    message when none works.
    """
    if checkpoint:
        if "://" not in checkpoint:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(f"checkpoint file not found: {path}")
            return path
        import fsspec

        target = cache_dir() / "remote" / checkpoint.split("://", 1)[1].replace("/", "_")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with fsspec.open(checkpoint, "rb", **(storage_options or {})) as src:
                    _atomic_copy(src, target)
            except Exception as exc:  # noqa: BLE001 - re-raised with a named cause
                raise WeightsUnavailable(f"could not read checkpoint {checkpoint}: {exc}") from exc
        return target

    config_file(config_name)  # an unknown name is a named ValueError, not a KeyError
    name = config_name.removesuffix(".yaml")
    url = CHECKPOINT_URLS[name]
    target = cache_dir() / Path(url).name
    if target.is_file():  # downloaded directly by an earlier run
        return target
    repo = hf_repo_for(name)
    if repo is not None and (cached := hub_cached_checkpoint(repo, Path(url).name)) is not None:
        return cached
    meta = _hub_metadata(repo, Path(url).name) if repo else None
    if meta is not None:
        from huggingface_hub import hf_hub_download

        try:
            log.info("downloading %s/%s into the Hugging Face cache %s", repo, Path(url).name, hub_cache_dir())
            return Path(hf_hub_download(repo, Path(url).name, cache_dir=hub_cache_dir(), endpoint=_hub_endpoint()))
        except Exception as exc:  # noqa: BLE001 - the direct download below is the fallback
            log.warning("Hugging Face download of %s failed (%s); trying %s", repo, exc, url)
    expected = os.environ.get(SHA256_ENV) or (meta.etag if meta is not None and _is_sha256(meta.etag) else None)
    return _download_verified(url, target, expected, config_name)


#: Pins the SHA-256 of a directly downloaded checkpoint (e.g. in air-gapped mirrors of the official URL).
SHA256_ENV = "FASTSAM2_SAM2_SHA256"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def hf_repo_for(config_name: str) -> str | None:
    """The hub repo sam2's ``build_sam2_video_predictor_hf`` uses for this config (``facebook/sam2.1-hiera-tiny``)."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    want = config_file(config_name)
    return next((repo for repo, (cfg, _) in HF_MODEL_ID_TO_FILENAMES.items() if cfg == want), None)


def hub_cached_checkpoint(repo: str, filename: str) -> Path | None:
    """The checkpoint's path in the hub cache, without any network access; None when not cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _hub_metadata(repo: str, filename: str):
    """One short request for the file's hub metadata (its SHA-256 for LFS files); None when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        return get_hf_file_metadata(hf_hub_url(repo, filename, endpoint=_hub_endpoint()), timeout=10)
    except Exception as exc:  # noqa: BLE001 - unreachable hub: the direct URL is next
        log.info("Hugging Face hub not reachable for %s (%s)", repo, type(exc).__name__)
        return None


def _is_sha256(value: str | None) -> bool:
    return bool(value) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _download_verified(url: str, target: Path, expected: str | None, config_name: str) -> Path:
    """Download ``url`` to ``target`` through a temp file, hashing it; a wrong SHA-256 leaves nothing behind."""
    import hashlib

    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, target)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as src:
            _atomic_copy(_Hashing(src, digest), target)
    except Exception as exc:  # noqa: BLE001
        raise WeightsUnavailable(
            f"could not download the {config_name} checkpoint from {url} ({exc}), nor find it in the Hugging Face "
            f"cache {hub_cache_dir()}. Pass --sam2-checkpoint PATH|URI, or --random-weights for a smoke test."
        ) from exc
    got = digest.hexdigest()
    if expected and got != expected.lower():
        target.unlink(missing_ok=True)
        raise WeightsUnavailable(f"checksum mismatch for {url}: SHA-256 {got}, expected {expected}; the file was removed")
    if not expected:
        log.warning("%s: no published SHA-256 was reachable to check it against (set %s to pin one); got %s",
                    target.name, SHA256_ENV, got)
    target.with_name(target.name + ".sha256").write_text(f"{got}  {target.name}\n")
    return target


class _Hashing:
    """A read-only stream that feeds what passes through it to a hash."""

    def __init__(self, src: Any, digest: Any):
        self.src, self.digest = src, digest

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.digest.update(data)
        return data


def _atomic_copy(src: Any, target: Path) -> None:
    """Copy a stream to ``target`` through a temp file so a broken download leaves nothing."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def build_video_predictor(
    config_name: str = "sam2.1_hiera_t",
    checkpoint: str | None = None,
    *,
    image_size: int = 1024,
    device: str | torch.device = "auto",
    random_weights: bool = False,
    predictor_target: str = STOCK_PREDICTOR,
    extra_overrides: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    seed: int = 0,
):
    """Build a SAM2 video predictor (stock class by default) ready for inference.

    ``predictor_target`` is the dotted path of the class to instantiate; our
    pruned predictor subclasses the stock one, so both load the same weights.
    With ``random_weights`` nothing is downloaded and the weights come from a
    fixed seed, so two builds with the same arguments are identical.
    """
    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
    from sam2.build_sam import build_sam2_video_predictor

    from fastsam2.logs import quiet_sam2

    quiet_sam2()
    dev = resolve_device(device) if isinstance(device, str) else device
    ckpt = None if random_weights else str(fetch_checkpoint(config_name, checkpoint, storage_options))
    overrides = hydra_overrides(image_size, predictor_target) + list(extra_overrides or [])
    # build_sam2_video_predictor puts the stock target first; ours come later and win.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = build_sam2_video_predictor(
            config_file(config_name), ckpt_path=None, device=str(dev), hydra_overrides_extra=overrides
        )
    if ckpt is not None:  # through our one safe loader, not SAM2's own torch.load
        from fastsam2.models.checkpoint import UnsafeCheckpoint, load_mapping

        state = load_mapping(ckpt, "SAM2 checkpoint")
        if not isinstance(state.get("model"), dict):
            raise UnsafeCheckpoint(f"SAM2 checkpoint {ckpt} has no 'model' state dict")
        predictor.load_state_dict(state["model"], strict=True)  # names missing/unexpected keys
    predictor.random_weights = random_weights
    predictor.config_name = config_name.removesuffix(".yaml")
    if random_weights:
        log.warning("SAM2 %s built with RANDOM weights: masks are meaningless", config_name)
    return predictor
