"""The prompt-intervention job on the bundled world model (models/world, trained on the
embedded world, so its words carry information): per-word correlations of CMI with the
change a removal makes, records that reproduce the summary, and resume."""
import json
from pathlib import Path

import pytest

import analyze
from infodiff_lightning.analyses.intervention import bootstrap_pearson

ROOT = Path(__file__).resolve().parents[1]


def run(tmp: Path, *extra: str) -> Path:
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/intervention.yaml"),
                       "--model.init_args.words", "[red, the]",
                       "--model.init_args.n_draws", "2", "--model.init_args.steps", "3", "--model.init_args.n_boot",
                       "200", "--model.init_args.microbatch", "64",
                       "--data.init_args.limit_test", "6", "--trainer.default_root_dir", str(tmp / "runs"),
                       "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.enable_progress_bar",
                       "false", *extra])
    assert rc == 0
    [folder] = (tmp / "runs" / "intervention").glob("run-*")
    return folder


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("intervention")
    return tmp, run(tmp)


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "per_image.rank0.jsonl").read_text().splitlines()]


def test_each_word_is_measured_on_the_images_whose_caption_has_it(job):
    tmp, folder = job
    summary = json.loads((folder / "summary.json").read_text())
    recs = records(folder)
    assert summary["samples"]["total"] == 6 and len(recs) == 6
    for w in ("red", "the"):
        with_word = [r for r in recs if w in r["words"]]
        assert summary["words"][w]["images"] == len(with_word) > 0
        for r in with_word:
            v = r["words"][w]
            assert v["change"] >= 0 and (v["r_pixel"] is None or -1 <= v["r_pixel"] <= 1)
    # The model has learnt colour words: removing "red" changes the image, and "red"
    # carries more information than "the" (word dropout taught it that "the" says little).
    red = [r["words"]["red"] for r in recs if "red" in r["words"]]
    assert all(v["change"] > 0 for v in red)
    assert summary["words"]["red"]["mean_cmi"] > summary["words"]["the"]["mean_cmi"]


def test_the_image_level_correlation_is_that_of_the_recorded_pairs(job):
    # The summary's r is Pearson's r of the (CMI, change) pairs in the records, with the
    # same bootstrap (seeded): what is reported can be recomputed from what is kept.
    _, folder = job
    summary = json.loads((folder / "summary.json").read_text())
    pairs = sorted(((r["id"], r["words"]["the"]["cmi"], r["words"]["the"]["change"]) for r in records(folder)
                    if "the" in r["words"]))
    expected = bootstrap_pearson([p[1] for p in pairs], [p[2] for p in pairs], n_boot=200).as_dict()
    assert summary["words"]["the"]["image_level"] == pytest.approx(expected)


def test_the_attention_baseline_is_correlated_from_its_recorded_pairs(job):
    # The config reads the cross-attention baseline (attention_steps 10): each record holds
    # the word's attention total and the within-image r of its attention map with the
    # change map; the summary's baseline r is recomputed from them with the same bootstrap.
    _, folder = job
    summary = json.loads((folder / "summary.json").read_text())
    got = sorted((r["id"], r["words"]["the"]) for r in records(folder) if "the" in r["words"])
    assert all(v["attention"] > 0 and (v["r_pixel_attention"] is None or -1 <= v["r_pixel_attention"] <= 1)
               for _, v in got)
    expected = bootstrap_pearson([v["attention"] for _, v in got], [v["change"] for _, v in got],
                                 n_boot=200).as_dict()
    assert summary["words"]["the"]["attention"]["image_level"] == pytest.approx(expected)


def test_a_resumed_run_reports_what_an_uninterrupted_one_does(job):
    tmp, folder = job
    whole = json.loads((folder / "summary.json").read_text())
    lines = (folder / "per_image.rank0.jsonl").read_text().splitlines()
    (folder / "per_image.rank0.jsonl").write_text("\n".join(lines[:3]) + "\n")  # as if killed after 3 images
    again = run(tmp)
    resumed = json.loads((again / "summary.json").read_text())
    assert resumed["samples"]["resumed"] == 3 and resumed["samples"]["measured"] == 3
    for key in ("words", "all_words"):
        assert resumed[key] == whole[key]


def test_a_word_in_no_caption_is_a_configuration_error(job, capsys):
    tmp, _ = job
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/intervention.yaml"),
                       "--model.init_args.words", "[zebra]", "--data.init_args.limit_test", "6",
                       "--trainer.default_root_dir", str(tmp / "bad"), "--trainer.logger.init_args.save_dir",
                       str(tmp / "bad")])
    assert rc == 2 and "the word 'zebra' occurs in none of the" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    # row_words takes each row's word from the data: a word list beside it would be ignored
    (("--model.init_args.row_words", "true"), "words: with row_words each row's own word is removed; give words: []"),
    # the world's captioned scenes name no word per row
    (("--model.init_args.row_words", "true", "--model.init_args.words", "[]"),
     "row_words: needs rows that name their word, grouped by it"),
])
def test_row_words_without_rows_that_name_their_word_is_a_configuration_error(job, capsys, extra, message):
    tmp, _ = job
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/intervention.yaml"), "--data.init_args.limit_test", "6",
                       "--trainer.default_root_dir", str(tmp / "bad"), "--trainer.logger.init_args.save_dir",
                       str(tmp / "bad"), *extra])
    assert rc == 2 and message in capsys.readouterr().err
