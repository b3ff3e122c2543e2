"""infodiff-lightning: exact information-theoretic analysis of diffusion models.

The functional core (plain torch functions) is importable from the top level; Lightning
shells live in ``infodiff_lightning.modules``, torchmetrics in ``infodiff_lightning.metrics``.
"""
from .draws import Draws, draws_for_ids, sample_draws
from .mmse import MMSECurve, mmse_curve
from .estimators import Estimate, conditional_mi, default_sampler, informations, nll, pointwise_mi
from .evaluate import Errors, denoiser_errors
from .measure import DrawSpec, Measurement, measure
from .integrate import AlphaSampler, Grid, TruncatedLogistic, Uniform
from .pid import PIDEstimate, conditional_pid, pid, pid_from_terms
from .measurement import CaptionMetrics, MeasurementSpec, measure_captions
from .logsnr import (logsnr_from_alphas_cumprod, logsnr_from_timestep, noise_channel, timestep_from_logsnr,
                     trained_logsnr_range)

__version__ = "0.1.0"

__all__ = [
    "Draws", "draws_for_ids", "sample_draws", "Estimate", "MMSECurve", "conditional_mi",
    "default_sampler", "informations", "mmse_curve", "nll", "pointwise_mi", "Errors", "denoiser_errors",
    "DrawSpec", "Measurement", "measure",
    "AlphaSampler", "Grid", "TruncatedLogistic", "Uniform", "logsnr_from_alphas_cumprod", "logsnr_from_timestep",
    "noise_channel", "timestep_from_logsnr", "trained_logsnr_range",
    "PIDEstimate", "pid", "conditional_pid", "pid_from_terms",
    "MeasurementSpec", "measure_captions", "CaptionMetrics",
]
