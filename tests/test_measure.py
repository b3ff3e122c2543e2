"""The one measurement primitive: named columns and contrasts -> per-image estimates.

Every job and public estimator builds its columns and contrasts and calls `measure`;
these tests pin what that one place promises: duplicate columns cost nothing and change
no bit, draws follow the sample ids, and bad input is refused before any denoiser call.
"""
import pytest
import torch

from infodiff_lightning import DrawSpec, Draws, measure, pointwise_mi
from infodiff_lightning.denoisers import CorrelatedGaussian


class Counting:
    """An analytic denoiser that counts the inputs it is asked to denoise."""

    def __init__(self, system, alpha_range=None):
        self.system, self.alpha_range, self.inputs = system, alpha_range, 0
        self.default_microbatch, self.alpha_proposal = 4096, None

    def eps_hat(self, x_alpha, alpha, conditions):
        self.inputs += int(x_alpha.shape[0])
        return self.system.eps_hat(x_alpha, alpha, conditions)

    def null_conditions(self, n):
        return self.system.null_conditions(n)

    def encode(self, images, ids=None):
        return images


@pytest.fixture
def system():
    return CorrelatedGaussian(dim=4, correlation=0.8)


def test_a_duplicated_column_is_evaluated_once_and_changes_no_bit(system):
    x, y = system.sample(6, torch.Generator().manual_seed(0))
    den = Counting(system)
    columns = {"null": system.null_conditions(6), "y": y}
    # micro-batches of 16 inputs: 8 (image, draw) units x 2 columns per call, 6 calls for the
    # 48 units; a third, duplicated column would take 5 units x 3 per call (padded to 16), 10 calls
    plain = measure(den, columns, {"mi": ("null", "y")}, x=x, draws=DrawSpec(8, seed=1), microbatch=16)
    calls_plain = den.inputs
    den.inputs = 0
    dup = measure(den, {**columns, "y again": y.clone()}, {"mi": ("null", "y"), "mi again": ("null", "y again")},
                  x=x, draws=DrawSpec(8, seed=1), microbatch=16)
    # 6 images x 8 draws x 2 distinct columns, whether or not a copy of y is named too
    assert calls_plain == den.inputs == 6 * 8 * 2
    assert dup.n_evals == plain.n_evals == 6 * 8 * 2
    assert torch.equal(dup.estimate("mi again").value, plain.estimate("mi").value)
    assert torch.equal(dup.terms("mi", "standard"), plain.terms("mi", "standard"))


def test_an_entry_two_columns_share_is_evaluated_once_per_draw(system):
    # "partly" is y on images 0-2 and another condition on images 3-5 (a word removed
    # from some captions only): the three shared entries are evaluated once per draw, so
    # 6 images x 8 draws x 3 columns less 3 x 8 = 120 inputs, not 144; the columns are not
    # identical as a whole, so column deduplication alone would not see it.
    x, y = system.sample(6, torch.Generator().manual_seed(0))
    partly = y.clone()
    partly[3:] = 0.0
    den = Counting(system)
    columns = {"null": system.null_conditions(6), "y": y, "partly": partly}
    contrasts = {"mi": ("null", "y"), "part": ("partly", "y")}
    m = measure(den, columns, contrasts, x=x, draws=DrawSpec(8, seed=1), microbatch=16)
    assert m.n_evals == 120
    assert float(m.estimate("part").value[:3].abs().max()) == 0.0  # shared: exactly no information
    alone = measure(system, {"null": columns["null"][3:], "y": y[3:], "partly": partly[3:]}, contrasts, x=x[3:],
                    draws=DrawSpec(8, seed=1).make(den, x, None).select(torch.arange(3, 6)), microbatch=16)
    # the entries that differ get the same numbers as in a pass where nothing is shared
    assert torch.allclose(m.estimate("part").value[3:], alone.estimate("part").value, rtol=1e-12, atol=0)


def test_draws_follow_the_sample_id_not_the_batch(system):
    x, y = system.sample(3, torch.Generator().manual_seed(0))
    cols = {"null": system.null_conditions(3), "y": y}
    whole = measure(system, cols, {"mi": ("null", "y")}, x=x, ids=[7, 3, 5], draws=DrawSpec(8, seed=2))
    alone = measure(system, {"null": system.null_conditions(1), "y": y[1:2]}, {"mi": ("null", "y")}, x=x[1:2],
                    ids=[3], draws=DrawSpec(8, seed=2))
    # image id 3 sees the same (alpha, eps) in a batch of three as alone ...
    assert torch.equal(whole.errors.alpha[1:2], alone.errors.alpha)
    assert torch.equal(whole.errors.weight[1:2], alone.errors.weight)
    # ... so its estimate agrees to float64 rounding (this analytic system solves each call
    # in groups of rows by condition, whose sizes follow the batch; the diffusers models'
    # same-bits promise is checked on 1 vs 2 processes in test_ddp_coverage.py)
    torch.testing.assert_close(whole.estimate("mi").value[1:2], alone.estimate("mi").value, rtol=1e-12, atol=0)


def test_draws_outside_the_trained_log_snr_range_are_refused_before_any_call(system):
    x, y = system.sample(2, torch.Generator().manual_seed(0))
    den = Counting(system, alpha_range=(-2.0, 2.0))
    alpha = torch.full((2, 4), 5.0)  # above the trained maximum 2
    draws = Draws(alpha, torch.ones_like(alpha), torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="outside the model's trained range"):
        measure(den, {"null": system.null_conditions(2), "y": y}, {"mi": ("null", "y")}, x=x, draws=draws)
    assert den.inputs == 0


def test_a_contrast_naming_an_unknown_column_is_refused(system):
    x, y = system.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="contrast 'mi' must name two of the columns"):
        measure(system, {"null": system.null_conditions(2), "y": y}, {"mi": ("null", "caption")}, x=x,
                draws=DrawSpec(4))


def test_x_and_images_are_exclusive(system):
    x, y = system.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="give either x"):
        measure(system, {"y": y}, x=x, images=x, draws=DrawSpec(4))


def test_pointwise_mi_is_the_null_to_condition_contrast(system):
    # the public function is a builder on the primitive: same draws, same bits
    x, y = system.sample(5, torch.Generator().manual_seed(0))
    draws = DrawSpec(16, seed=4).make(system, x)
    public = pointwise_mi(system, x, y, draws=draws)
    direct = measure(system, {"null": system.null_conditions(5), "y": y}, {"mi": ("null", "y")}, x=x, draws=draws)
    assert torch.equal(public.value, direct.estimate("mi").value)
    assert torch.equal(public.stderr, direct.estimate("mi").stderr)


def test_draw_round_zero_is_the_fixed_count_draws_and_later_rounds_are_new_draws_keyed_by_id(system):
    # Adaptive precision adds draws in rounds; round 0 must be exactly the draws every
    # fixed-count measurement uses (so an adaptive run's first round reproduces it), and
    # round r of an image must not depend on which images share its batch.
    den = Counting(system)
    x, _ = system.sample(3, torch.Generator().manual_seed(0))
    fixed = DrawSpec(4, seed=7).make(den, x, ids=[5, 6, 7])
    zero = DrawSpec(4, seed=7, round=0).make(den, x, ids=[5, 6, 7])
    one = DrawSpec(4, seed=7).next_round().make(den, x, ids=[5, 6, 7])
    alone = DrawSpec(4, seed=7, round=1).make(den, x[1:2], ids=[6])
    assert torch.equal(fixed.alpha, zero.alpha) and torch.equal(fixed.eps, zero.eps)
    assert not torch.equal(fixed.alpha, one.alpha)
    assert torch.equal(one.alpha[1:2], alone.alpha) and torch.equal(one.eps[1:2], alone.eps)


def test_draw_rounds_need_sample_ids(system):
    x, _ = system.sample(1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="keyed by sample id"):
        DrawSpec(4, round=1).make(Counting(system), x)
