"""Where model weights come from: the registry of known weights, the caches, download and checksum.

Shape follows open_clip's ``pretrained.py`` (its ``factory.py`` counterpart is
:mod:`fastsam2.models.factory`): one table names every checkpoint we know by
URL, checksum and hub repo, and one set of functions finds a local copy or
downloads one, verified, through a temp file. The loaders never download on
their own; they ask here. Reading a file is :mod:`fastsam2.models.checkpoint`'s
job (the one ``torch.load``, ``weights_only=True``).

Lookup order for a SAM2 checkpoint named by config (``sam2.1_hiera_t``): our
cache (``FASTSAM2_CACHE``), the Hugging Face hub cache (no network needed), a
hub download, and last the official URL with its SHA-256 checked against the
hub's published digest or ``FASTSAM2_SAM2_SHA256``. Detector checkpoints live
in torchvision's cache and are checked against the digest prefix torchvision
puts in their file names. CLIP weights are open_clip's own (its ``pretrained``
tags); only the exception type for them lives here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class WeightsUnavailable(RuntimeError):
    """No checkpoint could be found or downloaded (e.g. no network)."""


class ClipWeightsUnavailable(WeightsUnavailable):
    """The requested pretrained CLIP weights could not be loaded (e.g. no network).

    Its own type because callers treat CLIP as optional: the router drops text
    relevance without it, while ``--text`` grounding names it in its error.
    """


@dataclass(frozen=True)
class KnownWeights:
    """One checkpoint we know: where it is published and how to check it.

    ``sha256`` is the full digest or a prefix of it (torchvision's file names
    carry one); ``None`` means the digest is asked of the hub at download time.
    """

    name: str
    url: str
    sha256: str | None = None
    hf_repo: str | None = None

    @property
    def filename(self) -> str:
        return Path(self.url).name


_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2"
_TV_URL = "https://download.pytorch.org/models"

#: Every checkpoint the loaders can fetch by name: SAM2 / SAM2.1 configs (the hub
#: repos are the ones sam2's ``build_sam2_video_predictor_hf`` uses) and the
#: torchvision detectors behind the region proposals.
REGISTRY: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights("sam2.1_hiera_t", f"{_SAM2_URL}/092824/sam2.1_hiera_tiny.pt", hf_repo="facebook/sam2.1-hiera-tiny"),
        KnownWeights("sam2.1_hiera_s", f"{_SAM2_URL}/092824/sam2.1_hiera_small.pt", hf_repo="facebook/sam2.1-hiera-small"),
        KnownWeights("sam2.1_hiera_b+", f"{_SAM2_URL}/092824/sam2.1_hiera_base_plus.pt",
                     hf_repo="facebook/sam2.1-hiera-base-plus"),
        KnownWeights("sam2.1_hiera_l", f"{_SAM2_URL}/092824/sam2.1_hiera_large.pt", hf_repo="facebook/sam2.1-hiera-large"),
        KnownWeights("sam2_hiera_t", f"{_SAM2_URL}/072824/sam2_hiera_tiny.pt", hf_repo="facebook/sam2-hiera-tiny"),
        KnownWeights("sam2_hiera_s", f"{_SAM2_URL}/072824/sam2_hiera_small.pt", hf_repo="facebook/sam2-hiera-small"),
        KnownWeights("sam2_hiera_b+", f"{_SAM2_URL}/072824/sam2_hiera_base_plus.pt", hf_repo="facebook/sam2-hiera-base-plus"),
        KnownWeights("sam2_hiera_l", f"{_SAM2_URL}/072824/sam2_hiera_large.pt", hf_repo="facebook/sam2-hiera-large"),
        KnownWeights("fasterrcnn_resnet50_fpn", f"{_TV_URL}/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", "258fb6c6"),
        KnownWeights("fasterrcnn_resnet50_fpn_v2", f"{_TV_URL}/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", "dd69338a"),
        KnownWeights("fasterrcnn_mobilenet_v3_large_fpn", f"{_TV_URL}/fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
                     "fb6a3cc7"),
        KnownWeights("fasterrcnn_mobilenet_v3_large_320_fpn",
                     f"{_TV_URL}/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth", "907ea3f9"),
    )
}

#: SAM2 config names with official checkpoints (the keys of :data:`REGISTRY` that are SAM2's).
SAM2_CONFIGS: tuple[str, ...] = tuple(k for k in REGISTRY if k.startswith("sam2"))

#: Pins the SHA-256 of a directly downloaded SAM2 checkpoint (e.g. in air-gapped mirrors of the official URL).
SHA256_ENV = "FASTSAM2_SAM2_SHA256"


def known_weights(name: str, kind: str = "SAM2 config") -> KnownWeights:
    """The registry entry for ``name`` (a ``.yaml`` suffix is ignored); a named ValueError otherwise."""
    key = name.removesuffix(".yaml")
    choices = SAM2_CONFIGS if kind == "SAM2 config" else tuple(k for k in REGISTRY if k not in SAM2_CONFIGS)
    if key not in choices:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(choices)}")
    return REGISTRY[key]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU; asking for CUDA without one is a named error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is visible")
    return torch.device(device)


def cache_dir() -> Path:
    """Where downloaded weights live (``FASTSAM2_CACHE`` or ``~/.cache/fastsam2``)."""
    return Path(os.environ.get("FASTSAM2_CACHE", Path.home() / ".cache" / "fastsam2"))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def torchvision_cache_path(name: str) -> Path:
    """Where torchvision keeps (or would download) the pretrained detector ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / known_weights(name, "detector").filename


def hf_repo_for(config_name: str) -> str | None:
    """The hub repo sam2's ``build_sam2_video_predictor_hf`` uses for this config (``facebook/sam2.1-hiera-tiny``)."""
    return known_weights(config_name).hf_repo


def hub_cached_checkpoint(repo: str, filename: str) -> Path | None:
    """The checkpoint's path in the hub cache, without any network access; None when not cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def local_checkpoint(known: KnownWeights) -> tuple[Path, str] | None:
    """Where an official checkpoint already lies on this machine, without any network:
    (path, "cached") in our cache, else (path, "Hugging Face cache"), else None.
    The first two steps of :func:`fetch_checkpoint`'s lookup; the dry run reports them."""
    target = cache_dir() / known.filename
    if target.is_file():  # downloaded directly by an earlier run
        return target, "cached"
    if known.hf_repo is not None and (cached := hub_cached_checkpoint(known.hf_repo, known.filename)) is not None:
        return cached, "Hugging Face cache"
    return None


def fetch_checkpoint(
    config_name: str,
    checkpoint: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Return a local path to the SAM2 checkpoint, downloading it once if needed.

    ``checkpoint`` may be a local path or any fsspec URI (``s3://bucket/x.pt``).
    Without it the official checkpoint for ``config_name`` is looked for in the
    order of the module notes. Raises :class:`WeightsUnavailable` with a clear
    message when none works.
    """
    if checkpoint:
        return _fetch_user_file(checkpoint, storage_options)
    known = known_weights(config_name)  # an unknown name is a named ValueError, not a KeyError
    if (local := local_checkpoint(known)) is not None:
        return local[0]
    target = cache_dir() / known.filename
    repo = known.hf_repo
    meta = _hub_metadata(repo, known.filename) if repo else None
    if meta is not None:
        from huggingface_hub import hf_hub_download

        try:
            log.info("downloading %s/%s into the Hugging Face cache %s", repo, known.filename, hub_cache_dir())
            return Path(hf_hub_download(repo, known.filename, cache_dir=hub_cache_dir(), endpoint=_hub_endpoint()))
        except Exception as exc:  # noqa: BLE001 - the direct download below is the fallback
            log.warning("Hugging Face download of %s failed (%s); trying %s", repo, exc, known.url)
    expected = os.environ.get(SHA256_ENV) or known.sha256 or (
        meta.etag if meta is not None and _is_sha256(meta.etag) else None)
    hint = (f"nor find it in the Hugging Face cache {hub_cache_dir()}. Pass --sam2-checkpoint PATH|URI, "
            "or --random-weights for a smoke test.")
    return _download_verified(known.url, target, expected, f"the {config_name} checkpoint", hint)


def fetch_detector_weights(arch: str, weights: str = "default", download: bool = False) -> Path:
    """A local path to detector weights: ``"default"`` (torchvision's pretrained
    checkpoint for ``arch``, from its cache, fetched there with ``download``) or a file."""
    if weights != "default":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"detector weights file not found: {path}")
        return path
    path = torchvision_cache_path(arch)
    if path.is_file():
        return path
    if not download:
        raise WeightsUnavailable(
            f"pretrained {arch} weights not in torchvision's cache ({path}); pass "
            "--detector-weights FILE, allow the download, or use --random-weights"
        )
    known = known_weights(arch, "detector")
    return _download_verified(known.url, path, known.sha256, f"{arch} weights", "pass --detector-weights FILE.")


def _fetch_user_file(checkpoint: str, storage_options: dict[str, Any] | None) -> Path:
    """A checkpoint the user named: a local file as is, a URI copied once into our cache."""
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


def _download_verified(url: str, target: Path, expected: str | None, what: str, hint: str) -> Path:
    """Download ``url`` to ``target`` through a temp file, hashing it; a wrong SHA-256 (or
    prefix of one) leaves nothing behind. ``hint`` ends the message when the download fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, target)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as src:
            _atomic_copy(_Hashing(src, digest), target)
    except Exception as exc:  # noqa: BLE001
        raise WeightsUnavailable(f"could not download {what} from {url} ({exc}), {hint}") from exc
    got = digest.hexdigest()
    if expected and not got.startswith(expected.lower()):
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
