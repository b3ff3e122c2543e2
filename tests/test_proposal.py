"""A log-SNR proposal fitted to a model's integrand: same integral, less noise, saved with the model."""
import json
import math

import pytest
import torch

from infodiff_lightning import measure
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.integrate import Piecewise, TruncatedLogistic
from infodiff_lightning.measure import DrawSpec, default_sampler, reference_range
from infodiff_lightning.proposal import DEFAULT_FLOOR, PROPOSAL_FILE, fit_proposal, load_proposal, save_proposal
from infodiff_lightning.proposal_fit import fit_model_proposal
from infodiff_lightning.uncertainty import mean_variance


def gaussian_integral(system: CorrelatedGaussian, lo: float, hi: float) -> float:
    """1/2 Int_lo^hi (mmse_eps(a | null) - mmse_eps(a | y)) da in closed form: for a Gaussian
    with covariance eigenvalues l_i, mmse_eps(a) = sum_i l_i e^a / (1 + l_i e^a), whose
    integral over a is sum_i log(1 + l_i e^a) (I-MMSE in log-SNR)."""
    d = system.dim_x
    cov = system.cov
    sxx, sxy, syy = cov[:d, :d], cov[:d, d:], cov[d:, d:]
    cond = sxx - sxy @ torch.linalg.solve(syy, sxy.T)

    def primitive(eig, a):
        return float(torch.log1p(eig * math.exp(a)).sum())

    lam, mu = torch.linalg.eigvalsh(sxx), torch.linalg.eigvalsh(cond)
    return 0.5 * (primitive(lam, hi) - primitive(lam, lo) - primitive(mu, hi) + primitive(mu, lo))


def test_fitted_mass_follows_the_integrand_with_a_uniform_floor():
    # The integrand is 1 on [0, 1) and 0 elsewhere on [-2, 2] (4 bins of width 1): eq. OPT
    # gives all fitted mass to bin 2, and the 10% floor spreads 0.1 evenly, 0.025 per bin.
    alpha = torch.linspace(-1.99, 1.99, 400, dtype=torch.float64).reshape(1, -1)
    f = ((alpha >= 0) & (alpha < 1)).double()
    q = fit_proposal(alpha, [f], -2.0, 2.0, n_bins=4, floor=0.1)
    assert q.mass == pytest.approx((0.025, 0.025, 0.925, 0.025))
    assert q.range == (-2.0, 2.0)


def test_each_quantity_counts_alike_whatever_its_scale():
    # Image 1 has integrand 1 then 3 over two bins; image 2 has 3 then 1, a thousand times
    # larger. Each normalised by its own mean square (5 and 5e6), the pooled mean squares
    # are (0.2 + 1.8) / 2 = 1 in both bins: equal mass. Unnormalised, image 2 alone would
    # decide it (mass 0.75 / 0.25 before the floor).
    alpha = torch.linspace(-1.99, 1.99, 400, dtype=torch.float64).reshape(1, -1).repeat(2, 1)
    up = torch.where(alpha[:1] < 0, 1.0, 3.0)
    f = torch.cat([up, 1000.0 * up.flip(1)])
    q = fit_proposal(alpha, [f], -2.0, 2.0, n_bins=2, floor=0.5)
    assert q.mass == pytest.approx((0.5, 0.5))


def test_a_fitted_proposal_estimates_the_same_integral_with_less_noise():
    # Gaussian system, spread 10: the integrand is broad and uneven over log-SNR. Fitted on
    # 8 pilot images, the proposal must estimate the closed-form integral over the reference
    # range (unbiased: within 3 standard errors over 300 images) with a smaller per-image
    # Monte-Carlo variance than the reference draws at the same 16 draws.
    system = CorrelatedGaussian(dim=4, correlation=0.9, spread=10.0)
    lo, hi = reference_range(system)
    x, y = system.sample(308, torch.Generator().manual_seed(0))
    cols = {"null": system.null_conditions(308), "y": y}
    q = fit_model_proposal(system, x[:8], {"null": cols["null"][:8], "y": y[:8]}, {"mi": ("null", "y")},
                           n_draws=64, seed=1)
    truth = gaussian_integral(system, lo, hi)
    rest = {k: v[8:] for k, v in cols.items()}
    fitted = measure(system, rest, {"mi": ("null", "y")}, x=x[8:], draws=DrawSpec(16, 2, q), ids=range(300))
    plain = measure(system, rest, {"mi": ("null", "y")}, x=x[8:], draws=DrawSpec(16, 2, default_sampler(system)),
                    ids=range(300))
    est = fitted.estimate("mi", "standard")
    mean, se = float(est.value.mean()), float(est.value.std() / math.sqrt(300))
    assert abs(mean - truth) < 3 * se
    var_fitted = float(mean_variance(fitted.terms("mi", "standard"), fitted.design).mean())
    var_plain = float(mean_variance(plain.terms("mi", "standard"), plain.design).mean())
    assert var_fitted < 0.8 * var_plain


def test_a_proposal_round_trips_through_its_file(tmp_path):
    q = Piecewise((-5.0, 0.0, 7.0), (0.3, 0.7))
    path = save_proposal(q, tmp_path / PROPOSAL_FILE, {"images": 8})
    back = load_proposal(path)
    assert back.edges == q.edges and back.mass == pytest.approx(q.mass)


@pytest.mark.parametrize("body,field", [({"format": "other"}, "format"),
                                        ({"format": "infodiff-logsnr-proposal", "edges": [0, 1], "mass": "x"}, "mass"),
                                        ({"format": "infodiff-logsnr-proposal", "edges": [0, 1], "mass": [-1]},
                                         "positive")])
def test_a_malformed_proposal_file_is_an_error_naming_file_and_field(tmp_path, body, field):
    path = tmp_path / PROPOSAL_FILE
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=f"{PROPOSAL_FILE}.*{field}"):
        load_proposal(path)


class WithProposal(CorrelatedGaussian):
    alpha_range = (-8.0, 8.0)


def test_the_default_draws_use_the_models_proposal_over_the_reference_range():
    den = WithProposal(dim=2)
    den.alpha_proposal = Piecewise((-6.0, 0.0, 8.0), (0.5, 0.5))
    s = default_sampler(den)
    assert isinstance(s, Piecewise) and s.range == (-5.0, 7.0)  # the reference range, cut from the proposal
    assert not s.stratified  # iid: the calibrated bootstrap-t error (default_sampler's docstring)


def test_without_a_proposal_the_default_draws_are_the_reference_draws():
    s = default_sampler(WithProposal(dim=2))
    assert isinstance(s, TruncatedLogistic) and not s.stratified and s.range == (-5.0, 7.0)


def test_a_proposal_narrower_than_the_reference_range_is_refused():
    den = WithProposal(dim=2)
    den.alpha_proposal = Piecewise((-2.0, 7.0), (1.0,))
    with pytest.raises(ValueError, match="refit it over that range"):
        default_sampler(den)


def test_a_model_folder_with_a_proposal_file_loads_it(tmp_path):
    from infodiff_lightning.denoisers import load_text_to_image
    from tiny_models import save_pixel_text

    folder = save_pixel_text(tmp_path / "model")
    assert load_text_to_image(folder).alpha_proposal is None
    lo, hi = reference_range(load_text_to_image(folder))
    save_proposal(Piecewise((lo, 0.0, hi), (0.2, 0.8)), folder / PROPOSAL_FILE)
    den = load_text_to_image(folder)
    assert den.alpha_proposal.mass == pytest.approx((0.2, 0.8))
    assert default_sampler(den).range == (lo, hi)


def test_a_fitted_proposal_spans_the_reference_range_in_the_asked_bins():
    # the fit reads the integrand from stratified uniform draws over the range it will serve
    system = WithProposal(dim=2)
    x, y = system.sample(2, torch.Generator().manual_seed(0))
    q = fit_model_proposal(system, x, {"null": system.null_conditions(2), "y": y}, {"mi": ("null", "y")},
                           n_draws=16, n_bins=6)
    assert q.range == (-5.0, 7.0) and len(q.mass) == 6


def test_a_fitted_proposal_keeps_the_default_share_of_the_reference_density_in_every_bin():
    # Defensive mixture: wherever the pilot saw no information, the proposal still has at
    # least DEFAULT_FLOOR (a quarter) of the reference sampler's mass, so no weight exceeds
    # 1/DEFAULT_FLOOR = 4 times the reference's (bin-averaged) weight, whatever a later
    # (fine-tuned) model's integrand does there.
    system = WithProposal(dim=2)
    x, y = system.sample(4, torch.Generator().manual_seed(0))
    q = fit_model_proposal(system, x, {"null": system.null_conditions(4), "y": y}, {"mi": ("null", "y")},
                           n_draws=48, n_bins=12)
    edges = torch.tensor(q.edges, dtype=torch.float64)
    cdf = torch.sigmoid((edges - 1.0) / 2.0)  # the reference logistic (loc 1, scale 2) on [-5, 7]
    ref_mass = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    assert bool((torch.tensor(q.mass, dtype=torch.float64) >= DEFAULT_FLOOR * ref_mass - 1e-12).all())
