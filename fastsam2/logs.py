"""Quiet, useful logs: one place that decides what third-party noise is shown.

- SAM2 draws a tqdm bar per video (``propagate in video``) in every tracking
  actor; with many videos those bars bury the per-video progress lines. They are
  disabled unless our log level is DEBUG.
- Without its CUDA extension (``sam2._C``: CPU machines, pip wheels) SAM2 warns,
  in a ten-line ``UserWarning``, that hole filling is skipped. That is said once
  per process, in one line, at INFO.
- Ray Data's "Progress bars disabled" warning follows from our own choice (our
  per-video progress replaces its bars), so it is not shown.

Everything here is idempotent and cheap: stages call it in each actor.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings

log = logging.getLogger("fastsam2")

LEVELS = ("debug", "info", "warning", "error")
#: Carries the level to Ray workers started from this process (they inherit the environment).
LEVEL_ENV = "FASTSAM2_LOG_LEVEL"


def configure(level: str = "warning") -> None:
    """Set the level of our loggers (``--log-level``), and format records as ``LEVEL name: message``."""
    value = getattr(logging, level.upper())
    os.environ[LEVEL_ENV] = level.lower()
    logging.basicConfig(level=value, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(value)


@functools.lru_cache(maxsize=1)
def _has_sam2_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def quiet_sam2() -> None:
    """Silence SAM2's per-video tqdm bars (unless DEBUG) and say once that ``_C`` is missing."""
    import sam2.sam2_video_predictor as svp
    from tqdm import tqdm

    debug = log.isEnabledFor(logging.DEBUG) or os.environ.get(LEVEL_ENV) == "debug"
    if not debug and not isinstance(svp.tqdm, functools.partial):
        svp.tqdm = functools.partial(tqdm, disable=True)  # the name propagate_in_video calls
    if not _has_sam2_extension():
        warnings.filterwarnings("ignore", message=r"(?s).*Skipping the post-processing step", category=UserWarning)
        _say_no_extension()


@functools.lru_cache(maxsize=1)
def _say_no_extension() -> None:
    log.info("sam2's CUDA extension (_C) is not built: small holes in masks are not filled "
             "(SAM2 says this rarely changes results; see sam2's INSTALL.md)")


def quiet_ray_data() -> None:
    """Hide Ray Data's notice that its progress bars are off (we turned them off for ours)."""
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
