"""The world in the real benchmarks' layouts: COCO RLE masks, ARO-style swaps, order perturbations."""
import json
from pathlib import Path

import torch

from infodiff_lightning.data.caption_folder import load_image
from infodiff_lightning.data.world import CaptionedWorld, render_scene, sample_scene, split_ids, word_masks
from infodiff_lightning.data.coco import coco_mask
from infodiff_lightning.data.world_export import export_world, load_localization, rle_encode


def test_rle_round_trips_and_counts_column_major_from_a_zero_run():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 1] = mask[2, 3] = True
    rle = rle_encode(mask)
    # column-major pixels: col0 = 000, col1 = 110, col2 = 000, col3 = 001 -> runs 3,2,6,1
    assert rle == {"size": [3, 4], "counts": [3, 2, 6, 1]}
    assert torch.equal(coco_mask(rle, *mask.shape), mask)


def test_an_exported_split_is_read_back_as_the_scenes_it_came_from(tmp_path):
    folder = export_world(tmp_path / "world", "heldout", n=40)
    rows = load_localization(folder)
    first = split_ids("heldout")[0]
    scene = sample_scene(first)
    mine = [r for r in rows if r[0].endswith(f"images/{first}.png")]
    assert {r[2] for r in mine} == set(word_masks(scene))
    for path, caption, word, mask in mine:
        assert caption == scene.caption and torch.equal(mask, word_masks(scene)[word])
    # 8-bit PNG: the image read back is the rendered one to within half a grey level
    assert (load_image(mine[0][0], 32) - render_scene(scene)).abs().max() <= 1 / 127.5 + 1e-6


def test_swap_files_hold_true_and_false_captions_of_two_object_scenes(tmp_path):
    folder = export_world(tmp_path / "world", "heldout", n=40)
    attribution = json.loads((folder / "vg_attribution.json").read_text())
    relation = json.loads((folder / "vg_relation.json").read_text())
    order = json.loads((folder / "coco_order.json").read_text())
    assert attribution and relation and len(order) == 40
    for row in attribution + relation:
        assert " and " in row["true_caption"] and row["false_caption"] != row["true_caption"]
        assert sorted(row["false_caption"].split()) == sorted(row["true_caption"].split())
        assert {"bbox_x", "bbox_y", "bbox_w", "bbox_h", "image_path"} <= set(row)
    assert all(p != o["caption"] for o in order for p in o["perturbed"])


def test_a_shifted_split_is_written_as_the_shifted_scenes_with_only_the_words_asked_for(tmp_path):
    folder = export_world(tmp_path / "world", "threshold", n=30, shift="shape", p_shift=1.0, new_word="lovely",
                          words=["lovely", "red"])
    shifted = CaptionedWorld("threshold", 32, limit=30, shift="shape", p_shift=1.0, new_word="lovely")
    rows = load_localization(folder)
    assert {r[2] for r in rows} == {"lovely", "red"}
    by_image = {f"{shifted.scene(i).id}.png": shifted.scene(i) for i in range(len(shifted))}
    for path, caption, word, mask in rows:
        scene = by_image[Path(path).name]
        assert caption == scene.caption and word in caption.split()
        assert torch.equal(mask, word_masks(scene)[word])
    assert "cross" not in " ".join(r[1] for r in rows).split()  # every cross is called lovely
