"""The truth rule (analyses/selection.py, modules/selection.py): the ceiling of issue #28,
tested on candidates planted with the world's renderer, whose alignment is known."""
from dataclasses import replace

import pytest
import torch

from infodiff_lightning.analyses.selection import select, truth_k, truth_score
from infodiff_lightning.analyses.world_alignment import score_alignment
from infodiff_lightning.data.world import Scene, WorldObject, render_scene

PROMPT = "a big red square on the left"
SCENE = Scene(0, (WorldObject("square", "red", "big", "left", ("red",)),))


def planted(kind: str) -> torch.Tensor:
    """A render of PROMPT's scene ("aligned") or of a scene wrong in one or two attributes."""
    obj = SCENE.objects[0]
    wrong = {"aligned": obj, "colour": replace(obj, colour="blue", colour_words=("blue",)),
             "colour+shape": replace(obj, colour="blue", colour_words=("blue",), shape="circle")}[kind]
    return render_scene(Scene(0, (wrong,)))


def test_truth_score_is_one_exactly_on_the_aligned_render_and_falls_with_each_wrong_attribute():
    scores = {k: truth_score(score_alignment(planted(k), PROMPT)) for k in ("aligned", "colour", "colour+shape")}
    # checks: present, colour, shape, position, size, dot, nothing extra = 7
    assert scores == {"aligned": 1.0, "colour": 6 / 7, "colour+shape": 5 / 7}


def test_truth_score_without_the_dot_leaves_the_dot_check_out():
    verdict = score_alignment(render_scene(Scene(0, (replace(SCENE.objects[0], dot=True),))), PROMPT)
    assert truth_score(verdict) == 6 / 7  # a dot the caption does not imply fails only the dot check
    assert truth_score(score_alignment(render_scene(Scene(0, (replace(SCENE.objects[0], dot=True),))), PROMPT,
                                       check_dot=False), check_dot=False) == 1.0


def rows_and_truth(kinds_per_prompt: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, candidate, MI, stderr, trajectory) rows whose MI and trajectory prefer the
    *last* candidate (so a truth choice cannot come from them), and the truth scores of the
    planted renders."""
    rows, truth = [], []
    for p, kinds in enumerate(kinds_per_prompt):
        for m, kind in enumerate(kinds):
            rows.append([p, m, float(m), 0.1, float(m)])
            truth.append(truth_score(score_alignment(planted(kind), PROMPT)))
    return torch.tensor(rows, dtype=torch.float64), torch.tensor(truth, dtype=torch.float64)


def test_truth_keeps_the_aligned_candidate_whatever_mi_and_trajectory_prefer():
    rows, truth = rows_and_truth([["colour", "aligned", "colour+shape"], ["aligned", "colour", "colour"]])
    kept, short = select(rows, "truth", 1, truth=truth)
    assert [(int(rows[i, 0]), int(rows[i, 1])) for i in kept] == [(0, 1), (1, 0)] and short == []
    assert select(rows, "mi", 1)[0] != kept  # the planted MI points elsewhere


def test_truth_picks_at_random_among_several_aligned_and_repeats_with_the_seed():
    rows, truth = rows_and_truth([["aligned", "colour", "aligned", "aligned"]])
    picks = {select(rows, "truth", 1, seed=s, truth=truth)[0][0] for s in range(30)}
    assert picks == {0, 2, 3}  # every aligned candidate, never the wrong one
    assert select(rows, "truth", 1, seed=7, truth=truth) == select(rows, "truth", 1, seed=7, truth=truth)


def test_without_an_aligned_candidate_truth_keeps_the_best_truth_score_and_reports_the_prompt():
    rows, truth = rows_and_truth([["colour+shape", "colour", "colour+shape"]])
    kept, short = select(rows, "truth", 1, truth=truth)
    assert kept == [1]  # 6/7 of the checks beat 5/7
    assert short == [{"prompt": 0, "aligned": 0, "chosen": [1]}]


def test_truth_k_fills_from_the_next_level_when_fewer_than_k_are_aligned():
    sel = truth_k(torch.tensor([1.0, 0.5, 0.8, 0.8, 0.2]), 3, torch.Generator().manual_seed(0))
    assert 0 in sel.chosen and len(sel.chosen) == 3 and set(sel.chosen) <= {0, 2, 3}


def test_truth_without_scores_is_refused_in_one_line():
    rows, _ = rows_and_truth([["aligned", "colour"]])
    with pytest.raises(ValueError, match="truth rule needs each candidate's truth score"):
        select(rows, "truth", 1)


class _NotWorld:
    """A generation run's datamodule whose prompts are not world captions."""

    def candidates_per_prompt(self):
        return 2

    def test_captions(self):
        return ["a photo of a cat", "a photo of a cat"]


def test_the_truth_rule_refuses_prompts_outside_the_world_before_anything_is_measured():
    from infodiff_lightning.modules.selection import CandidateSelection

    job = CandidateSelection("models/world", rules=["random", "truth"])
    with pytest.raises(ValueError, match="'truth' needs world prompts.*'photo'"):
        job.check_data(_NotWorld())
    CandidateSelection("models/world", rules=["random"]).check_data(_NotWorld())  # other rules take any prompt
