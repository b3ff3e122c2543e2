"""Importance samplers over log-SNR: weights are exact 1/q of the truncated density."""
import math

import pytest
import torch

from infodiff_lightning.integrate import Grid, Piecewise, TruncatedLogistic, Uniform


def softplus(v):
    return math.log1p(math.exp(v))


def exact_integral_of_sigmoid(lo, hi, b):
    # d/da softplus(a + b) = sigmoid(a + b)
    return softplus(hi + b) - softplus(lo + b)


def estimate(sampler, n, gen, b=0.7):
    alpha, w = sampler.sample((n,), gen)
    terms = torch.sigmoid(alpha + b) * w
    return float(terms.mean()), float(terms.std() / math.sqrt(n))


@pytest.mark.parametrize("sampler", [
    TruncatedLogistic(1.0, 2.0, 3.0), TruncatedLogistic(1.0, 2.0, 3.0, stratified=True),
    Uniform(-6.0, 9.0), Uniform(-6.0, 9.0, stratified=True), TruncatedLogistic(0.0, 1.5, 4.0, lo=-2.0, hi=3.0),
    Piecewise((-6.0, -1.0, 2.0, 9.0), (0.1, 0.6, 0.3), True), Piecewise((-6.0, -1.0, 2.0, 9.0), (0.1, 0.6, 0.3)),
    Piecewise((-6.0, -1.0, 2.0, 9.0), (0.1, 0.6, 0.3)).restricted((-3.0, 5.5)),
], ids=["logistic", "logistic-strat", "uniform", "uniform-strat", "logistic-cut", "piecewise-strat", "piecewise",
        "piecewise-cut"])
def test_weighted_draws_integrate_sigmoid_exactly(sampler, gen):
    value, se = estimate(sampler, 20000, gen)
    truth = exact_integral_of_sigmoid(sampler.lo, sampler.hi, 0.7)
    assert abs(value - truth) < 4 * se + 1e-9 * truth


def test_truncated_logistic_weights_are_inverse_truncated_density():
    s = TruncatedLogistic(1.0, 2.0, 3.0)
    # Mass of the untruncated logistic inside [loc - 3 scale, loc + 3 scale] is
    # sigma(3) - sigma(-3) = 0.905; the weights must include it.
    alpha, w = s.sample((5,), torch.Generator().manual_seed(0))
    z = (alpha - 1.0) / 2.0
    pdf = torch.exp(-z) / (2.0 * (1 + torch.exp(-z)) ** 2)
    mass = 1 / (1 + math.exp(-3)) - 1 / (1 + math.exp(3))
    assert torch.allclose(w, mass / pdf)


def test_weights_integrate_one_to_range_length(gen):
    # Int_lo^hi 1 da = hi - lo for any proposal.
    s = TruncatedLogistic(1.0, 2.0, 3.0)
    alpha, w = s.sample((40000,), gen)
    assert abs(float(w.mean()) - (s.hi - s.lo)) < 4 * float(w.std()) / 200


def test_stratified_error_is_smaller_at_equal_count():
    truth = exact_integral_of_sigmoid(-5.0, 7.0, 0.7)
    errs = {}
    for strat in (False, True):
        s = TruncatedLogistic(1.0, 2.0, 3.0, stratified=strat)
        g = torch.Generator().manual_seed(7)
        vals = [estimate(s, 64, g)[0] for _ in range(200)]
        errs[strat] = math.sqrt(sum((v - truth) ** 2 for v in vals) / len(vals))
    # Stratifying a smooth integrand cuts the RMS error by far more than 2x at n = 64.
    assert errs[True] < 0.5 * errs[False]


def test_grid_is_the_midpoint_rule():
    a, w = Grid(-1.0, 3.0).sample((2, 4))
    assert torch.allclose(a[0], torch.tensor([-0.5, 0.5, 1.5, 2.5], dtype=torch.float64))
    assert torch.all(w == 4.0)


def test_restricted_keeps_alpha_inside_the_trained_range(gen):
    s = TruncatedLogistic(1.0, 2.0, 3.0).restricted((-2.0, 4.0))
    alpha, _ = s.sample((1000,), gen)
    assert float(alpha.min()) >= -2.0 and float(alpha.max()) <= 4.0


@pytest.mark.parametrize("make", [lambda: Uniform(3.0, 3.0), lambda: Grid(2.0, 1.0),
                                  lambda: TruncatedLogistic(lo=8.0, hi=9.0),
                                  lambda: TruncatedLogistic().restricted((50.0, 60.0))])
def test_empty_alpha_range_is_refused(make):
    with pytest.raises(ValueError, match="empty alpha range|range"):
        make()


def test_zero_draws_is_refused():
    with pytest.raises(ValueError, match="positive number of draws"):
        Uniform().sample((0,))


def test_piecewise_weights_are_bin_width_over_bin_mass():
    # bin [-1, 2) holds 60% of the draws over a width of 3: density 0.2, weight 5
    s = Piecewise((-6.0, -1.0, 2.0, 9.0), (0.1, 0.6, 0.3))
    alpha, w = s.sample((4000,), torch.Generator().manual_seed(0))
    inside = (alpha >= -1.0) & (alpha < 2.0)
    assert torch.allclose(w[inside], torch.full_like(w[inside], 5.0))
    assert abs(float(inside.double().mean()) - 0.6) < 0.03  # 4 binomial sd at n = 4000


def test_stratified_piecewise_puts_each_draw_pair_in_its_own_equal_probability_stratum():
    # 8 draws = 4 strata of probability 1/4: with masses (0.25, 0.5, 0.25) draws 0-1 fall
    # in the first bin, 2-5 in the second, 6-7 in the third, whatever the generator
    s = Piecewise((0.0, 1.0, 2.0, 3.0), (0.25, 0.5, 0.25), stratified=True)
    alpha, _ = s.sample((3, 8), torch.Generator().manual_seed(1))
    bins = alpha.floor().long()
    assert bins.tolist() == [[0, 0, 1, 1, 1, 1, 2, 2]] * 3


def test_restricted_piecewise_keeps_the_density_where_it_remains():
    s = Piecewise((-6.0, -1.0, 2.0, 9.0), (0.1, 0.6, 0.3))
    r = s.restricted((-3.0, 5.5))
    a = torch.tensor([-2.0, 0.0, 4.0], dtype=torch.float64)
    # only the normalisation changes: the kept mass is 0.1*2/5 + 0.6 + 0.3*3.5/7 = 0.79
    assert torch.allclose(r.log_density(a), s.log_density(a) - math.log(0.79))
    assert r.range == (-3.0, 5.5)


@pytest.mark.parametrize("edges,mass,match", [((0.0, 1.0), (0.0,), "positive"), ((1.0, 0.0), (1.0,), "increasing"),
                                              ((0.0, 1.0, 2.0), (1.0,), "len")])
def test_malformed_piecewise_is_refused(edges, mass, match):
    with pytest.raises(ValueError, match=match):
        Piecewise(edges, mass)
