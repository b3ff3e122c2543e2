"""MMSE curves: exact values on Gaussians, and standard errors that mean what they say.

Ground truth. For X ~ N(mu, S) (or X | y ~ N(mu_c, S_c)) the optimal noise prediction is
eps_hat(x_a) = b M (x_a - a mu) with M = (a^2 S + b^2 I)^-1, a^2 = sigma(alpha),
b^2 = sigma(-alpha). With x_a = a x + b eps the error is

    eps - eps_hat = (I - b^2 M) eps - a b M (x - mu)                          (ERR)

so, for one fixed image, E_eps ||.||^2 = ||I - b^2 M||_F^2 + a^2 b^2 ||M (x - mu)||^2
(GIVEN-X), and averaged over x as well, in the eigenbasis of S (eigenvalues l_i),
mmse(alpha) = sum_i a^2 l_i / (a^2 l_i + b^2) = sum_i sigma(alpha + log l_i) (POP).
Conditioning on y replaces (mu, S) by the Gaussian conditional.
"""
import pytest
import torch

from infodiff_lightning import mmse_curve
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.mmse import mmse_eps_for_ids

ALPHAS = torch.tensor([-2.0, 4.0], dtype=torch.float64)
REPEATS = 1000


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def system():
    return CorrelatedGaussian(dim=8, correlation=0.8, spread=3.0)


def conditional(system, y=None):
    """(mu_c, S_c) of X given all of y (None: the marginal of X), from the joint covariance."""
    d = system.dim_x
    mu_x, mu_y = system.mean[:d], system.mean[d:]
    sxx, sxy, syy = system.cov[:d, :d], system.cov[:d, d:], system.cov[d:, d:]
    if y is None:
        return mu_x, sxx
    gain = sxy @ torch.linalg.inv(syy)
    return mu_x + gain @ (y - mu_y), sxx - gain @ sxy.T


def population_mmse(cov, alphas):
    """Eq. POP: sum_i sigma(alpha + log l_i)."""
    lam = torch.linalg.eigvalsh(cov)
    return torch.sigmoid(alphas[:, None] + lam.log()[None]).sum(1)


def matrices(cov, alpha):
    a2, b2 = torch.sigmoid(alpha), torch.sigmoid(-alpha)
    m = torch.linalg.inv(a2 * cov + b2 * torch.eye(len(cov), dtype=torch.float64))
    return a2, b2, m


def mmse_given_x(x, mu, cov, alphas):
    """Eq. GIVEN-X: E_eps ||eps - eps_hat||^2 for one fixed image x."""
    out = []
    for alpha in alphas:
        a2, b2, m = matrices(cov, alpha)
        eye = torch.eye(len(cov), dtype=torch.float64)
        out.append(((eye - b2 * m) ** 2).sum() + a2 * b2 * ((m @ (x - mu)) ** 2).sum())
    return torch.stack(out)


def z_scores(estimates, truth, stderrs):
    return (torch.stack(estimates) - truth) / torch.stack(stderrs)  # (REPEATS, G)


def assert_unbiased(estimates, truth):
    """The mean of the repeated estimates is the truth, within 4 of its standard errors."""
    est = torch.stack(estimates)
    off = (est.mean(0) - truth).abs() / (est.std(0) / len(est) ** 0.5)
    assert bool((off < 4).all()), f"bias in standard errors of the mean: {off.tolist()}"


# ---- exact per-draw values --------------------------------------------------------

def test_explicit_eps_are_used_as_given_image_by_alpha_by_draw(system, gen):
    # eps[n, g, j] is image n's j-th draw at alpha g: each recorded error must be eq. ERR
    # of exactly that (x_n, alpha_g, eps) -- a layout mix-up would pair wrong draws.
    x, _ = system.sample(3, gen)
    eps = torch.randn(3, len(ALPHAS), 2, 8, generator=gen, dtype=torch.float64)
    curve = mmse_curve(system, x, [system.null_conditions(3)], ALPHAS, eps=eps)
    mu, cov = conditional(system)
    for g, alpha in enumerate(ALPHAS):
        a2, b2, m = matrices(cov, alpha)
        eye = torch.eye(8, dtype=torch.float64)
        for n in range(3):
            for j in range(2):
                err = (eye - b2 * m) @ eps[n, g, j] - (a2 * b2).sqrt() * m @ (x[n] - mu)
                assert float(curve.errors[n, 0, g, j]) == pytest.approx(float((err**2).sum()), rel=1e-9)


def test_eps_keyed_by_id_do_not_depend_on_the_other_ids():
    # The eps of image 5 are the same whether it is drawn alone or next to image 3 (so a
    # probe split over ranks sees the same eps), and different images get different eps.
    both = mmse_eps_for_ids([3, 5], 2, 4, (8,), seed=0)
    alone = mmse_eps_for_ids([5], 2, 4, (8,), seed=0)
    assert both.shape == (2, 2, 4, 8)
    assert torch.equal(both[1], alone[0])
    assert not torch.equal(both[0], both[1])
    assert not torch.equal(mmse_eps_for_ids([5], 2, 4, (8,), seed=1), alone)


# ---- standard errors: z = (estimate - truth) / stderr must have unit spread -------

def assert_calibrated(est, se, truth):
    """Over the repeats, z at every alpha has SD in [0.85, 1.2], and the mean is unbiased."""
    sd = z_scores(est, truth, se).std(0)
    assert bool(((sd > 0.85) & (sd < 1.2)).all()), f"z SD at alpha {ALPHAS.tolist()}: {sd.tolist()}"
    assert_unbiased(est, truth)


def test_curve_stderr_is_clustered_by_image(system):
    # 1000 independent data sets of 32 images x 2 eps draws. The images differ far more
    # than the eps draws of one image (at alpha = -2 the error is mostly the image's own
    # ||x - mu||^2 term), so an stderr that treated the 64 draws as independent is too
    # small there (z SD 1.44 here, 2.8 with 8 eps per image). With eq. CLU, z is close to
    # Student-t with 31 degrees of freedom, SD sqrt(31/29) = 1.03 (a little more for these
    # skewed errors), up to the 2% noise of an SD from 1000 repeats.
    truth = population_mmse(conditional(system)[1], ALPHAS)
    est, se = [], []
    for r in range(REPEATS):
        g = torch.Generator().manual_seed(r)
        x, _ = system.sample(32, g)
        curve = mmse_curve(system, x, [system.null_conditions(32)], ALPHAS, n_eps=2, generator=g)
        est.append(curve.mmse[0])
        se.append(curve.stderr[0])
    assert_calibrated(est, se, truth)


def test_gap_stderr_is_paired_per_image(system):
    # The gap null - caption at one alpha: both conditions see the same x and eps, so the
    # per-image gaps carry their common noise only once; adding the two curves' (pooled)
    # variances instead is wrong in both directions (z SD 1.28 at alpha = -2, 0.32 at
    # alpha = 4 in this setup). Truth: eq. POP with S minus eq. POP with S_x|y
    # (the conditional covariance does not depend on the value of y).
    truth = population_mmse(conditional(system)[1], ALPHAS) - population_mmse(
        conditional(system, torch.zeros(8, dtype=torch.float64))[1], ALPHAS)
    est, se = [], []
    for r in range(REPEATS):
        g = torch.Generator().manual_seed(10_000 + r)
        x, y = system.sample(32, g)
        curve = mmse_curve(system, x, [system.null_conditions(32), y], ALPHAS, n_eps=2, generator=g)
        gap, stderr = curve.gap(0, 1)
        est.append(gap)
        se.append(stderr)
    assert_calibrated(est, se, truth)


def test_one_image_stderr_is_that_of_its_eps_draws(system):
    # With one image the spread over images is unknown, so the stderr is conditional on
    # the image: repeated over eps alone (x fixed) it covers eq. GIVEN-X, the curve *of
    # that image*, with z Student-t on 31 degrees of freedom (SD 1.03).
    x, _ = system.sample(1, torch.Generator().manual_seed(7))
    mu, cov = conditional(system)
    truth = mmse_given_x(x[0], mu, cov, ALPHAS)
    est, se = [], []
    for r in range(REPEATS):
        curve = mmse_curve(system, x, [system.null_conditions(1)], ALPHAS, n_eps=32, generator=r)
        est.append(curve.mmse[0])
        se.append(curve.stderr[0])
    assert_calibrated(est, se, truth)


def test_one_image_gap_stderr_is_paired_over_its_eps_draws(system):
    # The same for the gap of one (x, y): the truth is GIVEN-X under the marginal minus
    # GIVEN-X under the conditional given this y (expectation is linear).
    x, y = system.sample(1, torch.Generator().manual_seed(7))
    mu, cov = conditional(system)
    mu_c, cov_c = conditional(system, y[0])
    truth = mmse_given_x(x[0], mu, cov, ALPHAS) - mmse_given_x(x[0], mu_c, cov_c, ALPHAS)
    est, se = [], []
    for r in range(REPEATS):
        gap, stderr = mmse_curve(system, x, [system.null_conditions(1), y], ALPHAS, n_eps=32, generator=r).gap()
        est.append(gap)
        se.append(stderr)
    assert_calibrated(est, se, truth)


def test_one_image_with_one_eps_draw_has_an_unknown_stderr(system, gen):
    # Nothing to estimate a spread from: NaN, never 0.
    x, _ = system.sample(1, gen)
    curve = mmse_curve(system, x, [system.null_conditions(1)], ALPHAS, n_eps=1, generator=gen)
    assert bool(curve.stderr.isnan().all())


# ---- bad input ----------------------------------------------------------------------

def test_eps_and_a_generator_together_are_an_error(system, gen):
    x, _ = system.sample(2, gen)
    eps = torch.zeros(2, 2, 1, 8)
    with pytest.raises(ValueError, match="eps or a generator, not both"):
        mmse_curve(system, x, [system.null_conditions(2)], ALPHAS, eps=eps, generator=0)


def test_eps_of_the_wrong_shape_are_an_error(system, gen):
    x, _ = system.sample(2, gen)
    with pytest.raises(ValueError, match="eps must be \\(N, G, n_eps, \\*shape\\)"):
        mmse_curve(system, x, [system.null_conditions(2)], ALPHAS, eps=torch.zeros(2, 3, 1, 8))
