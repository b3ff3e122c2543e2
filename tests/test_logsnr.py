"""Noise channel and the scheduler <-> log-SNR conversions."""
import math

import pytest
import torch

from infodiff_lightning.logsnr import (logsnr_from_alphas_cumprod, logsnr_from_timestep, noise_channel,
                                       timestep_from_logsnr, trained_logsnr_range)


def sd_alphas_cumprod():
    # The scaled-linear beta schedule of Stable Diffusion (1000 steps).
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def test_noise_channel_has_snr_exp_alpha(gen):
    # Signal power sigma(a), noise power sigma(-a): their ratio is e^a for unit x and eps.
    x = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    eps = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
    a = torch.full((20000,), 1.5, dtype=torch.float64)
    xa = noise_channel(x, a, eps)
    signal = (xa * x).mean() ** 2
    assert math.isclose(float(signal), 1 / (1 + math.exp(-1.5)), rel_tol=0.03)
    assert math.isclose(float(xa.var()), 1.0, rel_tol=0.03)  # variance preserving


def test_trained_range_is_logsnr_at_the_ends_of_the_table():
    abar = sd_alphas_cumprod()
    lo, hi = trained_logsnr_range(abar)
    assert lo == pytest.approx(math.log(abar[-1] / (1 - abar[-1])))
    assert hi == pytest.approx(math.log(abar[0] / (1 - abar[0])))
    # abar_T = 0.0047 and abar_0 = 0.99915 for this schedule: about [-5.36, 7.07].
    assert lo == pytest.approx(-5.36, abs=0.01) and hi == pytest.approx(7.07, abs=0.01)


def test_integer_timesteps_map_exactly_to_table_entries():
    abar = sd_alphas_cumprod()
    table = logsnr_from_alphas_cumprod(abar)
    t = timestep_from_logsnr(table[[0, 10, 500, 999]], abar)
    assert torch.allclose(t, torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64), atol=1e-9)


def test_alpha_to_timestep_round_trips():
    abar = sd_alphas_cumprod()
    lo, hi = trained_logsnr_range(abar)
    alpha = torch.linspace(lo, hi, 777, dtype=torch.float64)
    back = logsnr_from_timestep(timestep_from_logsnr(alpha, abar), abar)
    assert torch.allclose(back, alpha, atol=1e-10)


def test_timesteps_are_continuous_not_rounded():
    abar = sd_alphas_cumprod()
    table = logsnr_from_alphas_cumprod(abar)
    mid = 0.5 * (table[100] + table[101])
    t = float(timestep_from_logsnr(mid[None], abar))
    assert 100.0 < t < 101.0


def test_alpha_outside_trained_range_is_refused_by_default():
    abar = sd_alphas_cumprod()
    lo, hi = trained_logsnr_range(abar)
    with pytest.raises(ValueError, match="outside the trained range"):
        timestep_from_logsnr(torch.tensor([hi + 1.0]), abar)


def test_alpha_outside_trained_range_is_clipped_when_asked():
    abar = sd_alphas_cumprod()
    lo, hi = trained_logsnr_range(abar)
    t = timestep_from_logsnr(torch.tensor([hi + 1.0, lo - 1.0]), abar, out_of_range="clip")
    assert torch.allclose(t, torch.tensor([0.0, 999.0], dtype=torch.float64))


def test_non_monotone_table_is_an_error():
    with pytest.raises(ValueError, match="not strictly decreasing"):
        trained_logsnr_range(torch.tensor([0.9, 0.5, 0.7]))
