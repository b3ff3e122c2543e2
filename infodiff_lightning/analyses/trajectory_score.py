"""MI-TUNE's trajectory score: a ranking heuristic read off the guided sampling trajectory.

MI-TUNE (Wang et al., ICLR 2025, "Information Theoretic Text-to-Image Alignment") ranks
the M candidates of a prompt by the orthogonal form of the pointwise MI accumulated
along the trajectory that generated each one:

    score(x | c) = sum_{k : t_k > t_skip} || eps(x_k, t_k | c) - eps(x_k, t_k | null) ||^2          (TRAJ)

over the sampler's steps k, uniform in t (no weight, no 1/2), with the steps at
timesteps t <= t_skip = 50 (of 1000) left out, and x_k the *guided* trajectory's state
(one noise per step: the trajectory itself, not fresh draws). Both predictions are the
ones the CFG step computes anyway (guidance.py), so the score costs no extra call.

What it is not: a calibrated MI. Eq. TRAJ is the orthogonal integrand of the project's
io(x; c) (estimators.py, eq. 7) without the importance weight and the 1/2, at the
sampler's own noise levels on the generated trajectory rather than at draws around the
finished image, and with no standard error. It is comparable between candidates of one
prompt sampled on the same grid, which is all a selection needs; its scale depends on
the grid (the number of steps) and the model.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoisers.parametrisation import FlowParametrisation
from ..flow import flow_time

__all__ = ["orthogonal_gap", "training_timesteps", "TrajectoryScore", "MI_TUNE_SKIP"]

#: MI-TUNE skips the steps at training timesteps t <= 50 (of 1000).
MI_TUNE_SKIP = 50


def orthogonal_gap(eps_c: Tensor, eps_u: Tensor) -> Tensor:
    """(B,) ||eps_c - eps_u||^2 per image, summed over every element (float64)."""
    d = (eps_c.to(torch.float64) - eps_u.to(torch.float64)).flatten(1)
    return (d * d).sum(1)


def training_timesteps(denoiser):
    """alpha -> the training timestep t in [0, T) of the denoiser's schedule (float64):
    the DDPM table's (interpolated) index, or T s(alpha) for flow matching (whatever scale
    the backbone itself reads, as Flux's s in [0, 1]), so that MI-TUNE's t <= 50 means the
    same fraction of the schedule for every family."""
    p = denoiser.parametrisation
    if isinstance(p, FlowParametrisation):
        return lambda alpha: p.num_train_timesteps * flow_time(torch.as_tensor(alpha, dtype=torch.float64))
    return p.timesteps


class TrajectoryScore:
    """An observer for :class:`~.guidance.GuidedDenoiser` that accumulates eq. TRAJ.

    ``timesteps`` maps log-SNRs to the model's training timesteps
    (:func:`training_timesteps`); a call is counted when its timestep exceeds ``skip``.
    ``score`` (B,) is the running sum; ``steps`` the number of calls counted."""

    def __init__(self, timesteps, skip: float = MI_TUNE_SKIP):
        if skip < 0:
            raise ValueError(f"skip must be >= 0 (timesteps t <= skip are left out), got {skip}")
        self.timesteps, self.skip = timesteps, float(skip)
        self.score: Tensor | None = None
        self.steps = 0

    def __call__(self, alpha: Tensor, eps_c: Tensor, eps_u: Tensor) -> None:
        gap = orthogonal_gap(eps_c, eps_u).cpu()
        t = torch.as_tensor(self.timesteps(torch.as_tensor(alpha, dtype=torch.float64))).to(torch.float64).cpu()
        # a DDIM grid holds whole timesteps, mapped back through a float64 interpolation:
        # t = 50 may come back as 50 + 1e-12, which is still t = 50 and is skipped
        counted = t > self.skip + 1e-6
        if self.score is None:
            self.score = torch.zeros_like(gap)
        self.score += torch.where(counted, gap, torch.zeros_like(gap))
        self.steps += int(bool(counted.any()))
