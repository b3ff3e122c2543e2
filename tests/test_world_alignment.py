"""The world alignment scorer, against the world's renderer (the truth of what an image
shows) and against hand verdicts on images of the bundled model."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.world_alignment_validation import mismatches, perturbed_render, read_exactly
from infodiff_lightning.analyses.world_alignment import (ALL_SHAPES, PURITY, SHAPE_FIT, ObjectClaim, judge_reading, parse_prompt,
                                                         read_scene, score_alignment, score_alignment_batch)
from infodiff_lightning.data.world import (COLOURS, POSITIONS_ONE, SIZES, Scene, WorldObject, attribute_swap,
                                           object_mask, render_scene, sample_scene, split_ids)
from infodiff_lightning.draws import id_generator

DATA = Path(__file__).resolve().parent / "data"


def one(shape="square", colour="red", size="big", position="left", dot=False) -> Scene:
    return Scene(0, (WorldObject(shape, colour, size, position, (colour,), dot=dot),))


def two(a: WorldObject, b: WorldObject) -> Scene:
    return Scene(0, (replace(a, position="left"), replace(b, position="right")))


# ----------------------------------------------------------------------------- the caption

def test_a_caption_claims_shape_colour_size_position_and_the_dot_of_exactly_one_xor_word():
    assert parse_prompt("a lovely big wavy scarlet red cross on the left") == (
        ObjectClaim("cross", "red", "left", "big", True),)
    assert parse_prompt("a small wavy spotted green square on the top")[0].dot is False  # both words: no dot
    assert parse_prompt("a small green square on the top")[0].dot is False


def test_bat_is_the_bar_after_baseball_and_the_vee_after_cave():
    assert parse_prompt("a big blue baseball bat on the left")[0].shape == "bar"
    assert parse_prompt("a small scarlet cave bat on the bottom")[0] == ObjectClaim("vee", "red", "bottom", "small", False)


def test_two_objects_are_claimed_in_caption_order_and_an_unsaid_size_is_none():
    a, b = parse_prompt("a red square on the left and a nice big yellow circle on the right")
    assert a == ObjectClaim("square", "red", "left", None, False)
    assert b == ObjectClaim("circle", "yellow", "right", "big", False)


def test_every_held_out_caption_parses_to_the_scene_it_describes():
    for i in split_ids("heldout"):
        scene = sample_scene(i)
        claims = parse_prompt(scene.caption)
        assert [(c.shape, c.colour, c.position, c.size, c.dot) for c in claims] == [
            (o.shape, o.colour, o.position, o.size, o.dot) for o in scene.objects], scene.caption


@pytest.mark.parametrize("prompt, says", [
    ("a big purple square on the left", "not in the world's vocabulary"),
    ("a big red on the left", "exactly one shape word"),
    ("a big red bat on the left", "'bat' needs exactly one"),
    ("a big red cave square on the left", "'bat' needs exactly one"),
    ("a big red blue square on the left", "exactly one colour"),
    ("a big red square", "exactly one position"),
    ("a big small red square on the left", "two sizes"),
    ("a red square on the top and a blue circle on the bottom", "left and right"),
    ("a red square on the left and a blue circle on the right and a red cross on the top", "one or two"),
    ("", "non-empty"),
])
def test_a_caption_the_templates_cannot_make_is_refused_with_the_reason(prompt, says):
    with pytest.raises(ValueError, match=says):
        parse_prompt(prompt)


# ----------------------------------------------------------------------------- the image

def test_every_single_object_the_world_draws_is_read_exactly_from_its_render(one_thread):
    # all 4 slots x 6 shapes x 2 sizes x dot, each colour at least 12 times
    k = 0
    for position in POSITIONS_ONE:
        for shape in ALL_SHAPES:
            for size in SIZES:
                for dot in (False, True):
                    scene = one(shape, list(COLOURS)[k % 4], size, position, dot)
                    k += 1
                    assert read_exactly(read_scene(render_scene(scene)), scene), scene


def test_two_objects_left_and_right_are_both_read(one_thread):
    for k, (sa, sb) in enumerate(zip(ALL_SHAPES, reversed(ALL_SHAPES))):
        a = WorldObject(sa, list(COLOURS)[k % 4], SIZES[k % 2], "left")
        b = WorldObject(sb, list(COLOURS)[(k + 1) % 4], SIZES[(k + 1) % 2], "right")
        assert read_exactly(read_scene(render_scene(two(a, b))), two(a, b))


def test_renders_at_16_and_24_px_are_read_as_at_32(one_thread):
    # the templates are drawn at the image's own size, as the world draws its scenes (below
    # 24 px the dot is one pixel)
    for size in (16, 24):
        for i in list(split_ids("heldout"))[:20]:
            scene = sample_scene(i)
            assert read_exactly(read_scene(render_scene(scene, size)), scene), (size, scene.caption)


def test_an_empty_image_shows_nothing_and_the_claimed_object_is_absent(one_thread):
    verdict = score_alignment(render_scene(Scene(0, ())), "a big red square on the left")
    assert read_scene(render_scene(Scene(0, ()))) == []
    assert verdict["objects"][0]["present"] is False and verdict["aligned"] is False


# ----------------------------------------------------------------------------- the verdict

def test_the_caption_of_a_render_is_aligned_and_each_attribute_holds(one_thread):
    scene = sample_scene(20500)
    verdict = score_alignment(render_scene(scene), scene.caption)
    assert verdict["aligned"] and all(verdict[a] for a in ("present", "colour", "shape", "position", "size", "dot"))


def test_swapped_colours_fail_the_colour_of_both_objects_and_nothing_else(one_thread):
    a, b = WorldObject("square", "red", "big", "left", ("red",)), WorldObject("circle", "blue", "small", "right", ("blue",))
    scene = two(a, b)
    verdict = score_alignment(render_scene(scene), attribute_swap(scene))
    assert [o["colour"] for o in verdict["objects"]] == [False, False]
    assert verdict["shape"] and verdict["position"] and verdict["size"] and not verdict["aligned"]


def test_an_object_drawn_elsewhere_fails_only_its_position(one_thread):
    verdict = score_alignment(render_scene(one(position="top")), "a big red square on the left")
    assert verdict["objects"][0]["position"] is False
    assert verdict["colour"] and verdict["shape"] and verdict["size"] and not verdict["aligned"]


def test_an_object_the_caption_does_not_name_is_extra_and_not_aligned(one_thread):
    scene = two(WorldObject("square", "red", "big", "left"), WorldObject("cross", "green", "small", "right"))
    verdict = score_alignment(render_scene(scene), "a big red square on the left")
    assert verdict["objects"][0]["correct"] and len(verdict["extra"]) == 1 and not verdict["aligned"]
    assert verdict["extra"][0]["shape"] == "cross"


def test_an_object_at_the_centre_where_no_caption_puts_one_is_read_there(one_thread):
    image = render_scene(Scene(0, ()))
    image[:, torch.roll(object_mask(WorldObject("triangle", "blue", "small", "left"), 32), 8, 1)] = torch.tensor(
        COLOURS["blue"])[:, None]  # the left slot moved 8 px right: the image centre
    seen = read_scene(image)
    assert [(s.position, s.shape, s.colour, s.size) for s in seen] == [("centre", "triangle", "blue", "small")]
    assert not score_alignment(image, "a small blue triangle on the left")["aligned"]


def test_the_dot_counts_unless_check_dot_is_off(one_thread):
    image = render_scene(one())  # no dot, but "wavy" alone says the world draws one
    prompt = "a big wavy red square on the left"
    assert score_alignment(image, prompt)["aligned"] is False
    loose = score_alignment(image, prompt, check_dot=False)
    assert loose["aligned"] is True and loose["dot"] is False  # reported either way


def test_a_caption_without_a_size_is_aligned_at_either_size(one_thread):
    for size in SIZES:
        verdict = score_alignment(render_scene(one(size=size)), "a red square on the left")
        assert verdict["aligned"] and verdict["size"] is None


def test_a_shape_the_world_does_not_draw_is_not_its_nearest_template(one_thread):
    image = render_scene(one("square", "green", "big", "right"))  # rows 10-22, columns 18-30
    image[:, 6:10, 18:31] = torch.tensor(COLOURS["green"])[:, None, None]  # now 13 wide, 17 tall
    (seen,) = read_scene(image)
    assert seen.shape == "square" and seen.fit < SHAPE_FIT  # 169 / 221 = 0.76 at the best offset
    verdict = score_alignment(image, "a big green square on the right")
    assert verdict["colour"] and verdict["position"] and not verdict["shape"] and not verdict["aligned"]


def test_an_object_in_two_colours_keeps_its_shape_but_not_its_colour(one_thread):
    image = render_scene(one("square", "red", "big"))
    image[:, 16:, :] = torch.where(image[:, 16:, :] == torch.tensor(COLOURS["red"])[:, None, None],
                                   torch.tensor(COLOURS["blue"])[:, None, None], image[:, 16:, :])
    (seen,) = read_scene(image)  # the lower 7 of 13 rows blue: purity 6/13, below PURITY
    assert seen.shape == "square" and seen.purity < PURITY
    verdict = score_alignment(image, "a big red square on the left")
    assert verdict["shape"] and not verdict["colour"]


def test_the_batch_form_gives_the_verdicts_of_one_at_a_time(one_thread):
    scenes = [sample_scene(i) for i in range(20500, 20504)]
    images = torch.stack([render_scene(s) for s in scenes])
    prompts = [s.caption for s in scenes[::-1]]
    assert score_alignment_batch(images, prompts) == [score_alignment(im, p) for im, p in zip(images, prompts)]


def test_bad_images_and_batches_are_refused_in_one_line(one_thread):
    with pytest.raises(ValueError, match="square"):
        score_alignment(torch.zeros(3, 32, 16), "a big red square on the left")
    with pytest.raises(ValueError, match="non-finite"):
        score_alignment(torch.full((3, 32, 32), float("nan")), "a big red square on the left")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        score_alignment_batch(torch.zeros(2, 3, 32, 32), ["a big red square on the left"])


# ----------------------------------------------------------------------------- validation

def test_held_out_scenes_perturbed_and_noised_are_aligned_and_their_mismatches_are_not(one_thread):
    # The first 200 held-out scenes, each object moved up to 2 px, its colour up to 0.2 per
    # channel, the background tinted, plus noise of sd 0.3 (the generated images' backgrounds
    # show sd 0.02-0.14). The full run (docs/world_alignment.md) reads all 1000 exactly at
    # this level; 99% of 200 allows 2 misses.
    aligned = rejected = negatives = 0
    for i in list(split_ids("heldout"))[:200]:
        scene = sample_scene(i)
        image = perturbed_render(scene, id_generator(0, i), 0.3)
        seen = read_scene(image)  # one reading for the caption and its mismatches
        aligned += judge_reading(seen, scene.caption)["aligned"]
        for captions in mismatches(scene).values():
            for caption in captions:
                negatives += 1
                rejected += not judge_reading(seen, caption)["aligned"]
    assert aligned >= 198 and rejected >= 0.99 * negatives, (aligned, rejected, negatives)


# ----------------------------------------------------------------------------- hand check

def _hand():
    doc = json.loads((DATA / "world_alignment_handcheck.json").read_text())
    for row in doc["images"]:
        pixels = torch.from_numpy(np.array(Image.open(DATA / "handcheck" / row["file"]))).float()
        yield row, pixels.permute(2, 0, 1) / 127.5 - 1


def test_the_scorer_agrees_with_every_hand_verdict_on_generated_images(one_thread):
    # 24 images of models/world on held-out captions, judged by eye before the scorer saw
    # them: 2 fully aligned, 7 aligned when the dot is left out.
    rows = list(_hand())
    assert len(rows) == 24
    for row, image in rows:
        assert score_alignment(image, row["caption"])["aligned"] == row["aligned"], row["file"]
        assert score_alignment(image, row["caption"], check_dot=False)["aligned"] == row["aligned_without_dot"], row["file"]


def test_the_scorer_reads_the_objects_the_hand_check_saw(one_thread):
    # All 35 objects: the same slot, size and dot; the same shape, "other" (no world shape:
    # a 13 x 17 and a 7 x 9 rectangle) where the fit is below SHAPE_FIT; the same colour,
    # "mixed" where the purity is below PURITY (a square half green, half blue).
    n = 0
    for row, image in _hand():
        seen = {s.position: s for s in read_scene(image)}
        assert sorted(seen) == sorted(o["position"] for o in row["seen"]), row["file"]
        for o in row["seen"]:
            s = seen[o["position"]]
            shape = s.shape if s.fit >= SHAPE_FIT else "other"
            colour = s.colour if s.purity >= PURITY else "mixed"
            assert (shape, colour, s.size, s.dot) == (o["shape"], o["colour"], o["size"], o["dot"]), (row["file"], s)
            n += 1
    assert n == 35
