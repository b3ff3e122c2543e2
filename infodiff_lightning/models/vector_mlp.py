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

from ..gaussian_conditional import gaussian_conditional

__all__ = ["ConditionalMLP", "GaussianBaseline"]


class GaussianBaseline(nn.Module):
    """The optimal denoiser of a Gaussian, for (x, y) ~ N(mean, cov) (default: x standard
    normal, independent of y): with a = sqrt(sigma(alpha)), b = sqrt(sigma(-alpha)) and x
    given y (or not) distributed N(m, S),

        eps_hat(x_alpha) = b (a^2 S + b^2 I)^-1 (x_alpha - a m)

    (S and m by Gaussian conditioning, gaussian_conditional.py; S is diagonalised once, so
    the inverse is a scaling of its eigenvectors)."""

    def __init__(self, dim_x: int, dim_y: int, mean: Tensor | None = None, cov: Tensor | None = None):
        super().__init__()
        n = dim_x + dim_y
        mean = torch.zeros(n, dtype=torch.float64) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.eye(n, dtype=torch.float64) if cov is None else torch.as_tensor(cov, dtype=torch.float64)
        torch.linalg.cholesky(cov)  # raises if cov is not positive definite
        _, gain, lam_c, vec_c = gaussian_conditional(cov, dim_x, tuple([True] * dim_y))
        _, _, lam_0, vec_0 = gaussian_conditional(cov, dim_x, tuple([False] * dim_y))
        for name, v in (("mu_x", mean[:dim_x]), ("mu_y", mean[dim_x:]), ("gain", gain), ("lam_c", lam_c),
                        ("vec_c", vec_c), ("lam_0", lam_0), ("vec_0", vec_0)):
            self.register_buffer(name, v.to(torch.float32).contiguous())

    def forward(self, x_alpha: Tensor, alpha: Tensor, y: Tensor, null: Tensor) -> Tensor:
        a2, b2 = torch.sigmoid(alpha)[:, None], torch.sigmoid(-alpha)[:, None]
        mu_c = self.mu_x + (y - self.mu_y) @ self.gain.T
        out = []
        for mu, lam, vec in ((mu_c, self.lam_c, self.vec_c), (self.mu_x.expand_as(x_alpha), self.lam_0, self.vec_0)):
            r = (x_alpha - a2.sqrt() * mu) @ vec
            out.append((r * b2.sqrt() / (a2 * lam + b2)) @ vec.T)
        return torch.where(null[:, None], out[1], out[0])


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

    ``baseline`` (a GaussianBaseline, default the standard normal's) is replaced by
    :meth:`fit_baseline`; its tensors are buffers, saved and loaded with the weights.
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
        self.baseline = GaussianBaseline(dim_x, dim_y)

    def fit_baseline(self, x: Tensor, y: Tensor, ridge: float = 1e-6) -> None:
        """Use the Gaussian fitted to the (normalised) training pairs as the baseline: their
        mean and covariance, plus ``ridge`` times the mean variance on the diagonal (positive
        definite even with fewer pairs than dimensions). Not shrunk further: shrinking
        towards a diagonal erases sparse cross-covariances, which are the information."""
        xy = torch.cat([x, y], 1).to(torch.float64)
        cov = torch.cov(xy.T).reshape(xy.shape[1], xy.shape[1])
        cov = cov + ridge * cov.diagonal().mean() * torch.eye(xy.shape[1], dtype=torch.float64)
        self.baseline = GaussianBaseline(self.dim_x, self.dim_y, xy.mean(0), cov).to(self.inp.weight.device)

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
        return self.baseline(x_alpha, alpha, y_in, row_null) + self.out(h)
