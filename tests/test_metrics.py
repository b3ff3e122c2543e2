"""torchmetrics shells: per-sample states reduced in id order, so batching, update order and
the number of processes cannot change a single bit."""

import pytest
import torch

from infodiff_lightning.estimators import Estimate
from infodiff_lightning.metrics import InformationMap, PartialInformation, PointwiseInformation


def test_mean_and_stderr_are_those_of_the_values():
    values = torch.tensor([1.0, 2.0, 4.0, 9.0])
    m = PointwiseInformation()
    m.update(values)
    r = m.compute()
    assert float(r["mean"]) == pytest.approx(4.0)
    assert float(r["stderr"]) == pytest.approx(float(values.std()) / 2)  # std / sqrt(4)
    assert int(r["count"]) == 4


def test_updates_in_two_halves_equal_one_update():
    values = torch.randn(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole, halves = PointwiseInformation(), PointwiseInformation()
    whole.update(values)
    halves.update(values[:50])
    halves.update(values[50:])
    a, b = whole.compute(), halves.compute()
    assert float(a["mean"]) == pytest.approx(float(b["mean"]), rel=1e-12)
    assert float(a["stderr"]) == pytest.approx(float(b["stderr"]), rel=1e-9)


def test_batching_and_update_order_do_not_change_a_bit_when_ids_are_given():
    # float64 sums depend on the order of their terms; values are reduced in id order, so
    # 101 values in one update, in 7 shuffled pieces, or split over two merged "ranks"
    # give the same bits (values spread over 1e-3..1e3, where a reordering shows).
    g = torch.Generator().manual_seed(0)
    values = torch.exp(torch.randn(101, generator=g, dtype=torch.float64) * 3)
    ids = torch.arange(101)
    whole = PointwiseInformation()
    whole.update(values, ids=ids)
    pieces = PointwiseInformation()
    perm = torch.randperm(101, generator=g)
    for chunk in perm.chunk(7):
        pieces.update(values[chunk], ids=ids[chunk])
    rank0, rank1 = PointwiseInformation(), PointwiseInformation()
    rank0.update(values[1::2], ids=ids[1::2])
    rank1.update(values[::2], ids=ids[::2])
    rank0.merge_state(rank1)
    a, b, c = whole.compute(), pieces.compute(), rank0.compute()
    for key in ("mean", "stderr", "count"):
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key


def test_pid_metric_reduces_in_id_order_too():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(30, 4, generator=g, dtype=torch.float64)
    ids = torch.arange(100, 130)
    whole, shuffled = PartialInformation(), PartialInformation()
    whole.update(values, ids=ids)
    perm = torch.randperm(30, generator=g)
    for chunk in perm.chunk(4):
        shuffled.update(values[chunk], ids=ids[chunk])
    a, b = whole.compute(), shuffled.compute()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_estimate_updates_count_denoiser_evaluations():
    m = PointwiseInformation()
    m.update(Estimate(torch.ones(3), torch.zeros(3), n_evals=48))
    assert int(m.compute()["n_evals"]) == 48


def test_compute_without_samples_is_an_error():
    with pytest.raises(ValueError, match="zero samples"):
        PointwiseInformation().compute()


def test_map_metric_averages_maps():
    m = InformationMap((2, 3))
    m.update(torch.ones(4, 2, 3))
    m.update(torch.zeros(4, 2, 3))
    assert torch.allclose(m.compute(), torch.full((2, 3), 0.5, dtype=torch.float64))


def test_map_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        InformationMap((2, 3)).update(torch.ones(1, 3, 2))


# ---- one image: its own Monte-Carlo error, never 0 --------------------------------

def test_one_image_estimate_reports_its_own_monte_carlo_stderr():
    # With one image there is no spread over images; the error of the mean is then the
    # error of that image's integral over its draws, which the Estimate carries (0.3).
    m = PointwiseInformation()
    m.update(Estimate(torch.tensor([2.0]), torch.tensor([0.3]), n_evals=16))
    r = m.compute()
    assert float(r["mean"]) == pytest.approx(2.0)
    assert float(r["stderr"]) == pytest.approx(0.3)


def test_one_image_given_as_a_tensor_has_an_unknown_stderr():
    # A plain tensor carries no per-image error: NaN (unknown), not 0.
    m = PointwiseInformation()
    m.update(torch.tensor([2.0]))
    assert torch.isnan(m.compute()["stderr"])


def test_several_images_use_the_spread_over_images_not_their_own_errors():
    # Values 1 and 3: std over images sqrt(2), stderr sqrt(2)/sqrt(2) = 1, whatever the
    # (tiny) per-image errors; the spread already contains the draw noise.
    m = PointwiseInformation()
    m.update(Estimate(torch.tensor([1.0, 3.0]), torch.tensor([0.01, 0.01]), n_evals=32))
    assert float(m.compute()["stderr"]) == pytest.approx(1.0)


def test_one_image_merged_with_an_empty_rank_keeps_its_own_stderr():
    # Merging a rank that saw the image with one that saw none gives the one-image states
    # back, and the reduced stderr is still the image's own (0.5).
    with_image, without = PointwiseInformation(), PointwiseInformation()
    with_image.update(Estimate(torch.tensor([4.0]), torch.tensor([0.5]), n_evals=8))
    with_image.merge_state(without)
    assert float(with_image.compute()["stderr"]) == pytest.approx(0.5)


def test_sample_rows_keep_their_shape_when_a_single_value_was_added():
    # torchmetrics squeezes a one-element result to a 0-d tensor; rows() gives (n, width)
    # whatever n, so statistics over rows never meet a scalar (one image with one pixel r).
    from infodiff_lightning.metrics.samples import SampleRows

    m = SampleRows(1)
    m.update(torch.tensor([[0.25]]), [7])
    assert m.rows().shape == (1, 1) and float(m.rows()[0, 0]) == 0.25
    assert SampleRows(2).rows().shape == (0, 2)
