"""Standard errors: the formulas of uncertainty.py against exact variances, and their
calibration on an exact Gaussian denoiser at the draw counts the jobs use.

Calibration is judged as in the benchmark: z = (estimate - long-run value) / stderr over
many images should have SD about 1, and |z| <= 1.96 should hold about 95% of the time.
"""
import pytest
import torch

from infodiff_lightning import Grid, TruncatedLogistic, pointwise_mi
from infodiff_lightning.analyses.calibration import calibration_stats, calibration_study
from infodiff_lightning.denoisers import CorrelatedGaussian, GaussianMixture
from infodiff_lightning import uncertainty
from infodiff_lightning.integrate import Piecewise
from infodiff_lightning.pid import mmi_pid_statistic
from infodiff_lightning.proposal_fit import fit_model_proposal
from infodiff_lightning.uncertainty import (calibrated_stderr, degrees_of_freedom, mean_stderr, mean_variance,
                                            wild_bootstrap)


def test_paired_variance_is_unbiased_for_two_draws_per_stratum():
    # f(u) = u with u uniform in each of m = S/2 strata of width 1/m, two draws each:
    # Var(u | stratum) = 1/(12 m^2), so the variance of the mean of S draws is
    # S * 1/(12 m^2) / S^2 = 1/(12 S m^2). Averaged over 20 000 replicates, the paired
    # estimate must match it (the average has a relative error of about 1%).
    s, m, reps = 8, 4, 20_000
    g = torch.Generator().manual_seed(0)
    h = torch.arange(s) // 2
    u = (h + torch.rand(reps, s, generator=g, dtype=torch.float64)) / m
    exact = 1 / (12 * s * m**2)
    assert float(mean_variance(u, "paired").mean()) == pytest.approx(exact, rel=0.03)
    # Treating the same draws as independent sees the spread between strata too: about
    # (1/12) / S, here 16x too large.
    assert float(mean_variance(u, "iid").mean()) > 10 * exact


@pytest.mark.parametrize("design, n_draws", [("iid", 8), ("paired", 8), ("iid", 16), ("paired", 16)])
def test_calibrated_stderr_gives_unit_variance_z_for_normal_terms(design, n_draws):
    # For normal terms (mean - mu)/sqrt(Var_hat) is Student-t with nu degrees of freedom
    # (S - 1 iid, S/2 paired); the nu/(nu - 2) scale makes SD(z) = 1 and puts the
    # +-1.96 coverage within 94.5-95.7% (nu >= 3). 40 000 replicates: SD(z) is known to
    # about 1%, the coverage to about 0.2%.
    g = torch.Generator().manual_seed(1)
    terms = torch.randn(40_000, n_draws, generator=g, dtype=torch.float64)
    value, stderr = mean_stderr(terms, design)
    z = value / stderr
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)
    assert 0.94 <= float((z.abs() <= 1.96).double().mean()) <= 0.962


def test_too_few_degrees_of_freedom_and_grid_draws_have_no_standard_error():
    # nu <= 2 (4 paired draws) has an infinite t variance; a grid has no randomness in alpha.
    assert degrees_of_freedom("paired", 4) == 2
    assert torch.isnan(calibrated_stderr(torch.ones(3), 2)).all()
    system = CorrelatedGaussian(dim=4, correlation=0.8)
    x, y = system.sample(5, torch.Generator().manual_seed(0))
    est = pointwise_mi(system, x, y, n_draws=16, sampler=Grid(-8.0, 8.0), generator=0)
    assert torch.isfinite(est.value).all() and torch.isnan(est.stderr).all()


def test_stratified_draws_need_an_even_count():
    with pytest.raises(ValueError, match="even"):
        TruncatedLogistic(stratified=True).sample((2, 7))


def test_wild_bootstrap_variance_of_a_mean_equals_the_formula_in_expectation():
    # For a linear statistic the bootstrap variance is, in expectation over the signs,
    # exactly mean_variance (iid: s^2/S; paired: eq. PAIR). With 4000 replicates the
    # bootstrap variance has a relative error of about 2%.
    g = torch.Generator().manual_seed(2)
    terms = torch.randn(50, 16, 1, generator=g, dtype=torch.float64).exp()  # skewed, positive
    for design in ("iid", "paired"):
        boot = wild_bootstrap(terms, design, lambda t: t.mean(-2), n_boot=4000, generator=3)
        ratio = boot.var(0)[:, 0] / mean_variance(terms[..., 0], design)
        assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)



def skewed_terms(n_images: int, n_draws: int, seed: int = 4) -> torch.Tensor:
    """(N, S, 3) positive, skewed per-draw terms, as of [i1, i2, i12]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_images, n_draws, 3, generator=g, dtype=torch.float64).exp()


@pytest.mark.parametrize("design", ["iid", "paired"])
def test_wild_bootstrap_in_chunks_of_images_equals_the_whole_batch_bit_for_bit(design):
    # The signs are drawn once and shared by every image, so resampling the images a few
    # at a time changes nothing, for a nonlinear statistic (the cross-fitted MMI PID) too.
    terms = skewed_terms(11, 8)
    whole = wild_bootstrap(terms, design, mmi_pid_statistic, n_boot=50, chunk=11)
    for chunk in (1, 3, 4):
        assert torch.equal(wild_bootstrap(terms, design, mmi_pid_statistic, n_boot=50, chunk=chunk), whole)


def test_wild_bootstrap_replicates_of_an_image_do_not_depend_on_its_batch():
    terms = skewed_terms(9, 8)
    whole = wild_bootstrap(terms, "iid", mmi_pid_statistic, n_boot=50)
    alone = wild_bootstrap(terms[4:5], "iid", mmi_pid_statistic, n_boot=50)
    assert torch.equal(alone, whole[:, 4:5])


def test_wild_bootstrap_gives_each_chunk_the_rows_of_its_per_image_tensors():
    # A per-image argument (e.g. a prior per image) is sliced with the images: image k's
    # replicates see row k, whatever the chunk.
    terms = skewed_terms(7, 6)
    offset = torch.arange(7, dtype=torch.float64)[:, None] * 100

    def shifted_mean(t, off):
        return t.mean(-2) + off

    boot = wild_bootstrap(terms, "iid", shifted_mean, n_boot=20, per_image=[offset], chunk=2)
    assert torch.equal(boot, wild_bootstrap(terms, "iid", lambda t: t.mean(-2), n_boot=20) + offset)


def test_wild_bootstrap_resamples_at_most_the_chunk_element_budget_at_once(monkeypatch):
    # Peak memory is bounded by chunk x n_boot x S x K resampled terms, not by the batch:
    # with a budget of 3 images' worth, the statistic never sees more than 3 images.
    n_boot, s, k = 40, 8, 3
    monkeypatch.setattr(uncertainty, "BOOTSTRAP_CHUNK_ELEMENTS", 3 * n_boot * s * k + 1)
    seen = []

    def recording_mean(t):
        seen.append(t.shape[1])
        return t.mean(-2)

    boot = wild_bootstrap(skewed_terms(10, s), "iid", recording_mean, n_boot=n_boot)
    assert boot.shape == (n_boot, 10, k)
    assert seen == [3, 3, 3, 1]


def calibration_cell(system, n_draws, stratified, seed):
    x, y = system.sample(1000, torch.Generator().manual_seed(seed))
    cell = calibration_study(system, x, [system.null_conditions(1000), y], kind="info", n_draws=n_draws,
                             stratified=stratified, long_run_draws=1024, seed=seed)
    return calibration_stats(cell["info"]["z"])


# The draw counts and designs the jobs use: the monitor and the caption analysis take 32
# plain draws per image, the ground-truth job 32 stratified ones; 16 plain is the
# smallest count at which the Gaussian is calibrated (benchmarks/bench_calibration.py).
# With 1000 z-scores the SD is known to about 2.5% and the coverage to about 0.7%, so
# the bounds are those of the calibration goal ([0.9, 1.15], [93%, 97%]) widened by
# about 1.5 of those errors.
@pytest.mark.parametrize("n_draws, stratified", [(16, False), (32, False), (32, True)])
def test_mi_standard_errors_are_calibrated_on_an_exact_gaussian(n_draws, stratified):
    stats = calibration_cell(CorrelatedGaussian(dim=8, correlation=0.9), n_draws, stratified, seed=5)
    assert stats["n"] == 1000
    assert 0.87 <= stats["sd"] <= 1.18, stats
    assert 0.92 <= stats["coverage"] <= 0.98, stats


def test_mi_standard_errors_are_calibrated_on_a_heavy_tailed_mixture_at_32_plain_draws():
    # A 4-component mixture: the gap between the conditional and unconditional predictions
    # is large only for the rare eps that put x_alpha between components, so the terms
    # are heavy-tailed; the bootstrap-t error is what keeps this calibrated.
    stats = calibration_cell(GaussianMixture(4, 8), 32, False, seed=6)
    assert 0.87 <= stats["sd"] <= 1.18, stats
    assert 0.92 <= stats["coverage"] <= 0.98, stats


def test_mi_standard_errors_are_calibrated_under_a_fitted_proposal_at_32_plain_draws():
    # The default draws of a model folder with a fitted log-SNR proposal (eq. OPT, mixed with
    # the reference sampler's density): a piecewise-constant density, drawn iid, whose
    # weights 1/q jump at the bin edges. Fitted on 16 other images of the same Gaussian; the
    # long run draws the same proposal stratified, so both estimate the same integral.
    system = CorrelatedGaussian(dim=8, correlation=0.9)
    xp, yp = system.sample(16, torch.Generator().manual_seed(8))
    proposal = fit_model_proposal(system, xp, {"null": system.null_conditions(16), "y": yp}, {"mi": ("null", "y")},
                                  ids=range(16), n_draws=96)
    assert isinstance(proposal, Piecewise) and not proposal.stratified
    x, y = system.sample(1000, torch.Generator().manual_seed(7))
    cell = calibration_study(system, x, [system.null_conditions(1000), y], kind="info", n_draws=32,
                             stratified=False, long_run_draws=1024, seed=7, sampler=proposal)
    stats = calibration_stats(cell["info"]["z"])
    assert 0.87 <= stats["sd"] <= 1.18, stats
    assert 0.92 <= stats["coverage"] <= 0.98, stats


def test_bootstrap_t_error_of_many_draws_works_in_smaller_chunks_with_the_same_result(monkeypatch):
    # at 4096 draws, 64 images' resamples would be 64 x 400 x 4096 values (839 MB): the
    # chunk shrinks to the element budget, and each image's error is its own, so the
    # numbers are those of one image at a time
    unc = uncertainty

    terms = torch.randn(5, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64).exp()
    monkeypatch.setattr(unc, "BOOTSTRAP_T_CHUNK_ELEMENTS", 2 * 400 * 512)  # two images per chunk
    quantile, seen = torch.quantile, []

    def spy(t, *a, **k):  # the (images, resamples) statistics of each chunk
        seen.append(t.shape[0])
        return quantile(t, *a, **k)

    monkeypatch.setattr(torch, "quantile", spy)
    small = unc.bootstrap_t_stderr(terms)
    assert seen == [2, 2, 1]
    one_by_one = torch.cat([unc.bootstrap_t_stderr(terms[i:i + 1]) for i in range(5)])
    assert torch.allclose(small, one_by_one, rtol=1e-12, atol=0)
