"""The statistics of the analyses, as plain functions, against answers computed by hand;
the declared records of a job; the shared text-to-image job base (validation, figures)."""
import math

import pytest
import torch

from infodiff_lightning.analyses.intervention import change_correlations
from infodiff_lightning.analyses.localization import THRESHOLDS, best_threshold, choose_threshold, miou_at, select_threshold
from infodiff_lightning.metrics import PartialInformation
from infodiff_lightning.modules import CaptionRanking, PIDStudy
from infodiff_lightning.modules.records import Field, Group, Schema
from infodiff_lightning.analyses.pid_study import pid_summary
from infodiff_lightning.analyses.statistics import accuracy_interval, accuracy_summary, correct, macro_accuracy
from tiny_models import save_pixel_text


# ---- ranking -------------------------------------------------------------------------
def test_wilson_interval_of_8_of_10():
    # p = 0.8, z^2 = 3.8415: centre = (0.8 + 0.19207) / 1.38415 = 0.71674,
    # half = 1.96 sqrt(0.016 + 0.0096036) / 1.38415 = 0.22658: the textbook [0.490, 0.943]
    p, low, high = accuracy_interval(8, 10)
    assert p == 0.8
    assert low == pytest.approx(0.71674 - 0.22658, abs=1e-4) and high == pytest.approx(0.71674 + 0.22658, abs=1e-4)


def test_macro_accuracy_of_two_subgroups():
    # (9/10 + 1/2) / 2 = 0.7; variance (0.86364 * 0.13636 / 10 + 0.5 * 0.5 / 2) / 4 = 0.034194,
    # half width 1.96 * 0.18492 = 0.36243; the upper end is capped at 1
    acc, low, high = macro_accuracy([(9, 10), (1, 2), (0, 0)])  # a subgroup without items is left out
    assert acc == pytest.approx(0.7)
    assert low == pytest.approx(0.7 - 0.36243, abs=1e-4) and high == 1.0


def test_a_tie_is_a_miss():
    scores = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert correct(scores, [0, 0, 0]).tolist() == [True, False, False]
    assert correct(scores, [0, 0, 1]).tolist() == [True, False, True]


def test_accuracy_summary_per_group_and_macro_over_subgroups():
    counts = {"a/standard": {"hits": 1, "n": 2}, "a/x/standard": {"hits": 1, "n": 1},
              "a/y/standard": {"hits": 0, "n": 1}, "b/standard": {"hits": 0, "n": 0}}
    out = accuracy_summary(counts, ["a", "b", "a/x", "a/y"], ["standard"])
    assert list(out) == ["ranking/a/standard", "ranking/a/x/standard", "ranking/a/y/standard",
                         "ranking/a/macro/standard"]  # b had no item
    assert out["ranking/a/standard"]["accuracy"] == 0.5 and out["ranking/a/standard"]["hits"] == 1
    macro = out["ranking/a/macro/standard"]
    assert macro["accuracy"] == 0.5 and macro["subgroups"] == 2 and macro["n"] == 2


# ---- localization -------------------------------------------------------------------------
def test_the_best_threshold_is_the_first_of_the_highest_mean_iou():
    assert best_threshold([0.1, 0.3, 0.3, 0.2]) == 1
    assert select_threshold([0.1, 0.3, 0.3, 0.2], 4) == (1, "4 selection rows")
    assert select_threshold([0.1, 0.3], 4, given=0.5) == (THRESHOLDS.index(0.5), "given")
    with pytest.raises(ValueError, match="no selection row"):
        select_threshold([0.0] * len(THRESHOLDS), 0)


def test_choose_threshold_on_a_hand_made_map():
    # map 1.0, 0.6, 0.2, 0.0 over four pixels, the word on the first two: a threshold in
    # (0.2, 0.6] keeps exactly those (IoU 1), one up to 0.2 adds the third (2/3), one
    # above 0.6 keeps only the first (1/2). The first best of 0.05, 0.10, ... is 0.25.
    maps = torch.tensor([[[1.0, 0.6, 0.2, 0.0]]])
    masks = torch.tensor([[[True, True, False, False]]])
    assert choose_threshold(maps, masks) == 0.25


def test_miou_at_the_chosen_threshold_and_swept():
    entry = miou_at(torch.tensor([0.2, 0.5, 0.4], dtype=torch.float64), torch.tensor([0.01, 0.02, 0.03]), 2)
    assert entry["miou"] == pytest.approx(0.4) and entry["stderr"] == pytest.approx(0.03)
    assert entry["miou_swept_on_eval"] == pytest.approx(0.5)


# ---- intervention --------------------------------------------------------------------------
def test_change_correlations_of_an_exact_line():
    # change = 2 cmi + 1: r = 1 and every resample (with two distinct values) gives 1
    cmi = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    image = torch.stack([cmi, 2 * cmi + 1], 1)
    pixel = torch.tensor([[0.2], [0.4]], dtype=torch.float64)
    out = change_correlations(image, pixel, n_boot=200, level=0.9, seed=0)
    assert out["images"] == 4 and out["mean_cmi"] == 2.5 and out["mean_change"] == 6.0
    assert out["image_level"]["r"] == pytest.approx(1.0)
    assert out["image_level"]["low"] == pytest.approx(1.0) and out["image_level"]["high"] == pytest.approx(1.0)
    assert out["pixel_level"]["r"] == pytest.approx(0.3) and out["pixel_level"]["n"] == 2
    few = change_correlations(image[:2], pixel[:1])
    assert few["image_level"] is None and few["pixel_level"] is None


# ---- PID -------------------------------------------------------------------------------------
def test_pid_summary_is_the_mean_over_images_with_its_standard_error():
    metric = PartialInformation()
    values = torch.tensor([[1.0, 0.0, 0.5, 2.0], [3.0, 0.0, 0.5, 4.0]], dtype=torch.float64)
    metric.update(values, torch.full_like(values, 0.1), ids=[0, 1])
    summary = pid_summary({("a", "b"): metric, ("c", "d"): PartialInformation()})  # c+d: no image, left out
    # redundancy: mean 2, std sqrt(2), stderr sqrt(2) / sqrt(2) = 1
    assert summary["pid/a+b/redundancy"] == {"mean": 2.0, "stderr": pytest.approx(1.0), "images": 2}
    assert summary["pid/a+b/unique1"]["stderr"] == 0.0 and summary["pid/a+b/synergy"]["mean"] == 3.0
    assert not any(k.startswith("pid/c+d") for k in summary)


# ---- declared records ----------------------------------------------------------------------
def test_a_schema_writes_each_field_once_in_order_and_reads_a_null_stderr_back_as_nan():
    schema = Schema([Field("caption", "text"), Field("cmi", stderr=True), Field("iou", "values"),
                     Field("hit", "flag"), Group("pairs", (Field("r", stderr=True), Field("s", stderr=True)),
                                                 stderrs_last=True)])
    record = schema.write({"id": 3, "caption": "a", "cmi": (torch.tensor(0.5), math.nan), "iou": torch.tensor([1.0]),
                           "hit": torch.tensor(True), "pairs": {"x+y": {"r": (1.0, 0.1), "s": (2.0, 0.2)}}})
    assert list(record) == ["id", "caption", "cmi", "cmi_stderr", "iou", "hit", "pairs"]
    assert list(record["pairs"]["x+y"]) == ["r", "s", "r_stderr", "s_stderr"]
    assert record["iou"] == [1.0] and record["hit"] is True
    saved = {**record, "cmi_stderr": None}  # how strict JSON keeps an undefined standard error
    read = schema.read(saved)
    assert math.isnan(read["cmi_stderr"]) and read["pairs"]["x+y"]["s_stderr"] == 0.2
    assert "caption" not in schema.write({"id": 1})  # a field a sample lacks is left out
    with pytest.raises(ValueError, match="not optional"):
        schema.write({"id": 1, "cmi": (None, 0.1)})


# ---- the text-to-image job base ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_pixel_text(tmp_path_factory.mktemp("tiny") / "model")


class NoCaptions:
    def describe_test_split(self) -> str:
        return "nothing"


@pytest.mark.parametrize("job, protocol, lacks", [
    (lambda m: CaptionRanking(str(m)), "GroupedEvaluationData", "groups"),
    (lambda m: PIDStudy(str(m), pairs=[["red", "square"]]), "CaptionedEvaluationData", "test_captions"),
])
def test_a_datamodule_without_what_the_job_needs_is_named(tiny, job, protocol, lacks):
    module = job(tiny)
    with pytest.raises(ValueError) as e:
        module.validate(NoCaptions())
    message = str(e.value)
    assert type(module).__name__ in message and "NoCaptions" in message and protocol in message
    assert f"lacks {lacks}" in message
    assert module.denoiser is module._denoiser  # the one accessor, a property


def test_log_images_must_not_be_negative(tiny):
    with pytest.raises(ValueError, match="log_images must be >= 0"):
        CaptionRanking(str(tiny), log_images=-1)
