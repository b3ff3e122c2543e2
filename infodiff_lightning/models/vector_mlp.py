"""A conditional MLP denoiser for vector pairs: eps_hat(x_alpha, alpha | y or null).

One network gives both conditionals the information estimators contrast: y enters as
its value with a "null" flag of 0, the unconditional prediction as zeros with the flag
set (condition dropout trains both). The log-SNR enters through Fourier features.

The output is a correction to the optimal denoiser of a standard normal x,
eps_hat = sqrt(sigma(-alpha)) x_alpha + f(...), with f's last layer zero at
initialisation: for standardised data the network starts from the Gaussian answer and
learns only what the data adds to it (the two ends of the log-SNR range are then right
from the first step).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConditionalMLP"]


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1, self.lin2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.lin2(nn.functional.silu(self.lin1(nn.functional.silu(self.norm(h)))))


class ConditionalMLP(nn.Module):
    """eps_hat for x in R^dim_x given y in R^dim_y (rows of NaN: the null condition).

    Args:
        dim_x, dim_y: dimensions of the noised variable and of the condition.
        width: hidden width; depth: residual blocks (two linear layers each).
        n_frequencies: Fourier features of alpha, periods log-spaced over [1, 64] nats.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 256, depth: int = 3, n_frequencies: int = 16):
        super().__init__()
        if min(dim_x, dim_y, width, n_frequencies) < 1 or depth < 0:
            raise ValueError(f"ConditionalMLP: need positive dims, width and n_frequencies and depth >= 0, got "
                             f"dim_x={dim_x}, dim_y={dim_y}, width={width}, depth={depth}, n_frequencies={n_frequencies}")
        self.config = {"dim_x": dim_x, "dim_y": dim_y, "width": width, "depth": depth, "n_frequencies": n_frequencies}
        self.dim_x, self.dim_y = dim_x, dim_y
        periods = torch.logspace(0, math.log10(64.0), n_frequencies)
        self.register_buffer("frequencies", 2 * math.pi / periods, persistent=False)
        self.inp = nn.Linear(dim_x + dim_y + 1 + 2 * n_frequencies, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim_x))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x_alpha: Tensor, alpha: Tensor, y: Tensor) -> Tensor:
        null = torch.isnan(y)
        row_null = null.all(1)
        if bool((null.any(1) & ~row_null).any()):
            raise ValueError("ConditionalMLP: a condition row is partly NaN; rows are either observed or all-NaN (null)")
        y_in = torch.where(null, torch.zeros_like(y), y)
        phase = alpha[:, None] * self.frequencies
        feats = torch.cat([x_alpha, y_in, row_null[:, None].to(x_alpha.dtype), phase.sin(), phase.cos()], 1)
        h = self.inp(feats)
        for block in self.blocks:
            h = block(h)
        return torch.sigmoid(-alpha)[:, None].sqrt() * x_alpha + self.out(h)
