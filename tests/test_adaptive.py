"""Adaptive precision: each image draws in rounds until its standard error meets the target."""
import math

import pytest
import torch

from infodiff_lightning import measure
from infodiff_lightning.adaptive import Precision, measure_adaptively, scatter_results
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.measure import DrawSpec, reference_range

from test_proposal import gaussian_integral


@pytest.fixture(scope="module")
def batch():
    system = CorrelatedGaussian(dim=4, correlation=0.9, spread=10.0)
    x, y = system.sample(40, torch.Generator().manual_seed(0))
    columns = {"null": system.null_conditions(40), "y": y}
    # "none" contrasts a column with itself: zero information, zero error from any draw
    return system, x, columns, {"mi": ("null", "y"), "none": ("y", "y")}


def test_every_image_meets_the_target_or_takes_the_maximum(batch):
    system, x, cols, contrasts = batch
    p = Precision(target=0.15, min_draws=8, round_draws=8, max_draws=64)
    am = measure_adaptively(system, cols, contrasts, precision=p, ids=range(40), x=x)
    est = am.estimate("mi")
    assert bool(((est.stderr <= 0.15) | (am.draws == 64)).all())
    # some images meet it early and some need more: the draw counts differ
    assert int(am.draws.min()) < int(am.draws.max())
    assert am.n_evals == int(am.draws.sum()) * 2  # two columns per draw ("none" reuses "y")


def test_a_contrast_without_information_stops_at_the_first_round(batch):
    system, x, cols, contrasts = batch
    p = Precision(target=1e-6, min_draws=8, round_draws=8, max_draws=64)
    am = measure_adaptively(system, cols, contrasts, precision=p, ids=range(40), x=x, watch=["none"])
    assert am.draws.tolist() == [8] * 40  # its error is exactly 0 from the start


def test_an_image_takes_the_same_draws_and_numbers_alone_or_in_a_batch(batch):
    # round r of an image is keyed by (seed, id, r): its stopping and its numbers cannot
    # depend on which images share its batch (resume, N processes)
    system, x, cols, contrasts = batch
    p = Precision(target=0.15, min_draws=8, round_draws=8, max_draws=64)
    whole = measure_adaptively(system, cols, contrasts, precision=p, ids=range(40), x=x)
    for i in (0, 17, 39):
        alone = measure_adaptively(system, {k: v[i:i + 1] for k, v in cols.items()}, contrasts, precision=p, ids=[i],
                                   x=x[i:i + 1])
        assert int(alone.draws[0]) == int(whole.draws[i])
        assert float(alone.estimate("mi").value[0]) == float(whole.estimate("mi").value[i])


def test_with_one_round_it_is_the_fixed_count_measurement(batch):
    system, x, cols, contrasts = batch
    p = Precision(target=1e-9, min_draws=16, round_draws=16, max_draws=16)
    am = measure_adaptively(system, cols, contrasts, precision=p, ids=range(40), x=x)
    fixed = measure(system, cols, contrasts, x=x, ids=range(40), draws=DrawSpec(16))
    assert torch.equal(am.estimate("mi").value, fixed.estimate("mi").value)
    assert torch.equal(am.estimate("mi").stderr, fixed.estimate("mi").stderr)


def test_stopping_early_leaves_the_dataset_mean_on_the_exact_integral():
    # Optional stopping could bias images that stop on a lucky low draw set; over 300
    # images the mean must stay within 3 standard errors of the closed-form integral.
    system = CorrelatedGaussian(dim=4, correlation=0.9, spread=10.0)
    x, y = system.sample(300, torch.Generator().manual_seed(5))
    p = Precision(relative=0.1, min_draws=16, round_draws=16, max_draws=128)
    am = measure_adaptively(system, {"null": system.null_conditions(300), "y": y}, {"mi": ("null", "y")},
                            precision=p, ids=range(300), x=x, estimator="standard")
    est = am.estimate("mi", "standard")
    truth = gaussian_integral(system, *reference_range(system))
    mean, se = float(est.value.mean()), float(est.value.std() / math.sqrt(300))
    assert abs(mean - truth) < 3 * se


@pytest.mark.parametrize("kw,match", [({}, "target"), ({"target": -1.0}, "> 0"), ({"target": 1.0, "min_draws": 2}, "min_draws"),
                                      ({"target": 1.0, "min_draws": 32, "max_draws": 16}, "max_draws")])
def test_a_precision_that_cannot_work_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        Precision(**kw)


def test_group_results_go_back_in_batch_order():
    parts = [(torch.tensor([2, 0]), {"v": torch.tensor([20.0, 0.0]), "n": 4, "terms": torch.zeros(2, 8)}),
             (torch.tensor([1]), {"v": torch.tensor([10.0]), "n": 2, "terms": torch.zeros(1, 16)})]
    out = scatter_results(parts, 3)
    assert out["v"].tolist() == [0.0, 10.0, 20.0]
    assert out["n"] == 6  # evaluation counts add up
    assert out["terms"] is None  # per-draw terms of different draw counts cannot share one tensor


def test_columns_that_become_identical_as_images_stop_still_combine(batch):
    # measure evaluates identical columns once. "null2" is the null column except on image
    # 0, where it is "y" (so image 0 has no information to measure and stops after the
    # first round), and "partly" is "y" except on image 0: from round 1 on, the images
    # still drawing see null2 == null and partly == y, 2 distinct columns instead of 4.
    system, x, cols, _ = batch
    null2, partly = cols["null"].clone(), cols["y"].clone()
    null2[0], partly[0] = cols["y"][0], 0.0
    columns = {**cols, "null2": null2, "partly": partly}
    contrasts = {"mi2": ("null2", "y"), "p": ("partly", "y")}
    p = Precision(target=1e-3, min_draws=8, round_draws=8, max_draws=16)
    am = measure_adaptively(system, columns, contrasts, precision=p, ids=range(40), x=x, watch=["mi2"])
    assert int(am.draws[0]) == 8 and am.draws[1:].tolist() == [16] * 39
    alone = measure_adaptively(system, {k: v[1:2] for k, v in columns.items()}, contrasts, precision=p, ids=[1],
                               x=x[1:2], watch=["mi2"])
    assert float(am.estimate("p").value[1]) == 0.0  # identical columns: no information
    assert float(am.estimate("mi2").value[1]) == float(alone.estimate("mi2").value[0])
