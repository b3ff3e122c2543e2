"""Convert a diffusion model's raw output to the noise prediction eps_hat.

The channel of logsnr.py, x_alpha = sqrt(sigma(alpha)) x + sqrt(sigma(-alpha)) eps, is the
DDPM forward process x_t = sqrt(abar) x + sqrt(1 - abar) eps exactly when
abar = sigma(alpha) (and 1 - abar = sigma(-alpha)), so a model's output converts to
eps_hat with the abar of the *requested* alpha and no rescaling of x:

    epsilon:       eps_hat = out
    v_prediction:  v = sqrt(abar) eps - sqrt(1 - abar) x0
                   => eps_hat = sqrt(abar) v_hat + sqrt(1 - abar) x_t
    sample:        x0_hat = out
                   => eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar)

The "sample" conversion divides by sqrt(sigma(-alpha)): at large alpha any error in
x0_hat is amplified by exp(alpha / 2), as for the model itself.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PREDICTION_TYPES", "check_prediction_type", "eps_from_prediction", "prediction_target"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    """Return ``prediction_type`` if supported, else raise a ValueError that lists the options."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}: the adapters convert "
                         f"{', '.join(PREDICTION_TYPES)} to eps_hat (flow-matching and other "
                         "parameterisations need their own adapter)")
    return prediction_type


def eps_from_prediction(output: Tensor, x_alpha: Tensor, alpha: Tensor, prediction_type: str) -> Tensor:
    """eps_hat from a model ``output`` at noisy input ``x_alpha`` (B, ...) and log-SNR ``alpha`` (B,).

    Computed in the wider of float32 and the inputs' dtype (the coefficients in float64
    first), and returned in that dtype.
    """
    check_prediction_type(prediction_type)
    if output.shape != x_alpha.shape:
        raise ValueError(f"model output {tuple(output.shape)} does not match its input {tuple(x_alpha.shape)}")
    dtype = torch.promote_types(torch.promote_types(output.dtype, x_alpha.dtype), torch.float32)
    out = output.to(dtype)
    if prediction_type == "epsilon":
        return out
    a = torch.as_tensor(alpha, device=output.device).to(torch.float64)
    a = a.reshape(a.shape + (1,) * (output.ndim - a.ndim))
    sqrt_abar = torch.sigmoid(a).sqrt().to(dtype)  # sqrt(abar)
    sqrt_1m = torch.sigmoid(-a).sqrt().to(dtype)  # sqrt(1 - abar), stable for large alpha
    xt = x_alpha.to(device=output.device, dtype=dtype)
    if prediction_type == "v_prediction":
        return sqrt_abar * out + sqrt_1m * xt
    return (xt - sqrt_abar * out) / sqrt_1m


def prediction_target(x0: Tensor, eps: Tensor, abar: Tensor, prediction_type: str) -> Tensor:
    """What a model of ``prediction_type`` is trained to output at x_t = sqrt(abar) x0 +
    sqrt(1 - abar) eps: eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, or x0 (the inverse of
    :func:`eps_from_prediction`). ``abar`` has one entry per sample."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    a = abar.reshape(abar.shape + (1,) * (x0.ndim - abar.ndim)).to(x0.dtype)
    return a.sqrt() * eps - (1 - a).sqrt() * x0
