"""Flow matching is channel (1) reparametrised (flow.py, eqs. (F1)-(F4)), and the
estimators recover exact information through a flow model's path.

Ground truth: a jointly Gaussian (X, Y), whose VP noise prediction (gaussian.py) and flow
velocity (gaussian_flow.py, eq. (G)) are both closed forms derived separately.
"""
import math

import pytest
import torch

from infodiff_lightning import TruncatedLogistic, conditional_mi, pointwise_mi
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.denoisers.gaussian_flow import FlowMatchingGaussian, gaussian_velocity
from infodiff_lightning.denoisers.parametrisation import FlowParametrisation, parametrisation_of
from infodiff_lightning.flow import (eps_from_velocity, flow_channel, flow_logsnr_range, flow_scale, flow_time,
                                     logsnr_from_flow_time, sample_flow_time, velocity_target)
from infodiff_lightning.logsnr import noise_channel

# inside the flow model's trained range [-13.8, 13.8], wide enough that the information of
# these systems outside it is negligible (as in test_estimators_ground_truth.py)
WIDE = TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)


def test_flow_time_and_log_snr_are_inverse_maps():
    # alpha = 2 log((1 - s) / s): s = 1/2 is alpha = 0 and s = 1/(1 + e) is alpha = 2
    s = torch.tensor([0.001, 0.1, 0.5, 1 / (1 + math.e), 0.999], dtype=torch.float64)
    alpha = logsnr_from_flow_time(s)
    assert alpha[2] == 0 and alpha[3] == pytest.approx(2.0, abs=1e-12)
    assert torch.allclose(flow_time(alpha), s, rtol=0, atol=1e-15)


def test_the_flow_path_is_the_vp_channel_scaled_by_k_with_the_same_noise():
    # (1 - s) x0 + s eps = k (sqrt(sigma(alpha)) x0 + sqrt(sigma(-alpha)) eps), k^2 = (1-s)^2 + s^2
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    alpha = torch.linspace(-9, 9, 6, dtype=torch.float64)
    x_s = flow_channel(x0, flow_time(alpha), eps)
    assert torch.allclose(x_s, flow_scale(alpha)[:, None] * noise_channel(x0, alpha, eps), atol=1e-14)


def test_a_perfect_velocity_gives_back_the_noise():
    # x_s + (1 - s)(eps - x0) = eps exactly: eq. (F4) loses nothing
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=torch.float64)
    got = eps_from_velocity(velocity_target(x0, eps), flow_channel(x0, s, eps), s)
    assert torch.allclose(got, eps, atol=1e-14)


def test_a_1000_step_flow_model_reports_s_from_one_thousandth_to_one_minus_it():
    # -2 logit(0.999) = -2 log(999) = -13.8: the reference range [-5, 7] lies well inside
    lo, hi = flow_logsnr_range(1000)
    assert (lo, hi) == pytest.approx((-2 * math.log(999), 2 * math.log(999)))


def test_the_sampling_shift_does_not_change_the_models_parametrisation():
    # SD3's shift=3 moves the *sampler's* sigmas; the model is trained on the same path
    from diffusers import FlowMatchEulerDiscreteScheduler

    plain = parametrisation_of(FlowMatchEulerDiscreteScheduler(shift=1.0))
    shifted = parametrisation_of(FlowMatchEulerDiscreteScheduler(shift=3.0))
    alpha = torch.linspace(-5, 7, 9, dtype=torch.float64)
    assert isinstance(shifted, FlowParametrisation) and shifted.alpha_range == plain.alpha_range
    assert torch.equal(shifted.timesteps(alpha), plain.timesteps(alpha))
    assert torch.allclose(plain.timesteps(alpha), 1000 * torch.sigmoid(-alpha / 2))


def test_a_log_snr_outside_the_flow_range_is_refused():
    with pytest.raises(ValueError, match="outside the trained range"):
        FlowParametrisation().timesteps(torch.tensor([15.0]))


def test_the_training_draw_is_the_flow_path_with_the_velocity_target():
    param = FlowParametrisation(density="uniform")
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(5, 2, 4, 4, generator=g), torch.randn(5, 2, 4, 4, generator=g)
    draw = param.training_draw(x0, eps, generator=torch.Generator().manual_seed(3))
    s = draw.t.double() / 1000
    assert torch.allclose(draw.x_in, flow_channel(x0, s, eps), atol=1e-6)
    assert torch.equal(draw.target, eps - x0)
    assert torch.allclose(draw.logsnr, logsnr_from_flow_time(s))


def test_the_logit_normal_density_has_the_asked_mean_and_spread_of_logit_s():
    # 20000 draws: the sample mean of logit(s) is within 3 standard errors (1.5/sqrt(20000)) of 0.5
    s = sample_flow_time(20000, "logit_normal", logit_mean=0.5, logit_std=1.5, generator=torch.Generator().manual_seed(4))
    z = torch.logit(s)
    assert abs(float(z.mean()) - 0.5) < 3 * 1.5 / math.sqrt(20000)
    assert float(z.std()) == pytest.approx(1.5, rel=0.03)  # sd of a sample sd: 1.5/sqrt(2n) = 0.5%


def test_an_unknown_flow_time_density_is_refused():
    with pytest.raises(ValueError, match="flow time density must be one of"):
        sample_flow_time(3, "beta")


# ------------------------------------------------------------------ the Gaussian ground truth

def test_gaussian_velocity_is_the_conditional_mean_of_eps_minus_x0():
    # regression check of eq. (G): among many draws of (x0, eps), E[eps - x0 | x_s] is the
    # least-squares linear predictor for a Gaussian; compare with the closed form at s = 0.4
    system = CorrelatedGaussian(dim=2, correlation=0.6, spread=2.0, mean=0.5)
    g = torch.Generator().manual_seed(5)
    x0, _ = system.sample(200_000, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    s = torch.full((x0.shape[0],), 0.4, dtype=torch.float64)
    x_s = flow_channel(x0, s, eps)
    design = torch.cat([x_s, torch.ones(len(x_s), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, eps - x0).solution
    probe = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    fitted = torch.cat([probe, torch.ones(2, 1, dtype=torch.float64)], 1) @ coef
    exact = gaussian_velocity(system, probe, torch.full((2,), 0.4, dtype=torch.float64), system.null_conditions(2))
    assert torch.allclose(fitted, exact, atol=0.02)  # regression noise ~ 1/sqrt(200000) per coefficient


def test_the_flow_gaussian_gives_the_vp_gaussians_eps_hat_draw_for_draw():
    # same system, same (x_alpha, alpha, c): eq. (G) through (F3)-(F4) equals the VP closed form
    system = CorrelatedGaussian(dim=4, correlation=0.8, spread=2.0, mean=1.0)
    flow = FlowMatchingGaussian(system)
    g = torch.Generator().manual_seed(6)
    x, y = system.sample(40, g)
    y[::3, :2] = float("nan")  # partly observed conditions, as conditional MI uses
    alpha = torch.linspace(-12, 12, 40, dtype=torch.float64)
    x_alpha = noise_channel(x, alpha, torch.randn(x.shape, generator=g, dtype=torch.float64))
    for c in (y, system.null_conditions(40)):
        assert torch.allclose(flow.eps_hat(x_alpha, alpha, c), system.eps_hat(x_alpha, alpha, c), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("estimator", ["orthogonal", "standard"])
def test_mi_through_a_flow_model_matches_the_closed_form(estimator, gen):
    # I(X;Y) = -d/2 log(1 - rho^2) = 2.04 nats for d = 4, rho = 0.8
    system = CorrelatedGaussian(dim=4, correlation=0.8, spread=2.0)
    flow = FlowMatchingGaussian(system)
    x, y = flow.sample(2000, gen)
    est = pointwise_mi(flow, x, y, estimator=estimator, n_draws=32, sampler=WIDE, generator=gen)
    value, stderr = est.dataset_mean()
    assert abs(value - system.analytic_mi) <= 3 * stderr, f"{value:.4f} +- {stderr:.4f} vs {system.analytic_mi:.4f}"


def test_conditional_mi_through_a_flow_model_matches_the_closed_form(gen):
    # I(X; Y2 | Y1) with Y1 the first half of Y: the log-det difference of the Gaussian conditionals
    system = CorrelatedGaussian(dim=4, correlation=0.85, spread=2.0)
    flow = FlowMatchingGaussian(system)
    x, y = flow.sample(2000, gen)
    context = y.clone()
    context[:, 2:] = float("nan")
    truth = system.mutual_information(target=(False, False, True, True), given=(True, True, False, False))
    est = conditional_mi(flow, x, y, context, n_draws=32, sampler=WIDE, generator=gen)
    value, stderr = est.dataset_mean()
    assert abs(value - truth) <= 3 * stderr, f"{value:.4f} +- {stderr:.4f} vs {truth:.4f}"
