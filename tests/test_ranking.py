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
from infodiff_lightning.denoisers.mixture import GaussianMixture
from infodiff_lightning.analyses.ranking import PREDICTION_ESTIMATOR, score_candidates
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
