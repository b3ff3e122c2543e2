"""Prompts without images (data/prompts.py): what a generation job generates from."""
import pytest

from infodiff_lightning.data import PromptData
from infodiff_lightning.data.world import sample_scene, split_ids


def test_a_prompt_file_s_ids_are_its_line_numbers_blank_lines_skipped(tmp_path):
    (tmp_path / "p.txt").write_text("a red square\n\n  a blue circle  \n")
    data = PromptData(prompts=str(tmp_path / "p.txt"))
    assert [data.test_set[i] for i in range(2)] == [{"id": 0, "caption": "a red square", "error": ""},
                                                    {"id": 2, "caption": "a blue circle", "error": ""}]


def test_world_prompts_are_the_captions_of_the_split_s_scenes_keyed_by_scene_id():
    data = PromptData(world_split="heldout", limit=3)
    first = split_ids("heldout")[0]
    assert [data.test_set[i]["id"] for i in range(3)] == [first, first + 1, first + 2]
    assert data.test_captions()[0] == sample_scene(first).caption


def test_unique_world_prompts_keep_one_scene_per_caption():
    every = PromptData(world_split="threshold").test_captions()
    unique = PromptData(world_split="threshold", unique=True).test_captions()
    assert sorted(unique) == sorted(set(every)) and len(unique) < len(every)  # the world repeats its simple captions


@pytest.mark.parametrize("kw, message", [({}, "either prompts"), ({"prompts": "p.txt", "world_split": "heldout"},
                                                                  "either prompts"),
                                          ({"world_split": "heldout", "limit": 0}, "limit must be >= 1")])
def test_a_prompt_source_must_be_one_and_well_formed(kw, message):
    with pytest.raises(ValueError, match=message):
        PromptData(**kw)


def test_a_blank_prompt_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "p.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompt"):
        PromptData(prompts=str(tmp_path / "p.txt"))
