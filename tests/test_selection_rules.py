"""Selection rules (analyses/selection.py) on planted scores, and on a Gaussian toy whose
pointwise MI is ordered by construction and measured by the project's estimator."""
import pytest
import torch

from infodiff_lightning.analyses.selection import candidate_mi, select, separated_top_k
from infodiff_lightning.denoisers.gaussian import JointGaussian


def rows(table):
    """(prompt, candidate, MI, stderr, trajectory) rows."""
    return torch.tensor(table, dtype=torch.float64)


#: prompt 0: candidate 1 is clearly best (3.0 +- 0.1 against 2.0); prompt 1: candidates 0
#: and 1 are within candidate 1's standard error (2.05 - 2.0 <= 0.1); the trajectory score
#: prefers candidate 2 of both prompts.
PLANTED = rows([[0, 0, 1.0, 0.1, 5.0], [0, 1, 3.0, 0.1, 6.0], [0, 2, 2.0, 0.1, 9.0],
                [1, 0, 2.0, 0.1, 5.0], [1, 1, 2.05, 0.1, 6.0], [1, 2, 0.0, 0.1, 9.0]])


def chosen(rule, k=1, on_tie="random", table=PLANTED):
    kept, ties = select(table, rule, k, seed=0, on_tie=on_tie)
    return [(int(table[i, 0]), int(table[i, 1])) for i in kept], ties


def test_argmax_keeps_the_largest_mi_of_each_prompt():
    assert chosen("mi")[0] == [(0, 1), (1, 1)]


def test_top_k_keeps_the_k_largest():
    assert chosen("mi", k=2)[0] == [(0, 1), (0, 2), (1, 0), (1, 1)]


def test_separated_keeps_a_clear_best_and_reports_a_tie_within_its_standard_error():
    kept, ties = chosen("mi_separated")
    assert kept[0] == (0, 1)  # 3.0 is 1.0 above the next, far beyond its 0.1
    assert ties == [{"prompt": 1, "tied": [0, 1], "chosen": [kept[1][1]]}] and kept[1] in [(1, 0), (1, 1)]


@pytest.mark.parametrize("on_tie, expected", [("best", [(0, 1), (1, 1)]), ("drop", [(0, 1)])])
def test_a_tie_is_kept_at_the_argmax_or_dropped_as_asked(on_tie, expected):
    kept, ties = chosen("mi_separated", on_tie=on_tie)
    assert kept == expected and [t["prompt"] for t in ties] == [1]


def test_a_tie_broken_at_random_repeats_with_the_seed_and_picks_both_over_seeds():
    picks = {tuple(separated_top_k(torch.tensor([2.0, 2.05, 0.0]), torch.full((3,), 0.1), 1,
                                   torch.Generator().manual_seed(s)).chosen) for s in range(20)}
    assert picks == {(0,), (1,)}  # no preference between what the measurement cannot separate
    again = [separated_top_k(torch.tensor([2.0, 2.05, 0.0]), torch.full((3,), 0.1), 1,
                             torch.Generator().manual_seed(3)).chosen for _ in range(2)]
    assert again[0] == again[1]


def test_separated_top_k_ties_at_the_k_th_place_only():
    # k = 2: 5.0 is safely in; the 2nd place (3.0 +- 0.5) is within reach of 2.8: a tie of {1, 2}
    sel = separated_top_k(torch.tensor([5.0, 3.0, 2.8, 0.0]), torch.full((4,), 0.5), 2, torch.Generator())
    assert sel.tied == [1, 2] and sel.chosen[0] == 0 and sel.chosen[1] in (1, 2)


def test_trajectory_rule_follows_the_trajectory_score_not_the_mi():
    assert chosen("trajectory")[0] == [(0, 2), (1, 2)]


def test_every_rule_keeps_k_per_prompt_random_included():
    for rule in ("mi", "mi_separated", "trajectory", "random"):
        assert len(chosen(rule, k=2)[0]) == 4, rule
    assert chosen("random")[0] == chosen("random")[0]  # seeded by (seed, prompt)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        select(PLANTED, "best", 1)


# ---- the project's pointwise MI on a toy whose best candidate is known ----------------------

def test_rules_on_measured_mi_pick_the_candidate_whose_mi_is_largest_by_construction(one_thread):
    # (x, y) jointly Gaussian, unit variances, correlation 0.9, prompt y = 0. With mu = 0
    # and y = 0 the two predictions differ by b k(alpha) x_alpha, so the orthogonal
    # integrand at every log-SNR is b^2 k^2 (a^2 x^2 + b^2): io(x; y=0) grows with x^2.
    # Prompt 0: x = 1, 3, 0: candidate 1 (x = 3) is the best. Prompt 1: the same image
    # twice, measured on the same draws (same id): equal MI, a tie by construction.
    g = JointGaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]), 1)
    x = torch.tensor([[1.0], [3.0], [0.0], [2.0], [2.0], [0.0]], dtype=torch.float64)
    value, stderr, _ = candidate_mi(g, x, torch.zeros(6, 1, dtype=torch.float64), [0, 1, 2, 3, 3, 5], n_draws=64)
    assert value[1] - value[0] > 4 * stderr[1]  # io(3) - io(1) = 8 C, C ~ 1 nat: well separated at 64 draws
    table = torch.stack([torch.tensor([0, 0, 0, 1, 1, 1.0]), torch.tensor([0, 1, 2, 0, 1, 2.0]), value, stderr,
                         torch.zeros(6, dtype=torch.float64)], 1)
    assert chosen("mi", table=table)[0] == [(0, 1), (1, 0)]  # an exact tie goes to the lower index
    kept, ties = chosen("mi_separated", table=table)
    assert kept[0] == (0, 1) and ties == [{"prompt": 1, "tied": [0, 1], "chosen": [kept[1][1]]}]


def test_adaptive_precision_draws_until_each_candidate_s_stderr_meets_the_target(one_thread):
    from infodiff_lightning.adaptive import Precision

    g = JointGaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]), 1)
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    precision = Precision(target=0.1, min_draws=16, round_draws=16, max_draws=1024)
    value, stderr, draws = candidate_mi(g, x, torch.zeros(2, 1, dtype=torch.float64), [0, 1], precision=precision)
    assert bool((stderr <= 0.1).all()) and bool((draws < 1024).all())
    assert draws[1] > draws[0]  # io(1) is the larger and the noisier: it needs more rounds
