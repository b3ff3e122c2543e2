"""MI, CMI and -log p(x) against exact ground truth (analytic optimal denoisers).

Dataset-level I(X;Y) = E_p(x,y) i(x;y): the mean of pointwise estimates over samples of
p(x, y) must match the closed form within 3 standard errors AND within 3%.
"""
import math

import pytest
import torch

from infodiff_lightning import TruncatedLogistic, Uniform, conditional_mi, informations, nll, pointwise_mi
from infodiff_lightning.denoisers import CorrelatedGaussian, GaussianMixture

# Wide enough that the information outside [-12, 12] is negligible for these systems
# (the gap integrand decays like exp(-|alpha|) beyond -log of the smallest variance).
WIDE = TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)

GAUSSIANS = {
    "d16-rho0.9-13nats": dict(dim=16, correlation=0.9, spread=3.0),
    "d8-rho0.8-4nats": dict(dim=8, correlation=0.8, mean=1.5),
    "d32-noise1-11nats": dict(dim=32, noise=1.0, spread=4.0, mean=-2.0, scale=2.0, seed=3),
}


def assert_matches_truth(value, stderr, truth):
    assert abs(value - truth) <= 3 * stderr, f"{value:.4f} +- {stderr:.4f} vs truth {truth:.4f}"
    assert abs(value - truth) <= 0.03 * truth, f"{value:.4f} is more than 3% from {truth:.4f}"


@pytest.mark.parametrize("setting", GAUSSIANS, ids=list(GAUSSIANS))
@pytest.mark.parametrize("estimator", ["orthogonal", "standard"])
def test_gaussian_mi_matches_closed_form(setting, estimator, gen):
    system = CorrelatedGaussian(**GAUSSIANS[setting])
    x, y = system.sample(3000, gen)
    est = pointwise_mi(system, x, y, estimator=estimator, n_draws=32, sampler=WIDE, generator=gen)
    truth = system.mutual_information()
    assert truth == pytest.approx(system.analytic_mi)  # -d/2 log(1 - rho^2)
    assert_matches_truth(*est.dataset_mean(), truth)


@pytest.mark.parametrize("estimator", ["orthogonal", "standard"])
def test_gaussian_mixture_mi_matches_monte_carlo_truth(estimator, gen):
    system = GaussianMixture(n_classes=4, dim=8, separation=3.0)
    x, y = system.sample(4000, gen)
    truth, truth_se = system.mutual_information_mc(n=200_000)
    est = pointwise_mi(system, x, y, estimator=estimator, n_draws=32, sampler=WIDE, generator=gen)
    assert truth_se < 0.005  # the truth itself is known to ~0.5%
    assert_matches_truth(*est.dataset_mean(), truth)


def test_chain_rule_of_mutual_information(gen):
    # Y = (Y1, Y2), Y1 the first 8 coordinates. I(X;Y1,Y2) = I(X;Y1) + I(X;Y2|Y1), each
    # estimated with the orthogonal estimator (not additive draw by draw, so this is a
    # real check), all three from one pass with shared draws.
    system = CorrelatedGaussian(dim=16, correlation=0.85, spread=2.0)
    x, y = system.sample(2000, gen)
    y1_only = y.clone()
    y1_only[:, 8:] = float("nan")  # Y2 unobserved
    null = system.null_conditions(len(x))
    both, first, second_given_first = informations(
        system, x, [null, y1_only, y], [(0, 2), (0, 1), (1, 2)], n_draws=32, sampler=WIDE, generator=gen)
    (vb, sb), (v1, s1), (v2, s2) = both.dataset_mean(), first.dataset_mean(), second_given_first.dataset_mean()
    assert abs(vb - (v1 + v2)) <= 3 * math.sqrt(sb**2 + s1**2 + s2**2)
    target = tuple([False] * 8 + [True] * 8)
    assert v2 == pytest.approx(system.mutual_information(target=target, given=tuple(not t for t in target)), rel=0.05)


def test_conditional_mi_is_the_gap_between_context_and_full_condition(gen):
    system = CorrelatedGaussian(dim=16, correlation=0.85)
    x, y = system.sample(2000, gen)
    ctx = y.clone()
    ctx[:, 8:] = float("nan")
    est = conditional_mi(system, x, y, ctx, n_draws=32, sampler=WIDE, generator=gen)
    given = tuple([True] * 8 + [False] * 8)
    truth = system.mutual_information(target=tuple(not g for g in given), given=given)
    assert_matches_truth(*est.dataset_mean(), truth)


def test_neg_log_density_of_a_gaussian_matches_its_log_density(gen):
    # The reference N(mean, diag S) ignores the correlations of S (a random rotation), so
    # the integral term carries real information and is not zero.
    system = CorrelatedGaussian(dim=16, correlation=0.5, spread=3.0, mean=0.5)
    x, _ = system.sample(40, gen)
    diag = torch.diagonal(system.cov[:16, :16])
    est = nll(system, x, reference_mean=0.5, reference_cov=diag, n_draws=512,
              sampler=Uniform(-16.0, 16.0, stratified=True), generator=gen)
    # the exact log density of X: log N(x; mu_x, S_xx)
    truth = -torch.distributions.MultivariateNormal(system.mean[:16], system.cov[:16, :16]).log_prob(x.to(torch.float64))
    z = (est.value - truth) / est.stderr
    assert float(z.abs().max()) < 4.0  # 40 images: max |z| of 40 normals is rarely above 3.5
    pooled_se = float(est.stderr.pow(2).sum().sqrt()) / len(x)
    assert abs(float((est.value - truth).mean())) < 3 * pooled_se  # no bias over images
    from infodiff_lightning.denoisers.reference import GaussianReference
    ref_only = GaussianReference(0.5, diag, 16).neg_log_prob(x)
    assert float((ref_only - truth).abs().mean()) > 3 * float(est.stderr.mean())  # ~1.6 nats vs ~0.33


def test_same_generator_seed_repeats_exactly():
    system = CorrelatedGaussian(dim=4, correlation=0.7)
    x, y = system.sample(10, torch.Generator().manual_seed(0))
    a = pointwise_mi(system, x, y, n_draws=8, generator=5)
    b = pointwise_mi(system, x, y, n_draws=8, generator=5)
    assert torch.equal(a.value, b.value) and a.n_evals == b.n_evals == 10 * 8 * 2
