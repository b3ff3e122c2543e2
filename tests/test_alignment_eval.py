"""Alignment per category, arm comparisons and diversity (analyses/alignment_eval.py), and the
scoring stage (runs/score_alignment.py), on images whose content is known: the world's renders."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from infodiff_lightning.analyses.alignment_eval import (difference, distinct_readings, outcomes, pairwise_distance,
                                                         per_prompt_rates, rates, reading_key, recovered,
                                                         within_prompt_distance)
from infodiff_lightning.analyses.statistics import accuracy_interval
from infodiff_lightning.analyses.world_alignment import read_scene
from infodiff_lightning.data.world import Scene, WorldObject, render_scene
from infodiff_lightning.runs.score_alignment import main as score_main

RED_LEFT = WorldObject("square", "red", "big", "left", ("red",))
BLUE_RIGHT = WorldObject("circle", "blue", "small", "right", ("blue",))
ONE = "a big red square on the left"
TWO = "a big red square on the left and a small blue circle on the right"


def judged(objects, prompt):
    return outcomes(read_scene(render_scene(Scene(0, tuple(objects)))), prompt)


def test_one_object_categories_judge_colour_shape_and_position_separately():
    assert judged([RED_LEFT], ONE) == {"colour": True, "shape": True, "position": True, "aligned": True,
                                       "aligned_no_dot": True}
    moved = judged([replace(RED_LEFT, position="top")], ONE)
    assert (moved["colour"], moved["shape"], moved["position"], moved["aligned"]) == (True, True, False, False)
    recoloured = judged([replace(RED_LEFT, colour="green", colour_words=("green",))], ONE)
    assert (recoloured["colour"], recoloured["shape"], recoloured["position"]) == (False, True, True)


def test_binding_needs_both_objects_right_and_applies_only_to_two_object_prompts():
    assert judged([RED_LEFT, BLUE_RIGHT], TWO) == {"binding": True, "aligned": True, "aligned_no_dot": True}
    swapped = [replace(RED_LEFT, colour="blue", colour_words=("blue",)),
               replace(BLUE_RIGHT, colour="red", colour_words=("red",))]
    assert judged(swapped, TWO)["binding"] is False  # the right colours on the wrong objects
    assert "binding" not in judged([RED_LEFT], ONE)


def test_the_dot_rule_separates_aligned_from_aligned_without_the_dot():
    dotted = judged([replace(RED_LEFT, dot=True)], ONE)  # the caption implies no dot
    assert dotted["aligned"] is False and dotted["aligned_no_dot"] is True


def test_rates_are_hits_over_images_with_the_wilson_interval():
    items = [{"colour": True, "aligned": True}, {"colour": False, "aligned": False}, {"colour": True, "aligned": False},
             {"binding": True, "aligned": True}]
    r = rates(items)
    assert (r["colour"]["hits"], r["colour"]["n"]) == (2, 3) and (r["aligned"]["hits"], r["aligned"]["n"]) == (2, 4)
    assert (r["colour"]["rate"], r["colour"]["low"], r["colour"]["high"]) == accuracy_interval(2, 3)
    assert "position" not in r  # no image of that category


def test_per_prompt_rates_average_the_images_of_each_prompt():
    items = [{"binding": True}, {"binding": False}, {"binding": True}, {"colour": True}]
    assert per_prompt_rates(items, [5, 5, 6, 7], "binding") == {5: 0.5, 6: 1.0}


def test_difference_is_paired_over_prompts_with_its_standard_error():
    arm, control = {0: 1.0, 1: 1.0, 2: 0.5, 3: 0.0}, {0: 0.0, 1: 1.0, 2: 0.0, 3: 0.0}
    d = difference(arm, control)
    diffs = torch.tensor([1.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    assert d["difference"] == pytest.approx(0.375)
    assert d["stderr"] == pytest.approx(float(diffs.std()) / 2)  # sd over 4 prompts / sqrt(4)


def test_recovered_is_the_arm_gain_over_the_truth_gain_with_a_bootstrap_interval():
    control = {p: 0.0 for p in range(40)}
    truth = {p: 1.0 if p % 2 == 0 else 0.0 for p in range(40)}  # gain 0.5
    arm = {p: 1.0 if p % 4 == 0 else 0.0 for p in range(40)}  # gain 0.25: half of it
    r = recovered(arm, control, truth, n_boot=500)
    assert r["recovered"] == pytest.approx(0.5) and r["truth_gain"] == pytest.approx(0.5)
    assert r["low"] < 0.5 < r["high"] and r["high"] <= 1.0  # the arm's successes are a subset of truth's
    assert recovered(truth, control, truth, n_boot=100)["low"] == pytest.approx(1.0)  # truth recovers all of itself


def test_recovered_has_no_value_without_a_truth_gain():
    same = {0: 0.5, 1: 0.5}
    assert recovered(same, same, same, n_boot=50)["recovered"] is None


def test_pairwise_distance_is_the_mean_rms_distance_over_pairs():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert pairwise_distance(torch.stack([a, b])) == pytest.approx(1.0)
    assert pairwise_distance(torch.stack([a, a, b])) == pytest.approx(2 / 3)  # pairs: 0, 1, 1
    assert within_prompt_distance(torch.stack([a, b, a, a]), [0, 0, 1, 1]) == pytest.approx(0.5)
    assert math.isnan(pairwise_distance(a[None]))


def test_distinct_readings_count_scenes_read_alike_once():
    keys = [reading_key(read_scene(render_scene(Scene(0, (o,))))) for o in (RED_LEFT, RED_LEFT, BLUE_RIGHT)]
    assert distinct_readings(keys) == pytest.approx(2 / 3)


def write_set(folder, scenes_and_prompts):
    """A selected set (selection.jsonl + PNGs) of rendered scenes with the given prompts."""
    folder.mkdir()
    lines = []
    for i, (objects, prompt) in enumerate(scenes_and_prompts):
        image = render_scene(Scene(0, tuple(objects)))
        arr = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / f"{i:06d}_000.png")
        lines.append(json.dumps({"id": i, "prompt": i, "candidate": 0, "file": f"{i:06d}_000.png", "caption": prompt}))
    (folder / "selection.jsonl").write_text("\n".join(lines) + "\n")


def test_the_scoring_stage_writes_categories_diversity_and_items_of_a_selected_set(tmp_path):
    write_set(tmp_path / "set", [([RED_LEFT], ONE), ([replace(RED_LEFT, position="top")], ONE),
                                 ([RED_LEFT, BLUE_RIGHT], TWO)])
    assert score_main(["--run", str(tmp_path / "set"), "--out", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["images"], s["prompts"]) == (3, 3)
    assert (s["categories"]["position"]["hits"], s["categories"]["position"]["n"]) == (1, 2)
    assert (s["categories"]["binding"]["hits"], s["categories"]["aligned"]["hits"]) == (1, 2)
    assert s["diversity"]["distinct_readings"] == 1.0 and [it["id"] for it in s["items"]] == [0, 1, 2]


def test_the_scoring_stage_refuses_a_prompt_outside_the_world_in_one_line(tmp_path, capsys):
    write_set(tmp_path / "set", [([RED_LEFT], "a photo of a cat")])
    assert score_main(["--run", str(tmp_path / "set"), "--out", str(tmp_path / "s.json")]) == 2
    assert "not in the world's vocabulary" in capsys.readouterr().err and not (tmp_path / "s.json").exists()
