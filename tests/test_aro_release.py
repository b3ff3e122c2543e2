"""ARO's benchmarks read as released (VG JSON with images/, the Karpathy test splits the
order sets are built from), with ARO's own aggregates beside the job's: fixtures written
here in the released layouts, read with ``root`` alone."""
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infodiff_lightning.analyses.aro import MIN_ATTRIBUTE_PAIR_ROWS, SYMMETRIC_RELATIONS, aro_summary
from infodiff_lightning.analyses.statistics import accuracy_summary, correct
from infodiff_lightning.data.aro_order import (case_rng, order_candidates, pre_caption, shuffle_allbut_nouns_and_adj,
                                              shuffle_nouns_and_adj, shuffle_trigrams, shuffle_within_trigrams,
                                              treebank_tokens, trigrams)
from infodiff_lightning.data.ranking_files import RankingFiles
from job_helpers import records
from tiny_families import save_tiny_sd

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)

# VG-Relation: 3 + 2 + 2 rows; "next to" is one of ARO's symmetric relations, "left of" and "on" are not
RELATIONS = [("left of", 3), ("next to", 2), ("on", 2)]
# VG-Attribution: one pair at ARO's 25-row threshold, one under it
ATTRIBUTES = [(("red", "blue"), MIN_ATTRIBUTE_PAIR_ROWS), (("green", "red"), 2)]
COCO = [{"image": "val2014/COCO_val2014_000000000001.jpg",
         "caption": ["A red square left of a blue circle.", "Red square, blue circle"]},
        {"image": "val2014/COCO_val2014_000000000002.jpg", "caption": ["A green cross on the left."]}]
FLICKR = [{"image": "flickr30k-images/1000.jpg", "caption": ["a blue circle", "a circle"]}]


def two_halves(path: Path, left, right, size=(40, 20)) -> None:
    """An image whose left half is ``left`` and right half ``right``."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2], arr[:, size[0] // 2:] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_aro(root: Path) -> Path:
    """ARO's VG release (visual_genome_*.json, images/ beside them) and the Karpathy test
    files with their val2014/ and flickr30k-images/ images, all in one folder."""
    root.mkdir()
    two_halves(root / "images" / "2.jpg", RED, BLUE)
    relation = [{"image_id": 2, "image_path": "2.jpg", "relation_name": rel, "true_caption": f"the square is {rel} the circle",
                 "false_caption": f"the circle is {rel} the square", "bbox_x": 0, "bbox_y": 0, "bbox_w": 40, "bbox_h": 20}
                for rel, n in RELATIONS for _ in range(n)]
    attribution = [{"image_id": 2, "image_path": "2.jpg", "attributes": list(pair), "true_caption": f"the {pair[0]} square",
                    "false_caption": f"the {pair[1]} square", "bbox_x": 2, "bbox_y": 2, "bbox_w": 12, "bbox_h": 12}
                   for pair, n in ATTRIBUTES for _ in range(n)]
    (root / "visual_genome_relation.json").write_text(json.dumps(relation))
    (root / "visual_genome_attribution.json").write_text(json.dumps(attribution))
    for entry, colours in zip(COCO + FLICKR, [(RED, BLUE), (GREEN, GREEN), (BLUE, BLUE)]):
        two_halves(root / entry["image"], *colours)
    (root / "coco_karpathy_test.json").write_text(json.dumps(COCO))
    (root / "flickr30k_test.json").write_text(json.dumps(FLICKR))
    return root


@pytest.fixture(scope="module")
def aro(tmp_path_factory):
    return write_aro(tmp_path_factory.mktemp("aro") / "aro")


def test_root_alone_reads_every_released_file_and_every_row(aro):
    data = RankingFiles(aro, image_size=8)
    cases = sum(len(e["caption"]) for e in COCO + FLICKR)
    # 7 relation rows, 27 attribution rows, one order case per caption
    assert len(data) == 7 + 27 + cases and all(data.rows[i].error == "" for i in range(len(data)))
    assert data.groups[:4] == ["vg_attribution", "vg_relation", "coco_order", "flickr_order"]
    assert data.kinds == {"vg_attribution": "attribution", "vg_relation": "relation", "coco_order": "order",
                          "flickr_order": "order"}


def test_vg_candidates_are_the_true_then_the_false_caption_and_the_image_comes_from_images(aro):
    data = RankingFiles(aro, ["visual_genome_attribution.json"], image_size=8)
    item = data[0]
    assert item["candidates"] == ["the red square", "the blue square"] and item["error"] == ""
    # the box (inside the left half) is cropped from images/2.jpg: all red (JPEG keeps it within a few levels)
    assert torch.allclose(item["image"][0], torch.full((8, 8), 230 / 127.5 - 1), atol=0.05)
    assert torch.allclose(item["image"][2], torch.full((8, 8), 20 / 127.5 - 1), atol=0.05)


def test_order_cases_are_one_per_caption_with_the_normalised_caption_first(aro):
    data = RankingFiles(aro, ["coco_karpathy_test.json", "flickr30k_test.json"], image_size=8)
    captions = [(e["image"], c) for e in COCO + FLICKR for c in e["caption"]]
    assert [(r.image_path, r.candidates[0]) for r in data.rows] == [(im, pre_caption(c)) for im, c in captions]
    # no POS tagger here: the caption and ARO's two POS-free perturbations
    assert all(len(r.candidates) == 3 for r in data.rows)
    assert data.benchmarks()["coco_order"]["perturbations"] == ["shuffle_within_trigrams", "shuffle_trigrams"]
    # every image read from val2014/ and flickr30k-images/ as the Karpathy path says: GREEN is image 2
    assert torch.allclose(data[2]["image"][1], torch.full((8, 8), 200 / 127.5 - 1), atol=0.05)


def test_aro_pre_caption_lowercases_drops_its_punctuation_and_keeps_30_words():
    assert pre_caption("A Dog: on the  (red) mat!!\n") == "a dog on the red mat"
    assert pre_caption("dogs, cats; and birds's") == "dogs, cats and birds's"  # commas and apostrophes stay
    assert pre_caption(" ".join(["w"] * 40)) == " ".join(["w"] * 30)


def test_treebank_tokens_split_punctuation_and_clitics_as_nltk_does():
    assert treebank_tokens("A man's dog, running 1,000 miles.") == ["A", "man", "'s", "dog", ",", "running", "1,000",
                                                                    "miles", "."]
    assert treebank_tokens("Dogs don't (often) play.") == ["Dogs", "do", "n't", "(", "often", ")", "play", "."]


def test_trigram_shuffles_permute_within_groups_of_three_or_the_groups_themselves():
    assert trigrams("1 2 3 4 5 6 7 8".split()) == [["1", "2", "3"], ["4", "5", "6"], ["7", "8"]]  # the last one short
    caption = "one two three four five six seven eight nine"  # 9 words: the groups stay aligned when moved
    groups = trigrams(caption.split())
    for seed in range(4):
        within = trigrams(shuffle_within_trigrams(caption, random.Random(seed)).split())
        assert [sorted(g) for g in within] == [sorted(g) for g in groups]  # each group keeps its words and place
        across = trigrams(shuffle_trigrams(caption, random.Random(seed)).split())
        assert sorted(across) == sorted(groups)  # whole groups, in some order


def fake_tagger(text):
    """Penn tags from a fixed lexicon: what a real tagger would say of these captions."""
    lexicon = {"red": "JJ", "big": "JJ", "dog": "NN", "cat": "NN", "mat": "NN", "a": "DT", "the": "DT",
               "on": "IN", "sits": "VBZ", "near": "IN"}
    tokens = text.split()
    return tokens, [lexicon[t] for t in tokens]


def test_pos_shuffles_move_nouns_and_adjectives_only_among_their_own_positions():
    caption = "a big dog sits on the red mat near a cat"
    tokens, tags = fake_tagger(caption)
    for seed in range(5):
        out = shuffle_nouns_and_adj(caption, random.Random(seed), fake_tagger).split()
        for cls in ({"NN"}, {"JJ"}):
            pos = [i for i, t in enumerate(tags) if t in cls]
            assert sorted(out[i] for i in pos) == sorted(tokens[i] for i in pos)
        assert [out[i] for i, t in enumerate(tags) if t not in ("NN", "JJ")] == \
            [tokens[i] for i, t in enumerate(tags) if t not in ("NN", "JJ")]
        rest = shuffle_allbut_nouns_and_adj(caption, random.Random(seed), fake_tagger).split()
        assert [rest[i] for i, t in enumerate(tags) if t in ("NN", "JJ")] == \
            [tokens[i] for i, t in enumerate(tags) if t in ("NN", "JJ")]
    cands, names = order_candidates(caption, random.Random(0), fake_tagger)
    assert len(cands) == 5 and names[:2] == ("shuffle_nouns_and_adj", "shuffle_allbut_nouns_and_adj")


def test_order_cases_repeat_for_a_seed_and_change_with_it(aro):
    a, b = (RankingFiles(aro, ["coco_karpathy_test.json"], perturbation_seed=s) for s in (0, 0))
    assert [r.candidates for r in a.rows] == [r.candidates for r in b.rows]
    # a case's draws are its own: reading only the first case gives it the same perturbations
    assert RankingFiles(aro, ["coco_karpathy_test.json"], limit=1).rows[0].candidates == a.rows[0].candidates
    seeds = {tuple(order_candidates(COCO[0]["caption"][0], case_rng(s, "coco_order", 0, 0))[0]) for s in range(6)}
    assert len(seeds) > 1


def test_a_perturbation_equal_to_its_caption_is_counted_and_is_no_rival(aro):
    data = RankingFiles(aro, ["flickr30k_test.json"])
    # "a circle": two tokens form one trigram, so shuffling the trigrams is the identity,
    # and within it the order is kept or swapped; both perturbations are counted when equal
    second = data.rows[1]
    equal = sum(c == second.candidates[0] for c in second.candidates[1:])
    assert second.equal_to_caption == equal >= 1
    b = data.benchmarks()["flickr_order"]
    assert b["equal_to_caption"] == sum(r.equal_to_caption for r in data.rows) and b["cases_with_equal"] >= 1
    # ARO's argmax gives a tie with a copy of the caption to the caption: a hit
    scores = torch.tensor([[1.0, 1.0, 0.5], [1.0, 1.0, 0.5]])
    rivals = torch.tensor([[False, False, True], [False, True, True]])
    assert correct(scores, [0, 0], rivals).tolist() == [True, False]  # a distinct tie stays a miss


def test_aro_macro_drops_symmetric_relations_and_attribute_pairs_under_25_rows():
    # hits / rows per subgroup, as the job counts them
    counts = {"vg_relation/left of/standard": {"hits": 3, "n": 4}, "vg_relation/next to/standard": {"hits": 0, "n": 2},
              "vg_relation/on/standard": {"hits": 1, "n": 2}, "vg_relation/standard": {"hits": 4, "n": 8},
              "vg_attribution/red_blue/standard": {"hits": 20, "n": 25},
              "vg_attribution/green_red/standard": {"hits": 1, "n": 3}, "vg_attribution/standard": {"hits": 21, "n": 28}}
    groups = ["vg_relation", "vg_attribution", "vg_relation/left of", "vg_relation/next to", "vg_relation/on",
              "vg_attribution/red_blue", "vg_attribution/green_red"]
    out = accuracy_summary(counts, groups, ["standard"])
    benchmarks = {"vg_relation": {"kind": "relation", "subgroup_rows": {"left of": 4, "next to": 2, "on": 2}},
                  "vg_attribution": {"kind": "attribution", "subgroup_rows": {"red_blue": 25, "green_red": 3}}}
    aro = aro_summary(out, benchmarks, ["standard"])
    assert "next to" in SYMMETRIC_RELATIONS and "left of" not in SYMMETRIC_RELATIONS
    # ARO: mean of 3/4 and 1/2 ("next to" dropped); the job's macro: mean of all three
    assert aro["ranking/vg_relation/aro_macro/standard"]["accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["ranking/vg_relation/macro/standard"]["accuracy"] == pytest.approx((0.75 + 0 + 0.5) / 3)
    # ARO: the 25-row pair alone (20/25); the 3-row pair is dropped
    entry = aro["ranking/vg_attribution/aro_macro/standard"]
    assert entry["accuracy"] == pytest.approx(0.8) and entry["subgroups"] == 1 and entry["dropped_subgroups"] == 1
    assert out["ranking/vg_attribution/macro/standard"]["accuracy"] == pytest.approx((0.8 + 1 / 3) / 2)


def test_a_karpathy_entry_without_a_caption_list_is_a_failed_row_naming_file_row_and_field(tmp_path):
    (tmp_path / "val2014").mkdir()
    two_halves(tmp_path / "val2014" / "a.jpg", RED, RED)
    rows = [{"image": "val2014/a.jpg", "caption": ["a red square"]}, {"image": "val2014/a.jpg", "caption": "a dog"},
            {"caption": ["x"]}]
    (tmp_path / "coco_karpathy_test.json").write_text(json.dumps(rows))
    data = RankingFiles(tmp_path)
    assert data.rows[1].error.startswith("coco_karpathy_test.json row 1: field 'caption' must be a non-empty list")
    assert data.rows[2].error == "coco_karpathy_test.json row 2: field 'image' is missing or empty"
    assert "\n" not in data.rows[1].error


def test_a_missing_or_unknown_folder_layout_is_one_line_naming_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds none of the benchmark files .*visual_genome_relation.json"):
        RankingFiles(tmp_path)
    (tmp_path / "flickr30k_test.json").write_text('{"image": "x"}')
    with pytest.raises(ValueError, match="flickr30k_test.json: expected a JSON list of rows, got dict"):
        RankingFiles(tmp_path)


def test_an_unreadable_released_image_is_a_failed_item_not_an_error_of_the_job(aro, tmp_path):
    import shutil

    shutil.copytree(aro, tmp_path / "aro")
    (tmp_path / "aro" / "flickr30k-images" / "1000.jpg").write_bytes(b"not a jpeg")
    data = RankingFiles(tmp_path / "aro", ["flickr30k_test.json"], image_size=8)
    assert "cannot read image 1000.jpg" in data[0]["error"] and data[0]["image"].shape == (3, 8, 8)


def test_pos_tagger_that_is_not_installed_is_a_one_line_error(aro, monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # as on a machine without spaCy
    with pytest.raises(ValueError, match="pos_tagger 'en_core_web_sm': spaCy is not installed"):
        RankingFiles(aro, ["coco_karpathy_test.json"], pos_tagger="en_core_web_sm")


# ---- the job on the released layout: bundled world model (1 and 2 processes), tiny SD -----------

def rank(aro: Path, tmp: Path, name: str, devices: int, pretrained: Path = ROOT / "models/world") -> Path:
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/ranking.yaml"),
           "--model.init_args.pretrained", str(pretrained), "--model.init_args.n_draws", "2",
           "--model.init_args.log_images", "0", "--data.init_args.root", str(aro),
           "--data.init_args.image_size", "32", "--data.init_args.crop_to_bbox", "true",
           "--data.init_args.batch_size", "8", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
           "--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.default_root_dir", str(tmp),
           "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.name", name,
           "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = (tmp / name).glob("run-*")
    return run


@pytest.fixture(scope="module")
def ranked(aro, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranked")
    return rank(aro, tmp, "one", 1), rank(aro, tmp, "two", 2)


def assert_every_row_measured_with_aro_figures_beside_the_jobs(run: Path) -> None:
    summary, recs = json.loads((run / "summary.json").read_text()), records(run)
    assert summary["samples"]["measured"] == summary["samples"]["total"] == len(recs) == 34 + 5
    # ARO's VG-Relation macro by hand: per relation, symmetric ones dropped, then the mean
    by_rel = {}
    for r in recs:
        if r["group"] == "vg_relation":
            by_rel.setdefault(r["groups"][1].split("/", 1)[1], []).append(r["correct_standard"])
    kept = [sum(v) / len(v) for k, v in by_rel.items() if k not in SYMMETRIC_RELATIONS]
    assert len(kept) == 2 and summary["ranking/vg_relation/aro_macro/standard"]["accuracy"] == pytest.approx(
        sum(kept) / 2)
    assert summary["ranking/vg_relation/macro/standard"]["subgroups"] == 3
    # ARO's VG-Attribution macro: only the 25-row pair
    pair = [r["correct_standard"] for r in recs if "vg_attribution/red_blue" in r["groups"]]
    assert len(pair) == 25 and summary["ranking/vg_attribution/aro_macro/standard"]["accuracy"] == pytest.approx(
        sum(pair) / 25)
    # Precision@1 of the order sets: the share of cases whose caption beats every distinct perturbation
    for group in ("coco_order", "flickr_order"):
        rows = [r for r in recs if r["group"] == group]
        hits = sum(all(r["standard"][0] > s for c, s in zip(r["candidates"][1:], r["standard"][1:])
                       if c != r["candidates"][0]) for r in rows)
        entry = summary[f"ranking/{group}/precision_at_1/standard"]
        assert entry["n"] == len(rows) and entry["hits"] == hits == sum(r["correct_standard"] for r in rows)
    report = (run / "report.md").read_text()
    assert "ARO's Precision@1" in report and "need a POS tagger" in report


@pytest.mark.slow
def test_the_job_measures_every_released_row_and_reports_aro_figures_beside_its_own(ranked):
    assert_every_row_measured_with_aro_figures_beside_the_jobs(ranked[0])


@pytest.mark.slow
def test_the_job_on_the_released_layout_gives_the_same_summary_on_2_processes(ranked):
    one, two = ranked
    assert records(two) == records(one)
    a, b = (json.loads((r / "summary.json").read_text()) for r in ranked)
    assert a == b


@pytest.mark.slow
def test_the_job_reads_the_released_layout_with_a_tiny_stable_diffusion_pipeline(aro, tmp_path):
    # the same files through a latent model with a VAE, its tokenizer holding every word of
    # the fixture's captions (perturbations reorder the same words): the same rows, the
    # same figures, computed from that model's scores
    captions = [row[k] for f in ("visual_genome_relation.json", "visual_genome_attribution.json")
                for row in json.loads((aro / f).read_text()) for k in ("true_caption", "false_caption")]
    captions += [c for entry in COCO + FLICKR for c in entry["caption"]]
    sd = save_tiny_sd(tmp_path / "sd", re.findall(r"[a-z]+", " ".join(captions).lower()))
    assert_every_row_measured_with_aro_figures_beside_the_jobs(rank(aro, tmp_path, "sd", 1, pretrained=sd))
