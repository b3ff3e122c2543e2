"""DiffusionPID (PID and CPID) against systems whose decomposition is planted.

The toys (denoisers/pid_toys.py) are Gaussian mixtures with two binary tokens and their
exact (optimal) denoisers, so each PID term has a known dataset-level value:
XOR -> all synergy, copy -> all redundancy, unique -> all unique to y1. Truths come from
DiscreteMixture.mutual_information_mc with n = 200 000 (Monte-Carlo standard error about
0.001 nats on values of about 0.53 nats).

How the checks are decided. A dataset-level estimate is the mean over N images of
per-image estimates; its standard error (std over images / sqrt(N)) holds both the
spread of x and the integration noise of the draws. We require
|estimate - truth| <= 3 * sqrt(se_est^2 + se_truth^2) + 0.005 nats. The 3 standard
errors make a false failure rare (0.3% per check); the 0.005 nats of absolute slack cover
terms that are exactly zero with zero standard error (they then differ from 0 only by
float rounding) and the small bias of nonlinear steps (min, softmax) at finite draws.
With N = 1500 and 16 draws the standard error is about 0.014 nats on 0.53, so a planted
term that went to the wrong place (0.53 nats) would miss by more than 30 standard errors.
"""
import functools
import math

import pytest
import torch

from infodiff_lightning.analyses.calibration import calibration_stats, calibration_study
from infodiff_lightning.denoisers.mixture import DiscreteMixture
from infodiff_lightning.denoisers.noisy import NoisyDenoiser
from infodiff_lightning.denoisers.pid_toys import (binary_candidates, context_xor_system, copy_system, observe,
                                                   pid_columns, unique_system, with_independent_label, xor_system)
from infodiff_lightning.estimators import informations, make_draws
from infodiff_lightning.integrate import TruncatedLogistic
from infodiff_lightning.metrics import PartialInformation
from infodiff_lightning.evaluate import denoiser_errors
from infodiff_lightning.runs.viz import clip_for_display
from infodiff_lightning import uncertainty
from infodiff_lightning.pid import (PID_TERMS, imin_redundancy, conditional_pid, pid, pid_from_terms,
                                    specific_information)

# Wide enough that information outside alpha in [-12, 12] is negligible for unit-variance
# mixtures (the same proposal the MI ground-truth tests use).
WIDE = TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)
N_IMAGES, N_DRAWS = 1500, 16
TOL = 0.005  # nats: see the module docstring
HALF = torch.tensor([0.5, 0.5], dtype=torch.float64)  # uniform prior over a binary token

SYSTEMS = {"xor": xor_system, "copy": copy_system, "unique": unique_system}


@functools.lru_cache(maxsize=None)
def truth(name: str, target: tuple, given: tuple | None = None) -> tuple[float, float]:
    """(I(X; Y_target | Y_given), its Monte-Carlo standard error) for a named toy."""
    system = {**SYSTEMS, "context_xor": context_xor_system}[name]()
    return system.mutual_information_mc(target=target, given=given, n=200_000)


def assert_close(estimate: tuple[float, float], expected: tuple[float, float] | float, what: str):
    value, se = estimate
    target, target_se = expected if isinstance(expected, tuple) else (expected, 0.0)
    bound = 3 * math.sqrt(se**2 + target_se**2) + TOL
    assert abs(value - target) <= bound, f"{what}: {value:.4f} +- {se:.4f} vs {target:.4f} (bound {bound:.4f})"


def run_pid(name, gen, **kw):
    system = SYSTEMS[name]()
    x, y = system.sample(N_IMAGES, gen)
    kw = {"n_draws": N_DRAWS, "sampler": WIDE, "generator": gen, **kw}
    return system, x, y, pid(system, x, *pid_columns(y), **kw)


# ---------------------------------------------------------------- planted decompositions
def test_xor_information_is_all_synergy(gen):
    # y1 alone says nothing about x (y1 xor y2 is uniform given y1), nor does y2 alone:
    # eps_hat(.|y1) = eps_hat(.|null) exactly, so i1 = i2 = 0 and r = u1 = u2 = 0 exactly;
    # everything y1, y2 carry together is synergy: s = i12 = I(X; Y1, Y2).
    _, _, _, est = run_pid("xor", gen)
    m = est.dataset_mean()
    assert_close(m["synergy"], truth("xor", (True, True)), "synergy")
    for term in ("redundancy", "unique1", "unique2"):
        assert_close(m[term], 0.0, term)


def test_copy_information_is_all_redundancy(gen):
    # y1 = y2: each token alone, and both together, select the same component, so
    # i1 = i2 = i12 draw for draw; the min is either, u1 = u2 = s = 0 exactly.
    _, _, _, est = run_pid("copy", gen)
    m = est.dataset_mean()
    assert_close(m["redundancy"], truth("copy", (True, False)), "redundancy")
    for term in ("unique1", "unique2", "synergy"):
        assert_close(m[term], 0.0, term)


def test_unique_information_is_all_unique_to_the_first_token(gen):
    # The mean depends on y1 only and y2 is independent: i2 = 0 exactly, so r = min = 0,
    # u1 = i1 = I(X; Y1), and i12 = i1 (y2 adds nothing) so s = 0 and u2 = 0.
    _, _, _, est = run_pid("unique", gen)
    m = est.dataset_mean()
    assert_close(m["unique1"], truth("unique", (True, False)), "unique1")
    for term in ("redundancy", "unique2", "synergy"):
        assert_close(m[term], 0.0, term)


def test_mmi_with_the_standard_estimator_matches_the_minimum_of_exact_pointwise_informations(gen):
    # A noisy copy: y2 = y1 with probability 0.8, the mean follows y1. Here i1(x) and
    # i2(x) are both non-zero and the smaller one changes from image to image, so this
    # exercises the per-image choice. With the standard estimator the expectation of
    # i(x; y) over the draws is the log-likelihood ratio log p(y|x)/p(y), which we know
    # exactly per image, so the truth of each image's MMI redundancy is
    # min(i1(x), i2(x)). We compare image by image (paired, so the spread of r over x
    # cancels and only the draw noise is left): the mean difference must be 0 within 3
    # standard errors + 0.005. The min of two noisy estimates is biased low; with 256
    # draws per image it is about -0.0013 nats (mean over 21 seeds), against a bound of
    # about 0.019 nats (standard error about 0.0046 over 500 images).
    mu = 0.75 * torch.tensor([[-1.0] * 4, [1.0] * 4], dtype=torch.float64)
    system = DiscreteMixture(torch.tensor([[0, 0], [1, 1], [0, 1], [1, 0]]),
                             torch.tensor([0.4, 0.4, 0.1, 0.1], dtype=torch.float64), mu[[0, 1, 0, 1]])

    def llr(x, obs):  # exact log p(y_obs | x) - log p(y_obs)
        return system._log_prob_obs_given_x(x, obs) - system._log_prior_obs(obs)

    x, y = system.sample(500, gen)
    _, c1, c2, _ = pid_columns(y)
    r_true = torch.minimum(llr(x, c1), llr(x, c2))
    est = pid(system, x, *pid_columns(y), estimator="standard", n_draws=256, sampler=WIDE, generator=gen)
    diff = est.redundancy.value - r_true
    assert_close((float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))), 0.0, "redundancy - truth")
    assert 0 < float(est.extra["side"].float().mean()) < 1  # both sources give the minimum somewhere


# ---------------------------------------------------------------- conditional PID
def test_conditional_pid_with_an_uninformative_context_equals_the_pid(gen):
    # A third label c, independent of x and of (y1, y2): conditioning on c restricts the
    # mixture to components with the same means in the same proportions, so every
    # eps_hat(.|., c) equals eps_hat(.|.) and CPID = PID draw for draw (to rounding).
    system = with_independent_label(xor_system())
    x, y = system.sample(300, gen)
    draws = make_draws(system, x, 8, WIDE, gen)
    plain = pid(system, x, *pid_columns(y), draws=draws)
    ref, y1, y2, y12 = pid_columns(y, context=(2,))
    cond = conditional_pid(system, x, ref, y1, y2, y12, draws=draws)
    assert torch.allclose(cond.values(), plain.values(), atol=1e-9)
    assert torch.allclose(cond.stderrs(), plain.stderrs(), atol=1e-9)


def test_conditional_pid_reveals_information_that_needs_the_context(gen):
    # x follows y1 xor c. Without c, y1 and y2 tell nothing (every PID term is 0); given c,
    # y1 determines the mean: u1 = I(X; Y1 | C), and y2 stays irrelevant (r = u2 = s = 0).
    system = context_xor_system()
    x, y = system.sample(N_IMAGES, gen)
    draws = make_draws(system, x, N_DRAWS, WIDE, gen)
    plain = pid(system, x, *pid_columns(y), draws=draws).dataset_mean()
    cond = conditional_pid(system, x, *pid_columns(y, context=(2,)), draws=draws).dataset_mean()
    for term in ("redundancy", "unique1", "unique2", "synergy"):
        assert_close(plain[term], 0.0, f"PID {term}")
    assert_close(cond["unique1"], truth("context_xor", (True, False, False), (False, False, True)), "CPID unique1")
    for term in ("redundancy", "unique2", "synergy"):
        assert_close(cond[term], 0.0, f"CPID {term}")


# ---------------------------------------------------------------- I_min redundancy
def imin_kwargs(y):
    return dict(redundancy="imin", candidates1=binary_candidates(y, 0), prior1=HALF,
                candidates2=binary_candidates(y, 1), prior2=HALF)


def test_imin_redundancy_of_copies_is_their_mutual_information(gen):
    # For copies p(y1|x) = p(y2|x), so both specific informations KL(p(Y_k|x) || p(Y_k))
    # are equal, and their mean over x is I(X; Y1) (the mean of a KL to the prior over x is
    # the mutual information). The posterior comes from standard estimates of 2 candidates.
    system = copy_system()
    x, y = system.sample(N_IMAGES, gen)
    est = pid(system, x, *pid_columns(y), n_draws=N_DRAWS, sampler=WIDE, generator=gen, **imin_kwargs(y))
    assert est.measure == "imin"
    assert_close(est.redundancy.dataset_mean(), truth("copy", (True, False)), "I_min redundancy")
    assert torch.equal(est.extra["specific1"], est.extra["specific2"])  # identical sources, identical draws


def test_specific_information_of_an_uninformative_source_is_bias_corrected_towards_zero(gen):
    # unique toy: y2 alone leaves p(x) unchanged, so its specific information is 0 for
    # every image. With a noisy denoiser the candidates' standard terms are noise around 0,
    # and the plug-in KL of a noisy posterior is biased upward (measured: 0.027 nats at 64
    # stratified draws, about 13 standard errors over 400 images). The bootstrap-corrected
    # value must be centred on 0 within 3 standard errors; the plug-in must not be (so
    # the test can fail).
    system = unique_system()
    x, y = system.sample(400, gen)
    cols = [pid_columns(y)[0]] + binary_candidates(y, 0) + binary_candidates(y, 1)
    draws = make_draws(system, x, 64, WIDE, gen)
    err = denoiser_errors(NoisyDenoiser(system, NOISE, seed=5), x, cols, draws)
    standard = 0.5 * err.weight[..., None] * (err.mse[..., :1] - err.mse[..., 1:])  # (N, S, 4)
    plug_in, _ = specific_information(standard[..., 2:], HALF)
    _, _, extra = imin_redundancy(standard[..., :2], HALF, standard[..., 2:], HALF, err.design)
    corrected = extra["specific2"]
    se = float(corrected.std() / math.sqrt(400))
    assert abs(float(corrected.mean())) < 3 * se
    assert float(plug_in.mean()) > 6 * se


def test_specific_information_is_the_kl_of_the_bayes_posterior_to_the_prior():
    # Exact pointwise informations i_k = log p(y_k|x)/p(y_k), constant over draws, give
    # back the posterior p(y|x) and KL(p(y|x) || p(y)); adding a constant to every i_k (a
    # noisy shared reference) changes nothing.
    prior = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    post = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    i = (post / prior).log()
    terms = i.expand(1, 4, 3).clone()
    kl = float((post * (post / prior).log()).sum())
    value, got_post = specific_information(terms, prior)
    assert float(value) == pytest.approx(kl, abs=1e-12)
    assert torch.allclose(got_post[0], post, atol=1e-12)
    shifted, _ = specific_information(terms + 3.7, prior)
    assert float(shifted) == pytest.approx(kl, abs=1e-12)


def test_a_prior_that_is_not_a_distribution_is_an_error():
    with pytest.raises(ValueError, match="sum to 1"):
        specific_information(torch.zeros(1, 2, 2), torch.tensor([0.5, 0.6]))


# ---------------------------------------------------------------- maps
def test_redundancy_map_is_unbiased_where_the_two_sources_are_equal(gen):
    # Copy toy with a noisy denoiser: per pixel, i1 and i2 have the same long-run map
    # (the noise is symmetric in the two sources), the worst case for a minimum. The
    # cross-fitted r map must average to the mean of the two source maps; the plug-in
    # element-wise min(m1, m2) is biased low by about half the mean |m1 - m2|, which this
    # test must be able to see (checked below), so it could fail.
    system = copy_system()
    x, y = system.sample(600, gen)
    est = pid(NoisyDenoiser(system, 0.3, seed=1), x, *pid_columns(y), maps=True, n_draws=16, sampler=WIDE,
              generator=gen)
    assert est.redundancy.map.shape == (600, 4) and est.redundancy.map_stderr.shape == (600, 4)
    centre = 0.5 * (est.i1.map + est.i2.map)
    diff = (est.redundancy.map - centre).sum(1)  # per image, summed over pixels
    se = float(diff.std() / math.sqrt(diff.numel()))
    assert abs(float(diff.mean())) < 3 * se
    plug_in = (torch.minimum(est.i1.map, est.i2.map) - centre).sum(1)
    assert float(plug_in.mean()) < -10 * se


def test_xor_synergy_map_is_the_joint_information_map(gen):
    # Orthogonal maps sum to the image value, and with i1 = i2 = 0 the synergy map is
    # the whole i12 map.
    _, _, _, est = run_pid("xor", gen, maps=True, n_draws=4)
    assert torch.allclose(est.synergy.map, est.i12.map, atol=1e-12)
    assert torch.allclose(est.synergy.map.sum(1), est.synergy.value, atol=1e-9)


def test_synergy_for_display_is_clipped_at_zero_and_the_estimate_is_not():
    s = torch.tensor([[-0.5, 0.2], [0.1, -0.1]])
    shown = clip_for_display(s)
    assert torch.equal(shown, torch.tensor([[0.0, 0.2], [0.1, 0.0]]))
    assert float(s.min()) == -0.5  # the estimate itself is untouched


def test_imin_maps_are_refused():
    system = copy_system()
    x, y = system.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="redundancy='mmi'"):
        pid(system, x, *pid_columns(y), maps=True, n_draws=2, **imin_kwargs(y))


# ---------------------------------------------------------------- the decomposition itself
def test_redundancy_takes_the_source_chosen_on_one_half_of_the_draws_from_the_other_half():
    # Four draws: fold A = draws 0, 2 and fold B = draws 1, 3. Image 0: on fold A source 1
    # is smaller (mean 1 vs 2), on fold B source 2 is (1 vs 3). So fold A's draws take the
    # choice made on fold B (source 2) and vice versa: r terms = (t2[0], t1[1], t2[2], t1[3]).
    # Image 1: source 2 is smaller on both folds, so r is source 2 throughout (the plug-in).
    t1 = torch.tensor([[0.0, 3.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    t2 = torch.tensor([[1.0, 0.0, 3.0, 2.0], [1.0, 2.0, 3.0, 2.0]], dtype=torch.float64)
    t12 = torch.tensor([[4.0, 4.0, 4.0, 4.0], [6.0, 6.0, 6.0, 6.0]], dtype=torch.float64)
    est = pid_from_terms(t1, t2, t12, keep_terms=True)
    assert est.redundancy.terms.tolist() == [[1.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 2.0]]
    assert est.extra["side"].tolist() == [[0, 1], [1, 1]]  # the choice made on fold A, fold B
    # r = 2.5, u1 = i1 - r = 2 - 2.5, u2 = 1.5 - 2.5, s = i12 - i1 - i2 + r = 4 - 2 - 1.5 + 2.5: an
    # unbiased minimum can exceed one of the two estimates, so unique terms can be negative.
    assert est.values()[0].tolist() == [2.5, -0.5, -1.0, 3.0]
    # Image 0's choice flips between halves, so its unique terms are uncertain and must
    # carry a non-zero error; image 1's u2 is 0 on every draw but its standard error is
    # not asserted to be 0: a resample of the draws may still flip the choice.
    assert float(est.unique1.stderr[0]) > 0 and float(est.unique2.stderr[0]) > 0


def test_pid_from_terms_checks_its_inputs():
    t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same images and draws"):
        pid_from_terms(t, t, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs candidates"):
        pid_from_terms(t, t, t, redundancy="imin")
    with pytest.raises(ValueError, match="redundancy must be one of"):
        pid_from_terms(t, t, t, redundancy="ccs")


def test_pid_is_one_pass_of_four_conditions_that_agrees_with_the_mi_estimator(gen):
    # Same draws: i1, i2, i12 of the PID are the informations() estimates, draw for draw,
    # and the pass costs N * S * 4 denoiser evaluations.
    system = xor_system()
    x, y = system.sample(50, gen)
    draws = make_draws(system, x, 8, WIDE, gen)
    cols = list(pid_columns(y))
    est = pid(system, x, *cols, draws=draws, estimator="standard")
    ref = informations(system, x, cols, [(0, 1), (0, 2), (0, 3)], draws=draws, estimator="standard")
    assert est.n_evals == 50 * 8 * 4
    for mine, theirs in zip((est.i1, est.i2, est.i12), ref):
        assert torch.allclose(mine.value, theirs.value, atol=1e-12)
        assert torch.allclose(mine.stderr, theirs.stderr, atol=1e-12)



@pytest.mark.parametrize("redundancy", ["mmi", "imin"])
def test_pid_errors_do_not_depend_on_how_many_images_are_bootstrapped_at_once(redundancy, gen, monkeypatch):
    # The bootstrap resamples a few images at a time (bounded memory); the bootstrap signs
    # are shared by all images, so a chunk of one image gives the whole-batch result bit
    # for bit. I_min gets a different prior per image, which each chunk must take along.
    system = copy_system()
    x, y = system.sample(12, gen)
    prior = torch.rand(12, 2, generator=gen, dtype=torch.float64) + 0.1
    prior = prior / prior.sum(1, keepdim=True)
    kw = dict(imin_kwargs(y), prior1=prior, prior2=prior.flip(1)) if redundancy == "imin" else {"redundancy": "mmi"}
    draws = make_draws(system, x, 8, None, gen)
    estimates = {}
    for name, budget in (("whole batch", 2**40), ("one image", 1)):
        monkeypatch.setattr(uncertainty, "BOOTSTRAP_CHUNK_ELEMENTS", budget)
        est = pid(system, x, *pid_columns(y), draws=draws, **kw)
        estimates[name] = torch.stack([est.redundancy.value, est.redundancy.stderr, est.unique1.stderr,
                                       est.synergy.stderr], 1)
    assert torch.isfinite(estimates["whole batch"][:, 1]).all()
    assert torch.equal(estimates["one image"].nan_to_num(-1.0), estimates["whole batch"].nan_to_num(-1.0))


def test_condition_columns_observe_the_right_label_coordinates():
    y = torch.tensor([[1, 0, 1]])
    ref, y1, y2, y12 = pid_columns(y, context=(2,))
    assert [ref.tolist(), y1.tolist(), y2.tolist(), y12.tolist()] == [
        [[-1, -1, 1]], [[1, -1, 1]], [[-1, 0, 1]], [[1, 0, 1]]]
    assert observe(y, (False, True, False)).tolist() == [[-1, 0, -1]]


# ---------------------------------------------------------------- the metric
def test_metric_updated_in_two_halves_equals_one_update(gen):
    _, _, _, est = run_pid("copy", gen, n_draws=4, maps=True)
    whole, halves = PartialInformation(), PartialInformation()
    whole.update(est)
    v = est.values()
    halves.update(v[:700])
    halves.update(v[700:])
    a, b = whole.compute(), halves.compute()
    for key in ("redundancy", "unique1", "unique2", "synergy"):
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-12, abs=1e-15)
        assert float(a[f"{key}_stderr"]) == pytest.approx(float(b[f"{key}_stderr"]), rel=1e-9, abs=1e-15)
    assert float(a["redundancy"]) == pytest.approx(est.redundancy.dataset_mean()[0], rel=1e-12)
    assert float(a["redundancy_stderr"]) == pytest.approx(est.redundancy.dataset_mean()[1], rel=1e-9)
    assert int(a["count"]) == N_IMAGES and int(a["n_evals"]) == est.n_evals


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_rejects_an_empty_compute():
    with pytest.raises(ValueError, match="zero samples"):
        PartialInformation().compute()


# ---------------------------------------------------------------- honest errors
NOISE = 0.3  # added denoiser noise: i1 and i2 of the copy toy differ draw by draw, not in the long run


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_copy_toy_per_image_terms_are_centred_on_their_long_run_values_with_calibrated_errors(gen):
    # With a noisy denoiser every term of every image is random; the copy toy's long-run
    # u1 = u2 = s = 0 per image (the noise is symmetric in y1 and y2). Over 500 images,
    # z = (estimate - long run) / stderr must have SD near 1 and cover about 95%: with 500
    # z the SD is known to about 3.5% and the coverage to 1%, hence the bounds.
    system = copy_system()
    x, y = system.sample(500, gen)
    cells = calibration_study(NoisyDenoiser(system, NOISE, seed=2), x, list(pid_columns(y)), kind="pid",
                              n_draws=32, stratified=False, long_run_draws=1024, seed=3)
    for term in PID_TERMS:
        stats = calibration_stats(cells[term]["z"])
        assert stats["n"] == 500, (term, stats)  # no zero or undefined error
        assert 0.85 <= stats["sd"] <= 1.2, (term, stats)
        assert 0.91 <= stats["coverage"] <= 0.985, (term, stats)


def test_dataset_redundancy_of_equal_sources_is_unbiased(gen):
    # i1 = i2 in the long run for every image (copy toy + symmetric denoiser noise): the
    # worst case for a minimum. The truth is exact: I(X; Y1) plus what the noise adds to
    # an orthogonal information (eq. NOISE of denoisers/noisy.py: 4 d scale^2 (sigma(hi) - sigma(lo))).
    system = copy_system()
    x, y = system.sample(N_IMAGES, gen)
    noisy = NoisyDenoiser(system, NOISE, seed=4)
    est = pid(noisy, x, *pid_columns(y), n_draws=N_DRAWS, sampler=WIDE, generator=gen)
    value, se = truth("copy", (True, False))
    target = value + 4 * 4 * NOISE**2 * (_sigmoid(WIDE.hi) - _sigmoid(WIDE.lo))
    r, r_se = est.dataset_mean()["redundancy"]
    assert abs(r - target) <= 3 * math.sqrt(r_se**2 + se**2), (r, r_se, target)
    # The plug-in min(i1_hat, i2_hat) is what this guards against: it misses by far more.
    plug_in = torch.minimum(est.i1.value, est.i2.value).mean()
    assert float(plug_in) < target - 6 * r_se


def test_imin_unique_and_synergy_are_dataset_level_and_centred_on_zero_for_copies(gen):
    # I_min's unique and synergy terms mix the orthogonal i_k with specific informations,
    # which agree only on average over images: the dataset means are the copy toy's
    # u1 = u2 = s = 0, and per-image values are refused with a clear error.
    system = copy_system()
    x, y = system.sample(N_IMAGES, gen)
    est = pid(system, x, *pid_columns(y), n_draws=N_DRAWS, sampler=WIDE, generator=gen, **imin_kwargs(y))
    m = est.dataset_mean()
    for term in ("unique1", "unique2", "synergy"):
        assert_close(m[term], 0.0, f"I_min {term}")
    with pytest.raises(ValueError, match="defined for the dataset"):
        est.values()
