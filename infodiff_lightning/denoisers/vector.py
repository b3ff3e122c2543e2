"""Denoisers of vector pairs: a trained ConditionalMLP, and the normalization around it.

``MLPDenoiser`` is the network as a denoiser of the project's protocol, in normalized
coordinates; ``NormalizedDenoiser`` maps a user's raw pairs into those coordinates
(``encode`` normalizes x, ``eps_hat`` normalizes the conditions), so the estimators
integrate over normalized x. An exact denoiser of the normalized variables can stand in
for the network (the tests do that with a Gaussian).

A trained model is saved as a folder: ``config.json`` (dimensions, network shape,
trained log-SNR range, normalization kind) and ``model.safetensors`` (weights, Gaussian
baseline and normalization tensors).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data.normalization import Normalization, load_normalization
from ..models.vector_mlp import ConditionalMLP
from .base import Column, Denoiser, DenoiserBase

__all__ = ["MLPDenoiser", "NormalizedDenoiser", "VectorModel", "save_vector_denoiser", "load_vector_denoiser"]

CONFIG, WEIGHTS = "config.json", "model.safetensors"


class MLPDenoiser(DenoiserBase):
    """A ConditionalMLP as a denoiser: conditions are (B, dim_y) tensors, null rows all-NaN.

    ``alpha_range``: the log-SNR range the network was trained on (the estimators'
    samplers are restricted to it)."""

    default_microbatch = 16384

    def __init__(self, net: ConditionalMLP, alpha_range: tuple[float, float]):
        self.net, self.alpha_range = net, (float(alpha_range[0]), float(alpha_range[1]))

    def null_conditions(self, n: int) -> Tensor:
        return torch.full((n, self.net.dim_y), float("nan"), dtype=torch.float64)

    @torch.no_grad()
    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        p = next(self.net.parameters())
        out = self.net(x_alpha.to(p), alpha.to(p), torch.as_tensor(conditions).to(p))
        return out.to(x_alpha.dtype)


class NormalizedDenoiser(DenoiserBase):
    """``base`` (a denoiser of normalized x given normalized y) seen from raw data."""

    def __init__(self, base: Denoiser, normalization: Normalization):
        self.base, self.normalization = base, normalization
        self.alpha_range, self.default_microbatch = base.alpha_range, base.default_microbatch
        self.alpha_proposal = base.alpha_proposal

    def encode(self, images: Tensor, ids=None) -> Tensor:
        return self.normalization.x(images.to(torch.float64))

    def null_conditions(self, n: int) -> Column:
        return self.base.null_conditions(n)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        return self.base.eps_hat(x_alpha, alpha, self.normalization.y(torch.as_tensor(conditions, dtype=torch.float64)))


def save_vector_denoiser(folder: str | Path, net: ConditionalMLP, alpha_range: tuple[float, float],
                         normalization: Normalization) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"normalization.{k}": v.cpu().contiguous() for k, v in normalization.tensors().items()})
    save_file(tensors, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"kind": "vector_mlp", "net": net.config, "alpha_range": list(alpha_range),
                                             "normalization": normalization.kind}, indent=1) + "\n")
    return folder


@dataclass
class VectorModel:
    """A saved vector denoiser: the network (an nn.Module, for a job to register and move),
    its trained log-SNR range and the normalization of the data it was trained on."""

    net: ConditionalMLP
    alpha_range: tuple[float, float]
    normalization: Normalization

    @property
    def denoiser(self) -> NormalizedDenoiser:
        """The saved network as the estimators see it: raw pairs in, normalized inside."""
        return NormalizedDenoiser(MLPDenoiser(self.net, self.alpha_range), self.normalization)


def load_vector_denoiser(folder: str | Path) -> VectorModel:
    """The model saved by :func:`save_vector_denoiser` (or by a VectorMITrainer at the end of fit)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"model: {folder} is not a saved vector denoiser (no {name})")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("kind") != "vector_mlp":
        raise ValueError(f"model: {folder / CONFIG} has kind {config.get('kind')!r}, expected 'vector_mlp'")
    tensors = load_file(str(folder / WEIGHTS))
    net = ConditionalMLP(**config["net"])
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    net.eval()
    norm = load_normalization(config["normalization"],
                              {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("normalization.")})
    return VectorModel(net, tuple(config["alpha_range"]), norm)
