"""Loading checkpoints without running code from them.

A PyTorch checkpoint is a pickle: loaded with ``weights_only=False`` it can execute any
code its author put in it. Every checkpoint this project reads (``train.py fit
--ckpt_path``, ``python -m infodiff_lightning.export --ckpt``) is loaded with torch's
weights-only unpickler, which accepts tensors, numbers, strings and containers and
refuses anything else; a file it refuses is reported in one line, never retried unsafely.
URLs are refused: download the file, check where it came from, and pass the local path.
Model folders are read through safetensors only (denoisers/loading.py).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpoint", "check_checkpoint_path", "load_checkpoint"]

#: The ``--ckpt_path`` keywords Lightning resolves itself (to a local file of the run).
LIGHTNING_KEYWORDS = ("last", "hpc", "registry", "best")


class UnsafeCheckpoint(ValueError):
    """A checkpoint that cannot be loaded without running code from it."""


def check_checkpoint_path(path: str | Path, option: str = "--ckpt_path") -> None:
    """Refuse a URL (Lightning would fetch it and unpickle it with weights_only=False)
    and a local path that is not a file; Lightning's keywords pass."""
    text = str(path)
    if text in LIGHTNING_KEYWORDS or text.startswith("registry:"):
        return
    if "://" in text:
        raise UnsafeCheckpoint(f"{option} {text}: URLs are refused (a checkpoint is a pickle that can run code); "
                               "download it, check where it came from, and pass the local file")
    if not Path(text).is_file():
        raise FileNotFoundError(f"{option} {text}: no such file")


def load_checkpoint(path: str | Path, option: str = "--ckpt") -> dict[str, Any]:
    """The checkpoint at ``path``, loaded weights-only; a file that needs more (a pickled
    object or function: possibly code) raises :class:`UnsafeCheckpoint` in one line."""
    check_checkpoint_path(path, option)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpoint(f"{option} {path}: refused, it cannot be loaded weights-only (it holds objects "
                               f"beyond tensors and plain values, which could run code): {first}") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{option} {path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
