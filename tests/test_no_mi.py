"""MeasurementSpec(mi=False): the caption MI is not measured (no null-prompt column), and
what is measured is the same as with it.

Why the word's CMI and its map are the same bits with or without the null column:

* the draws are made before the columns are looked at, keyed by (seed, image id, round)
  (DrawSpec.make / draws.draws_for_ids), so the same images get the same (alpha, eps);
* the noisy input of each (image, draw) is formed from x, alpha and eps alone
  (evaluate.denoiser_errors), and each column's prediction is evaluated on it separately;
  the CMI contrast ("c - w" -> c) reads only the gap between its own two columns;
* every denoiser call has the same number of inputs (padded, evaluate.py), so an input's
  prediction does not depend on how many inputs of other columns share its call; and text
  embeddings are cached per condition, each caption's computed once either way.

Dropping the null column therefore changes which inputs share a call, and nothing an input
is computed from. The tests check this on a real (tiny) UNet with its text encoder, at a
micro-batch that packs the calls differently with and without the column.
"""
import pytest
import torch

from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.measurement import CaptionMetrics, MeasurementSpec, measure_captions, per_image_rows
from infodiff_lightning.modules import WordLocalization
from tiny_models import save_pixel_text

CAPTIONS = ["a red square on the left", "a blue circle", "a red cross at the top", "green and red things"]
HAS_RED = torch.tensor([True, False, True, True])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_pixel_text(tmp_path_factory.mktemp("no_mi") / "model", max_tokens=77)


def measured(model, mi: bool, **spec):
    """The captions measured with a fresh denoiser (an empty text cache, so that each run
    encodes its own conditions)."""
    denoiser = load_text_to_image(str(model))
    images = torch.rand(len(CAPTIONS), 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    spec = MeasurementSpec(("red",), mi=mi, **spec)
    return spec, measure_captions(denoiser, images, list(range(len(CAPTIONS))), CAPTIONS, spec)


def test_without_the_mi_the_cmi_and_map_are_the_same_bits_for_n_x_draws_fewer_inputs(model, one_thread):
    # micro-batch 5: 3 inputs per (image, draw) with the null column, 2 without (1 where the
    # caption lacks the word), so every call holds other inputs in the two runs
    _, full = measured(model, True, n_draws=4, maps=True, microbatch=5)
    spec, lean = measured(model, False, n_draws=4, maps=True, microbatch=5)
    a, b = full.cmi["red"], lean.cmi["red"]
    assert torch.equal(a.value, b.value) and torch.equal(a.stderr, b.stderr) and torch.equal(a.map, b.map)
    assert torch.equal(full.present["red"], lean.present["red"]) and torch.equal(lean.present["red"], HAS_RED)
    assert full.n_evals - lean.n_evals == len(CAPTIONS) * 4  # the null column: every image, every draw
    assert lean.n_evals == (len(CAPTIONS) + int(HAS_RED.sum())) * 4  # caption, and caption - red where red is
    assert full.mi is not None and lean.mi is None


def test_without_the_mi_it_has_no_tag_metric_or_record_column(model, one_thread):
    spec, lean = measured(model, False, n_draws=2, maps=False)
    assert spec.tags == ["cmi/red"] and MeasurementSpec(("red",)).tags == ["mi", "cmi/red"]
    assert [m.tag for m in lean.measured()] == ["cmi/red"]
    metrics = CaptionMetrics(spec)
    assert list(metrics.metrics) == ["cmi/red"]
    metrics.update(lean, list(range(len(CAPTIONS))))
    assert set(metrics.compute()) == {"cmi/red"}
    rows = per_image_rows(lean, list(range(len(CAPTIONS))), CAPTIONS)
    assert all("mi" not in r and "mi_stderr" not in r for r in rows)
    assert [("cmi/red" in r) for r in rows] == HAS_RED.tolist()


def test_under_a_target_the_mi_is_not_watched(model, one_thread):
    # Where the caption lacks the word, its CMI is exactly 0 with a zero error: it meets any
    # target at once. A target no MI meets keeps those images drawing to max_draws only
    # while the MI is watched.
    target = {"n_draws": 4, "maps": False, "target_stderr": 1e-12, "max_draws": 12}
    _, full = measured(model, True, **target)
    _, lean = measured(model, False, **target)
    assert full.draws.tolist() == [12, 12, 12, 12]
    assert lean.draws.tolist() == [12, 4, 12, 12]
    # the rows that drew as much in both runs have the same bits
    a, b = full.cmi["red"], lean.cmi["red"]
    assert torch.equal(a.value[HAS_RED], b.value[HAS_RED]) and torch.equal(a.stderr[HAS_RED], b.stderr[HAS_RED])


def test_nothing_to_measure_is_refused():
    with pytest.raises(ValueError, match="nothing to measure"):
        MeasurementSpec((), mi=False)


def test_the_localization_job_does_not_measure_the_caption_mi(model):
    job = WordLocalization(str(model), n_draws=2, attention_steps=0)
    assert MeasurementSpec(("word",), **job.spec_args).tags == ["cmi/word"]
