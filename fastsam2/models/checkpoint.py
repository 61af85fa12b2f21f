"""The one place that reads a checkpoint file a user hands us.

A ``.pt`` file is a pickle, and unpickling can run any code the file asks for.
Everything goes through :func:`load_checkpoint`, which uses PyTorch's
``weights_only=True`` unpickler: tensors, numbers, strings, lists, tuples and
dicts load; a file that asks to import or call anything is refused with one
line naming the file, and nothing in it runs. (SAM2's own builder, which we use
for its checkpoints, is handed the state dict we loaded here.)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpoint(ValueError):
    """A checkpoint that is not plain data (it would run code when loaded), or not a checkpoint."""


def load_checkpoint(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """Plain data (state dicts, tensors, config values) from ``path``; never runs code from it.

    ``mmap`` maps tensors instead of reading them (a cheap check of a large file on the
    driver); files in PyTorch's old non-zip format are then read normally.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not (mmap and "mmap" in str(exc)):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise UnsafeCheckpoint(
            f"{what} {path} is not a plain weights file: it asks to run code when loaded"
            + (f" ({detail[:160]})" if detail else "") + "; refusing to load it"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UnsafeCheckpoint(f"{what} {path} cannot be read as a PyTorch checkpoint "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


def load_mapping(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> dict:
    """:func:`load_checkpoint` for files that must hold a dict (all of ours do)."""
    blob = load_checkpoint(path, what, mmap=mmap)
    if not isinstance(blob, dict):
        raise UnsafeCheckpoint(f"{what} {path} holds a {type(blob).__name__}, not a dict of weights")
    return blob
