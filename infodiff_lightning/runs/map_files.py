"""Information maps on disk: one compressed file per image, at the model's resolution.

A map file ``<id>.npz`` (numpy's compressed archive) holds one array per measured
quantity of the image, named by its tag (contrasts.py): ``mi``, ``cmi/<word>`` and
``pid/<w1>+<w2>/<term>``, each (h, w) in nats per element of x (pixels for pixel models,
latents for latent models: 8x smaller than the image for Stable Diffusion), stored as
float16 (a map's values are ~1e-4..1 nats per element: float16 keeps 3 significant
digits, half the size of float32). Maps are upsampled only for display (viz.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..contrasts import ContrastResult
from ..estimators import Estimate
from ..pid import PID_TERMS, PIDEstimate

__all__ = ["named_estimates", "image_maps", "save_maps", "load_maps", "MAP_DTYPE"]

MAP_DTYPE = np.float16


def named_estimates(result: ContrastResult, k: int) -> list[tuple[str, Estimate]]:
    """The estimates image ``k`` of a batch's result has, by tag: each quantity its caption
    holds, a PID as its four terms ("<tag>/<term>"), in the result's fixed order."""
    out = []
    for m in result.measured():
        if not bool(m.present[k]):
            continue
        if isinstance(m.estimate, PIDEstimate):
            out += [(f"{m.tag}/{t}", e) for t, e in zip(PID_TERMS, m.estimate.terms())]
        else:
            out.append((m.tag, m.estimate))
    return out


def image_maps(result: ContrastResult, k: int) -> dict[str, torch.Tensor]:
    """The maps of image ``k`` of a batch's result, by tag (quantities its caption lacks left out)."""
    out = {}
    for tag, e in named_estimates(result, k):
        if e.map is None:
            raise ValueError(f"image_maps: {tag} carries no map (measure with maps=True)")
        out[tag] = e.map[k]
    return out


def save_maps(path: str | Path, maps: dict[str, torch.Tensor]) -> Path:
    """Write ``maps`` (tag -> (h, w)) as float16 to ``path`` (.npz, compressed), atomically:
    a killed job leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {tag: m.detach().float().cpu().numpy().astype(MAP_DTYPE) for tag, m in maps.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_maps(path: str | Path) -> dict[str, torch.Tensor]:
    """The maps of a map file, by tag, as float32 tensors (h, w)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no map file at {path}")
    with np.load(path) as archive:
        return {tag: torch.from_numpy(archive[tag].astype(np.float32)) for tag in archive.files}
