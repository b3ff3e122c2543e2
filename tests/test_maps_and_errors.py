"""Per-element maps, exact zeros, micro-batching, and clear errors for bad input."""

import pytest
import torch

from infodiff_lightning import Draws, TruncatedLogistic, informations, mmse_curve, pointwise_mi, sample_draws
from infodiff_lightning.denoisers import CorrelatedGaussian, DenoiserBase, GaussianMixture


@pytest.fixture
def gaussian(gen):
    system = CorrelatedGaussian(dim=8, correlation=0.8)
    x, y = system.sample(16, gen)
    return system, x, y


def test_orthogonal_maps_are_non_negative_and_sum_to_the_image_value(gaussian):
    system, x, y = gaussian
    est = pointwise_mi(system, x, y, n_draws=16, generator=0, maps=True)
    assert est.map.shape == (16, 8)  # one entry per coordinate of a vector x
    assert bool((est.map >= 0).all())
    # Same draws, same weights: the map is the image-level sum split by element.
    assert torch.allclose(est.map.sum(1), est.value, rtol=1e-10, atol=1e-12)


def test_image_maps_sum_over_channels(gen):
    class Shaped(DenoiserBase):  # the Gaussian denoiser on inputs viewed as (C=2, H=2, W=2) images
        def __init__(self, base):
            self.base = base

        def null_conditions(self, n):
            return self.base.null_conditions(n)

        def eps_hat(self, xa, alpha, cond):
            return self.base.eps_hat(xa.reshape(len(xa), -1), alpha, cond).reshape(xa.shape)

    system = CorrelatedGaussian(dim=8, correlation=0.8)
    x, y = system.sample(4, gen)
    est = pointwise_mi(Shaped(system), x.reshape(4, 2, 2, 2), y, n_draws=8, generator=0, maps=True)
    assert est.map.shape == (4, 2, 2)
    assert torch.allclose(est.map.flatten(1).sum(1), est.value)


def test_identical_conditions_give_exactly_zero_orthogonal_information(gaussian):
    system, x, y = gaussian
    est, = informations(system, x, [y, y], [(0, 1)], n_draws=16, generator=0, maps=True)
    assert torch.equal(est.value, torch.zeros_like(est.value))
    assert torch.equal(est.map, torch.zeros_like(est.map))


def test_result_does_not_depend_on_micro_batch_size(gaussian):
    system, x, y = gaussian
    draws = sample_draws(16, 12, (8,), TruncatedLogistic(), torch.Generator().manual_seed(0), torch.float64)
    a = pointwise_mi(system, x, y, draws=draws, microbatch=7)
    b = pointwise_mi(system, x, y, draws=draws, microbatch=10_000)
    assert torch.allclose(a.value, b.value, rtol=1e-12)


def test_per_draw_terms_average_to_the_estimate(gaussian):
    system, x, y = gaussian
    est = pointwise_mi(system, x, y, n_draws=16, generator=0, return_terms=True)
    assert est.terms.shape == (16, 16)
    assert torch.allclose(est.terms.mean(1), est.value)


def test_mmse_curve_of_a_gaussian_is_a_sum_of_sigmoids(gen):
    # For X ~ N(mu, S) with eigenvalues l_i: mmse(alpha) = sum_i sigma(alpha + log l_i).
    system = CorrelatedGaussian(dim=8, correlation=0.8, spread=3.0)
    x, _ = system.sample(400, gen)
    alphas = torch.tensor([-4.0, 0.0, 4.0])
    curve = mmse_curve(system, x, [system.null_conditions(400)], alphas, n_eps=4, generator=gen)
    lam = torch.linalg.eigvalsh(system.cov[:8, :8])
    truth = torch.sigmoid(alphas[:, None].double() + lam.log()[None]).sum(1)
    assert torch.all((curve.mmse[0] - truth).abs() < 4 * curve.stderr[0])


def test_mmse_gap_curve_is_positive_for_an_informative_condition(gen):
    system = GaussianMixture(n_classes=4, dim=4, separation=4.0)
    x, y = system.sample(200, gen)
    curve = mmse_curve(system, x, [system.null_conditions(200), y], torch.linspace(-3, 3, 5), n_eps=4, generator=gen)
    gap, se = curve.gap()
    assert bool((gap > 0).all())


# ---- bad input -------------------------------------------------------------

def test_mismatched_condition_count_is_an_error(gaussian):
    system, x, y = gaussian
    with pytest.raises(ValueError, match="condition column 1 has 15 entries but x has 16"):
        pointwise_mi(system, x, y[:15], n_draws=4, generator=0)


def test_draws_for_another_shape_are_an_error(gaussian):
    system, x, y = gaussian
    draws = sample_draws(16, 4, (9,), TruncatedLogistic(), None)
    with pytest.raises(ValueError, match="draws are for 16 images of shape \\(9,\\)"):
        pointwise_mi(system, x, y, draws=draws)


def test_non_finite_denoiser_output_is_an_error(gaussian):
    system, x, y = gaussian

    class Broken(CorrelatedGaussian):
        def eps_hat(self, xa, alpha, cond):
            out = super().eps_hat(xa, alpha, cond)
            out[0, 0] = float("nan")
            return out

    with pytest.raises(ValueError, match="non-finite"):
        pointwise_mi(Broken(dim=8, correlation=0.8), x, y, n_draws=4, generator=0)


def test_zero_images_is_an_error(gaussian):
    system, x, y = gaussian
    with pytest.raises(ValueError, match="n_images >= 1|no images"):
        pointwise_mi(system, x[:0], y[:0], n_draws=4, generator=0)


def test_zero_draws_is_an_error(gaussian):
    system, x, y = gaussian
    with pytest.raises(ValueError, match="n_draws >= 1"):
        pointwise_mi(system, x, y, n_draws=0)


def test_unknown_estimator_is_an_error(gaussian):
    system, x, y = gaussian
    with pytest.raises(ValueError, match="estimator must be one of"):
        pointwise_mi(system, x, y, estimator="fancy", n_draws=4)


def test_draws_outside_the_models_trained_range_are_an_error(gaussian):
    system, x, y = gaussian

    class Trained(CorrelatedGaussian):
        alpha_range = (-2.0, 2.0)

    alpha = torch.full((16, 4), 5.0, dtype=torch.float64)
    draws = Draws(alpha, torch.ones_like(alpha), torch.randn(16, 4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="outside the model's trained range"):
        pointwise_mi(Trained(dim=8, correlation=0.8), x, y, draws=draws)


def test_default_sampler_stays_inside_the_trained_range(gaussian):
    system, x, y = gaussian

    class Trained(CorrelatedGaussian):
        alpha_range = (-2.0, 2.0)

    est = pointwise_mi(Trained(dim=8, correlation=0.8), x, y, n_draws=8, generator=0, return_terms=True)
    assert float(est.extra["alpha"].abs().max()) <= 2.0
