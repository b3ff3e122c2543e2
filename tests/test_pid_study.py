"""PID studies: the core recovers the planted PID toys through captions, pairs and
intervals are what the options say, and the job on the bundled world model reports,
ranks, draws and resumes."""
import json
from pathlib import Path

import pytest
import torch

import analyze
from infodiff_lightning.denoisers import DenoiserBase
from infodiff_lightning.denoisers.pid_toys import copy_system, xor_system
from infodiff_lightning.analyses.pid_study import measure_pair, measure_pairs, pair_captions, pid_table, study_pairs

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ({"blue": 0, "red": 1}, {"round": 0, "square": 1})


class CaptionedToy(DenoiserBase):
    """A caption names the toy's two labels with words ("red"/"blue" for y1,
    "square"/"round" for y2); the exact mixture denoiser conditions on the labels it names
    (a word left out = that label unobserved)."""

    tokenizer = None

    def __init__(self, system):
        self.system = system

    def null_conditions(self, n):
        return [""] * n

    def eps_hat(self, x_alpha, alpha, conditions):
        rows = [[next((v for w, v in vocab.items() if w in c.split()), -1) for vocab in VOCAB] for c in conditions]
        return self.system.eps_hat(x_alpha, alpha, torch.tensor(rows))


def red_square_images(system, n: int = 400):
    """Images of the toy whose labels are (1, 1): captions "a red square"."""
    x, y = system.sample(n, torch.Generator().manual_seed(0))
    x = x[(y[:, 0] == 1) & (y[:, 1] == 1)]
    return x, list(range(len(x))), ["a red square"] * len(x)


def test_the_xor_pair_is_all_synergy():
    # x follows y1 xor y2: "red" alone or "square" alone leaves the xor uniform, so their
    # pointwise informations are exactly 0 on every draw (the denoiser's output does not
    # change) and everything both words say together is synergy.
    x, ids, captions = red_square_images(xor_system())
    est = measure_pair(CaptionedToy(xor_system()), x, ids, captions, ("red", "square"), n_draws=16)
    values = est.values()
    assert float(values[:, :3].abs().max()) < 1e-9
    s, se = est.dataset_mean()["synergy"]
    assert s > 5 * se  # about 1 nat +- 0.1 over ~100 images


def test_the_copy_pair_is_all_redundancy():
    # y1 = y2: either word says all that both say, so i1 = i2 = i12 on every draw: the
    # information is all redundancy and unique and synergy are exactly 0.
    x, ids, captions = red_square_images(copy_system())
    est = measure_pair(CaptionedToy(copy_system()), x, ids, captions, ("red", "square"), n_draws=16)
    values = est.values()
    assert float(values[:, 1:].abs().max()) < 1e-9
    r, se = est.dataset_mean()["redundancy"]
    assert r > 5 * se


def test_a_caption_without_both_words_is_refused():
    x, ids, _ = red_square_images(xor_system())
    with pytest.raises(ValueError, match="lack a word of"):
        measure_pair(CaptionedToy(xor_system()), x[:2], ids[:2], ["a red square", "a red circle"], ("red", "square"))


@pytest.mark.parametrize("context", ["caption", "none"])
def test_all_pairs_of_a_batch_give_the_numbers_of_one_pass_per_pair(context):
    # With context "caption" the images are grouped by the pairs their caption holds and
    # each group is one pass over all its pairs; draws are keyed by image id, so every
    # image's terms are those of measure_pair on the images of one pair.
    x, _, _ = red_square_images(xor_system(), 400)
    x = x[:6]
    ids = [10, 11, 12, 13, 14, 15]
    captions = ["a red square", "a blue square", "a red square, blue", "a blue round", "a round", "red blue square"]
    pairs = [("red", "square"), ("blue", "square"), ("red", "round")]
    toy = CaptionedToy(xor_system())
    got = measure_pairs(toy, x, ids, captions, pairs, context=context, n_draws=8, seed=3, maps=[("red", "square")])
    assert list(got) == [("red", "square"), ("blue", "square")]  # no caption holds (red, round)
    assert got[("red", "square")].rows == [0, 2, 5] and got[("blue", "square")].rows == [1, 2, 5]
    for pair, est in got.items():
        one = measure_pair(toy, x[est.rows], [ids[j] for j in est.rows], [captions[j] for j in est.rows], pair,
                           context=context, n_draws=8, seed=3, maps=pair == ("red", "square"))
        torch.testing.assert_close(est.values, one.values(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(est.stderrs, one.stderrs(), rtol=1e-12, atol=1e-12)
        assert (est.maps is None) == (one.maps() is None)
        if est.maps is not None:
            torch.testing.assert_close(est.maps, one.maps(), rtol=1e-12, atol=1e-12)


def test_without_context_the_caption_is_cut_to_the_two_words_in_their_order():
    captions = ["a red cross on the left", "a big cross, red"]
    assert pair_captions(captions, ("cross", "red"), "none") == ["red cross", "cross red"]
    assert pair_captions(captions, ("cross", "red"), "caption") == captions
    with pytest.raises(ValueError, match="context must be one of"):
        pair_captions(captions, ("cross", "red"), "image")


def test_lists_give_their_cross_product_after_the_pairs():
    got = study_pairs([["scarlet", "red"]], [["doctor", "nurse"], ["man", "woman"]])
    assert got == (("scarlet", "red"), ("doctor", "man"), ("doctor", "woman"), ("nurse", "man"), ("nurse", "woman"))


@pytest.mark.parametrize("pairs, lists, message", [
    ([], None, "give word pairs"),
    ([["red", "red"]], None, "two different words"),
    ([["red", "cross"], ["red", "cross"]], None, "studied twice"),
    ([], [["doctor"]], "two non-empty word lists"),
    ([["red"]], None, "pairs of words"),
])
def test_bad_pairs_name_the_problem(pairs, lists, message):
    with pytest.raises(ValueError, match=message):
        study_pairs(pairs, lists)


def test_the_table_ranks_by_the_chosen_term_with_normal_intervals():
    def entry(mean, se):
        return {"mean": mean, "stderr": se, "images": 10}

    terms = ("redundancy", "unique1", "unique2", "synergy")
    summary = {f"pid/a+b/{t}": entry(v, 0.1) for t, v in zip(terms, (0.5, 0.0, 0.0, 0.1))}
    summary.update({f"pid/c+d/{t}": entry(v, 0.2) for t, v in zip(terms, (0.1, 0.0, 0.0, 0.9))})
    by_synergy = pid_table(summary, [("a", "b"), ("c", "d"), ("e", "f")], "synergy")
    assert [r["pair"] for r in by_synergy] == [["c", "d"], ["a", "b"]]  # e+f: no image, left out
    assert by_synergy[0]["synergy"]["interval"] == pytest.approx([0.9 - 1.959964 * 0.2, 0.9 + 1.959964 * 0.2])
    assert [r["pair"] for r in pid_table(summary, [("a", "b"), ("c", "d")], "redundancy")][0] == ["a", "b"]


# ---- the job on the bundled world model -------------------------------------------------

PAIRS = "[[bat, baseball], [big, red]]"


def run(tmp: Path, *extra: str) -> Path:
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/pid_study.yaml"), "--model.init_args.pairs", PAIRS,
                       "--model.init_args.n_draws", "2", "--model.init_args.log_images", "1",
                       "--data.init_args.limit_test", "48", "--trainer.default_root_dir", str(tmp / "runs"),
                       "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.enable_progress_bar",
                       "false", *extra])
    assert rc == 0
    [folder] = (tmp / "runs" / "pid_study").glob("run-*")
    return folder


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pid_study")
    return tmp, run(tmp)


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "per_image.rank0.jsonl").read_text().splitlines()]


def test_each_pair_is_measured_on_the_images_whose_caption_holds_both_words(job):
    _, folder = job
    summary, recs = json.loads((folder / "summary.json").read_text()), records(folder)
    assert summary["samples"]["total"] == 48 == len(recs)
    for row in summary["pairs"]:
        key = "+".join(row["pair"])
        held = [r for r in recs if set(row["pair"]) <= set(r["caption"].replace(",", "").split())]
        assert row["images"] == len(held) == sum(key in r["pairs"] for r in recs) > 0
        # the reported mean is the mean of the recorded per-image terms
        mean = sum(r["pairs"][key]["synergy"] for r in held) / len(held)
        assert row["synergy"]["mean"] == pytest.approx(mean)


def test_the_report_ranks_the_pairs_and_links_the_maps(job):
    _, folder = job
    summary = json.loads((folder / "summary.json").read_text())
    synergies = [row["synergy"]["mean"] for row in summary["pairs"]]
    assert synergies == sorted(synergies, reverse=True)
    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert len(figures) == 2  # log_images 1 per pair
    report = (folder / "report.md").read_text()
    assert all(f"figures/{name}" in report for name in figures)


def test_a_resumed_run_reports_what_an_uninterrupted_one_does(job):
    tmp, folder = job
    whole = json.loads((folder / "summary.json").read_text())
    lines = (folder / "per_image.rank0.jsonl").read_text().splitlines()
    (folder / "per_image.rank0.jsonl").write_text("\n".join(lines[:20]) + "\n")  # as if killed after 20 images
    again = run(tmp)
    resumed = json.loads((again / "summary.json").read_text())
    assert resumed["samples"]["resumed"] == 20 and resumed["samples"]["measured"] == 28
    assert resumed["pairs"] == whole["pairs"]


def test_a_pair_no_caption_holds_is_a_configuration_error(job, capsys):
    tmp, _ = job
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/pid_study.yaml"), "--model.init_args.pairs",
                       "[[bat, zebra]]", "--data.init_args.limit_test", "8", "--trainer.default_root_dir",
                       str(tmp / "bad"), "--trainer.logger.init_args.save_dir", str(tmp / "bad")])
    assert rc == 2 and "the word 'zebra' occurs in none of the" in capsys.readouterr().err
