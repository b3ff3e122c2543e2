"""``where``: measure a quantity only on some images of a pass (issue #29, no repeated work).

Why an image's numbers are the same bits whichever quantities and images share its pass:
its draws are keyed by (seed, image id), its noisy inputs are formed from x, alpha and eps
alone, and every denoiser call has the same number of inputs (evaluate.py pads a short
call), so an input's prediction does not depend on what else shares its call. On an image
a quantity is not marked for, the quantity's reference entry is the caption itself: that
entry shares the caption's prediction (evaluate.entry_sources), costs no input, and its gap
is exactly zero. The localization job uses this to measure the rows of different words in
one pass, the monitor to cap the images of each quantity (mi_images, word_images).
"""
import json

import lightning as L
import pytest
import torch

from infodiff_lightning.contrasts import cmi_tag, mi_tag
from infodiff_lightning.data import LocalizationData
from infodiff_lightning.data.world_export import export_world
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.measurement import MeasurementSpec, measure_captions
from infodiff_lightning.modules import WordLocalization
from tiny_models import save_pixel_text

CAPTIONS = ["a red square on the left", "a blue circle", "a red cross at the top", "a blue and red thing"]
IDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_pixel_text(tmp_path_factory.mktemp("where") / "model", max_tokens=77)


def images():
    return torch.rand(len(CAPTIONS), 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def counted(model):
    """A fresh denoiser (empty text cache) whose eps_hat calls are counted in ``.calls``."""
    den = load_text_to_image(str(model))
    inner, den.calls = den.eps_hat, 0

    def eps_hat(*args):
        den.calls += 1
        return inner(*args)

    den.eps_hat = eps_hat
    return den


def test_a_quantity_marked_on_some_images_has_there_the_bits_of_measuring_every_image(model, one_thread):
    spec = MeasurementSpec(("red", "blue"), n_draws=4, maps=True, microbatch=5)
    full = measure_captions(load_text_to_image(str(model)), images(), IDS, CAPTIONS, spec)
    where = {mi_tag(): [True, False, False, True], cmi_tag("red"): [False, False, True, True],
             cmi_tag("blue"): [False, True, False, False]}
    part = measure_captions(load_text_to_image(str(model)), images(), IDS, CAPTIONS, spec, where)
    on = torch.tensor(where[mi_tag()])
    assert torch.equal(part.mi.value[on], full.mi.value[on]) and torch.equal(part.mi.stderr[on], full.mi.stderr[on])
    for w in ("red", "blue"):
        on = torch.tensor(where[cmi_tag(w)])
        assert torch.equal(part.present[w], on)  # every marked image holds its word here
        a, b = part.cmi[w], full.cmi[w]
        assert torch.equal(a.value[on], b.value[on]) and torch.equal(a.stderr[on], b.stderr[on])
        assert torch.equal(a.map[on], b.map[on])
    assert torch.equal(part.mi_present, torch.tensor(where[mi_tag()]))
    assert [bool(m.present.any()) for m in part.measured()] == [True, True, True]


def test_an_unmarked_image_costs_no_input_for_the_quantity(model, one_thread):
    spec = MeasurementSpec(("red", "blue"), n_draws=4, maps=False)
    full = measure_captions(load_text_to_image(str(model)), images(), IDS, CAPTIONS, spec)
    # per draw: the caption of every image, the null prompt of every image, "- red" of the 3
    # captions with red and "- blue" of the 2 with blue
    assert full.n_evals == (4 + 4 + 3 + 2) * 4
    where = {mi_tag(): [True, False, False, False], cmi_tag("red"): [False, False, True, False],
             cmi_tag("blue"): [False, False, False, False]}
    part = measure_captions(load_text_to_image(str(model)), images(), IDS, CAPTIONS, spec, where)
    assert part.n_evals == (4 + 1 + 1 + 0) * 4
    assert not bool(part.present["blue"].any())
    assert float(part.cmi["blue"].value.abs().max()) == 0.0  # the unmarked gaps are exactly zero


def test_rows_of_two_words_in_one_pass_fill_the_calls_one_pass_per_word_pads(model, one_thread):
    # 2 rows per word, 4 draws, 2 inputs each (caption, caption - word): 16 inputs per word.
    # One pass per word pads each word's call to the micro-batch of 32; one pass fills one call.
    rows_word = ["red", "red", "blue", "blue"]
    captions = ["a red square on the left", "a red cross at the top", "a blue circle", "a blue and red thing"]
    spec_of = {w: MeasurementSpec((w,), n_draws=4, maps=True, microbatch=32, mi=False) for w in ("red", "blue")}
    apart, den = {}, counted(model)
    for w in ("red", "blue"):
        js = [j for j, rw in enumerate(rows_word) if rw == w]
        apart[w] = measure_captions(den, images()[js], [IDS[j] for j in js], [captions[j] for j in js], spec_of[w])
    assert den.calls == 2
    one = counted(model)
    spec = MeasurementSpec(("blue", "red"), n_draws=4, maps=True, microbatch=32, mi=False)
    where = {cmi_tag(w): [rw == w for rw in rows_word] for w in ("blue", "red")}
    res = measure_captions(one, images(), IDS, captions, spec, where)
    assert one.calls == 1 and res.n_evals == 32
    for w, js in (("red", [0, 1]), ("blue", [2, 3])):
        assert torch.equal(res.cmi[w].value[js], apart[w].cmi[w].value)
        assert torch.equal(res.cmi[w].map[js], apart[w].cmi[w].map)


def test_a_mark_for_a_quantity_not_measured_or_of_the_wrong_length_is_refused(model):
    den, spec = load_text_to_image(str(model)), MeasurementSpec(("red",), n_draws=2, maps=False)
    with pytest.raises(ValueError, match="'cmi/blue' is not a quantity measured here"):
        measure_captions(den, images(), IDS, CAPTIONS, spec, {cmi_tag("blue"): [True] * 4})
    with pytest.raises(ValueError, match=r"where\['cmi/red'\] has 3 entries for 4 images"):
        measure_captions(den, images(), IDS, CAPTIONS, spec, {cmi_tag("red"): [True] * 3})


def test_a_localization_batch_gives_each_row_the_numbers_it_has_alone(tmp_path, model, one_thread):
    # rows of several words share a batch of 4; with batches of 1 every row is measured alone
    export_world(tmp_path / "heldout", "heldout", n=2)
    rows = {}
    for batch in (1, 4):
        data = LocalizationData(root=str(tmp_path / "heldout"), selection_root=None, image_size=8, batch_size=batch)
        job = WordLocalization(str(model), n_draws=2, threshold=0.5, log_images=0, microbatch=8)
        L.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=str(tmp_path / f"b{batch}"),
                  enable_progress_bar=False, enable_checkpointing=False,
                  enable_model_summary=False).test(job, datamodule=data, verbose=False)
        lines = (tmp_path / f"b{batch}" / "per_image.rank0.jsonl").read_text().splitlines()
        rows[batch] = sorted((json.loads(line) for line in lines), key=lambda r: r["id"])
    assert len(rows[1]) >= 8 and len({r["word"] for r in rows[4][:4]}) > 1  # batches hold several words
    assert rows[1] == rows[4]  # every field of every row: the CMI, its error, the IoUs, the draws
