"""Caption ranking by pointwise MI against the exact Bayes classifier.

Four Gaussian classes named by a word; the exact mixture denoiser conditions on the class
its caption names. With equal priors, argmax_k i(x; c_k) = argmax_k log p(c_k | x) is the
Bayes classifier, whose decision is computed in closed form: the ranking by the standard
estimator must agree with it on nearly every image (Monte-Carlo noise only matters near a
decision boundary). The orthogonal estimator is not pointwise for a wrong caption (it
measures how far the caption moves the prediction, in any direction) and must not be
used to choose.
"""
import pytest
import torch

from infodiff_lightning.denoisers import DenoiserBase
from infodiff_lightning.denoisers.mixture import DiscreteMixture, GaussianMixture
from infodiff_lightning.analyses.ranking import (PREDICTION_ESTIMATOR, rank_adaptively, score_candidates,
                                                 separated_from_leader)
from infodiff_lightning.integrate import TruncatedLogistic
from infodiff_lightning.analyses.statistics import accuracy_interval, correct, macro_accuracy

NAMES = ["zero", "one", "two", "three"]


class NamedClasses(DenoiserBase):
    """Captions "class <name>" -> the exact mixture denoiser given that class ("" = unobserved)."""

    tokenizer = None

    def __init__(self, system):
        self.system = system

    def null_conditions(self, n):
        return [""] * n

    def eps_hat(self, x_alpha, alpha, conditions):
        rows = torch.tensor([[NAMES.index(c.split()[-1]) if c else -1] for c in conditions])
        return self.system.eps_hat(x_alpha, alpha, rows)


def test_ranking_by_mi_agrees_with_the_exact_bayes_classifier():
    system = GaussianMixture(n_classes=4, dim=4, separation=2.0)
    g = torch.Generator().manual_seed(0)
    x, y = system.sample(120, g)
    candidates = [[f"class {w}" for w in NAMES]] * len(x)
    scores = score_candidates(NamedClasses(system), x, list(range(len(x))), candidates, n_draws=64)
    obs = torch.arange(4)[:, None]
    log_post = torch.stack([system._log_prob_obs_given_x(x, obs[k].expand(len(x), 1)) for k in range(4)], 1)
    bayes = log_post.argmax(1)
    assert float((scores.value[PREDICTION_ESTIMATOR].argmax(1) == bayes).float().mean()) >= 0.9
    # separation 2 leaves the classes overlapping: the Bayes classifier is right often, not always
    bayes_acc = float((bayes == y[:, 0]).float().mean())
    mi_acc = float(correct(scores.value[PREDICTION_ESTIMATOR], y[:, 0]).float().mean())
    assert 0.4 < bayes_acc < 0.95 and abs(mi_acc - bayes_acc) < 0.1


def test_the_orthogonal_score_is_not_a_pointwise_ranking():
    # Far from every class but one, a wrong caption moves the prediction far: its
    # orthogonal score is large although log p(c | x) / p(c) is very negative.
    system = GaussianMixture(n_classes=4, dim=4, separation=6.0)
    x, y = system.sample(60, torch.Generator().manual_seed(1))
    candidates = [[f"class {w}" for w in NAMES]] * len(x)
    scores = score_candidates(NamedClasses(system), x, list(range(len(x))), candidates, n_draws=32)
    standard = float(correct(scores.value["standard"], y[:, 0]).float().mean())
    orthogonal = float(correct(scores.value["orthogonal"], y[:, 0]).float().mean())
    assert standard > 0.95 and orthogonal < 0.5


def test_a_tie_is_a_miss_so_an_uninformative_model_scores_zero():
    scores = torch.zeros(5, 3)
    assert not correct(scores, [0, 1, 2, 0, 1]).any()
    assert correct(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), [0, 0]).tolist() == [True, False]


def test_the_wilson_interval_holds_the_share_and_stays_inside_zero_one():
    p, lo, hi = accuracy_interval(98, 100)
    assert p == 0.98 and lo < 0.98 < hi <= 1.0
    assert accuracy_interval(100, 100)[2] == 1.0 and accuracy_interval(100, 100)[1] == pytest.approx(0.963, abs=1e-3)


def test_candidate_lists_of_different_lengths_are_an_error():
    system = GaussianMixture(n_classes=4, dim=4)
    with pytest.raises(ValueError, match="same number"):
        score_candidates(NamedClasses(system), torch.zeros(2, 4), [0, 1], [["class one", "class two"], ["class one"]])


def test_the_macro_accuracy_is_the_mean_over_subgroups_not_over_items():
    # 9 of 10 and 1 of 2: the item average is 10/12 = 0.83, ARO's macro average (0.9 + 0.5) / 2 = 0.7
    acc, low, high = macro_accuracy([(9, 10), (1, 2)])
    assert acc == pytest.approx(0.7) and low < 0.7 < high
    # a subgroup at 100% still has a variance: the interval of a perfect score is not a point
    acc, low, high = macro_accuracy([(5, 5)])
    assert acc == 1.0 and low < 1.0


# ----------------------------------------------------------------------------- adaptive ranking
#
# A mixture with a known answer: the image sits at the mean of class "zero"; class "one" is
# 0.05 away (log p(x|one) - log p(x|zero) = -0.05^2 / 2 = -0.00125 nats, far below the noise
# of any draw count used here), "two" and "three" are 20 away (200 nats behind). The
# per-draw gap to a wrong class is heavy-tailed (it is large only at high log-SNR, which a
# few draws can miss), so even 200 nats are not always separated at the first look: on 64
# images a far class was dropped at 8 draws on 55-75% of them and by 16 draws on 98-99%
# (iid and paired). Both designs of the draws are run, whatever the library's default is.

SAMPLER_OF_SCHEME = {"iid": TruncatedLogistic(), "paired": TruncatedLogistic(stratified=True)}
FAR = 20.0


def known_answer(n_images: int = 4):
    means = torch.tensor([[0.0, 0.0], [0.05, 0.0], [FAR, 0.0], [0.0, FAR]], dtype=torch.float64)
    system = DiscreteMixture(torch.arange(4), torch.full((4,), 0.25, dtype=torch.float64), means)
    x = torch.zeros(n_images, 2, dtype=torch.float64)
    return NamedClasses(system), x, [[f"class {w}" for w in NAMES]] * n_images


def test_the_elimination_rule_drops_a_candidate_only_beyond_z_standard_errors_of_its_gap():
    # One image, 8 iid draws shared by 4 candidates: the leader; one 10 behind with a spread
    # of 1 per draw (gap / stderr about 25); one 0.1 behind with the same spread (about 0.3);
    # one 10 behind but inactive (already out: its scores are not read, here NaN).
    noise = torch.tensor([0.5, -0.5, 1.0, -1.0, 0.3, -0.3, 0.8, -0.8], dtype=torch.float64)
    lead = torch.full((8,), 5.0, dtype=torch.float64)
    scores = torch.stack([lead, lead - 10 + noise, lead - 0.1 + noise, torch.full((8,), float("nan"))])[None]
    active = torch.tensor([[True, True, True, False]])
    out = separated_from_leader(scores, active, "iid", z=3.0)
    assert out.tolist() == [[False, True, False, False]]
    # the same gaps from 2 draws have no finite calibrated error (nu = 1): nothing is dropped
    assert not separated_from_leader(scores[..., :2], active, "iid", z=3.0).any()
    # the threshold is z: the close candidate's gap is 0.1 / (stderr ~ 0.33), so z = 0.1 drops it too
    assert separated_from_leader(scores, active, "iid", z=0.1).tolist() == [[False, True, True, False]]


@pytest.mark.parametrize("design", SAMPLER_OF_SCHEME)
def test_a_far_candidate_is_dropped_early_and_a_close_one_kept_to_the_maximum(design):
    denoiser, x, candidates = known_answer()
    r = rank_adaptively(denoiser, x, list(range(len(x))), candidates, round_draws=4, min_draws=8, max_draws=32,
                        sampler=SAMPLER_OF_SCHEME[design])
    # 200 nats behind: dropped at one of the first looks (8, 12 or 16 draws), never before 8
    assert ((r.draws[:, 2:] >= 8) & (r.draws[:, 2:] <= 16)).all()
    # 0.00125 nats apart: never separated, both measured on every draw up to the maximum
    assert (r.draws[:, :2] == 32).all() and r.survivors[:, :2].all() and not r.survivors[:, 2:].any()
    assert set(r.prediction.tolist()) <= {0, 1} and (r.image_draws == 32).all()
    # every candidate-draw is one denoiser input
    assert torch.equal(r.n_evals, r.draws.sum(1)) and r.total_evals == int(r.n_evals.sum())


@pytest.mark.parametrize("design", SAMPLER_OF_SCHEME)
def test_an_image_with_one_clear_winner_stops_long_before_the_maximum(design):
    denoiser, x, candidates = known_answer()
    clear = [[c[0], c[2], c[3]] for c in candidates]  # "zero" against the two far classes only
    r = rank_adaptively(denoiser, x, list(range(len(x))), clear, round_draws=4, min_draws=8, max_draws=64,
                        sampler=SAMPLER_OF_SCHEME[design])
    assert (r.image_draws <= 16).all() and (r.prediction == 0).all()
    assert correct(r.decision_scores(), [0] * len(x)).all()
    # the scores are relative to the choice: 0 for it, far below for the far classes
    assert (r.value[:, 0] == 0).all() and (r.value[:, 1:] < -50).all()


def test_max_draws_is_respected_and_a_tie_at_the_maximum_is_a_miss():
    denoiser, x, candidates = known_answer(2)
    same = [[c[0], c[0]] for c in candidates]  # the same caption twice: never separated
    r = rank_adaptively(denoiser, x, [0, 1], same, round_draws=2, min_draws=4, max_draws=6)
    assert (r.draws == 6).all() and r.survivors.all()
    # equal captions have equal errors on every draw: a tie, which counts as a miss
    assert not correct(r.decision_scores(), [0, 0]).any()


def test_the_adaptive_choice_is_the_fixed_draw_choice_where_the_answer_is_clear():
    # Well separated classes (as in the orthogonal test above): the fixed 32-draw ranking is
    # right on nearly every image, and where its winning gap exceeds 3 standard errors the
    # adaptive choice must agree with it (both follow the same Bayes classifier).
    system = GaussianMixture(n_classes=4, dim=4, separation=6.0)
    x, y = system.sample(40, torch.Generator().manual_seed(1))
    candidates = [[f"class {w}" for w in NAMES]] * len(x)
    ids = list(range(len(x)))
    fixed = score_candidates(NamedClasses(system), x, ids, candidates, n_draws=32, seed=5)
    adaptive = rank_adaptively(NamedClasses(system), x, ids, candidates, max_draws=32)
    value = fixed.value[PREDICTION_ESTIMATOR]
    top2 = value.topk(2, 1)
    clear = (top2.values[:, 0] - top2.values[:, 1]) > 3 * fixed.stderr[PREDICTION_ESTIMATOR].max(1).values
    assert clear.sum() >= 10  # the comparison is not empty (11 of 40 images with the default draws)
    assert torch.equal(adaptive.prediction[clear], top2.indices[clear, 0])
    # and the adaptive ranking spends fewer than half the evaluations of 32 draws x 5 columns
    assert adaptive.total_evals < 0.5 * fixed.n_evals


class OneRowAtATime(NamedClasses):
    """NamedClasses evaluated one input at a time, so that each output depends on its own
    input only: the mixture's batched matmul can round a row's last bit differently at
    another position in the call, which would blur what the test below is about."""

    default_microbatch = 64

    def eps_hat(self, x_alpha, alpha, conditions):
        return torch.cat([super(OneRowAtATime, self).eps_hat(x_alpha[i:i + 1], alpha[i:i + 1], conditions[i:i + 1])
                          for i in range(len(conditions))])


def test_an_images_adaptive_ranking_does_not_depend_on_the_images_beside_it():
    # Images that stop at different rounds share passes while they run, in groups that
    # change from round to round; each image's numbers must be those it gets alone, bit for
    # bit, as resume and N processes need. (The job-level check on a UNet, batch size 16
    # against 5, is in test_caption_ranking_job.py.)
    system = GaussianMixture(n_classes=4, dim=4, separation=2.0)
    x, _ = system.sample(6, torch.Generator().manual_seed(3))
    candidates = [[f"class {w}" for w in NAMES]] * len(x)
    ids = [11, 12, 13, 14, 15, 16]
    denoiser = OneRowAtATime(system)
    together = rank_adaptively(denoiser, x, ids, candidates, max_draws=24, seed=2)
    assert len(set(together.draws.flatten().tolist())) > 2  # candidates did stop at different rounds
    for i in range(len(x)):
        alone = rank_adaptively(denoiser, x[i:i + 1], ids[i:i + 1], candidates[i:i + 1], max_draws=24, seed=2)
        for field in ("value", "stderr", "draws", "prediction", "n_evals"):
            assert torch.equal(getattr(alone, field)[0], getattr(together, field)[i]), (i, field)
