"""Localization of information maps against planted masks (eq. LOC)."""
import pytest
import torch

from infodiff_lightning.denoisers import DenoiserBase
from infodiff_lightning.analyses.localization import (choose_threshold, collect_word_maps, iou, localization, map_to_mask,
                                             mean_iou, whole_image_iou)
from infodiff_lightning.measurement import MeasurementSpec


def square_masks(n: int = 6, size: int = 16) -> torch.Tensor:
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for k in range(n):
        masks[k, k:k + 5, 2 * k % 10:2 * k % 10 + 5] = True
    return masks


def test_a_map_that_is_the_mask_plus_weak_noise_localizes_perfectly_at_the_chosen_threshold():
    # Map = 3 + noise on the mask, noise in [0, 1) elsewhere: scaled to its maximum (< 4),
    # mask pixels are >= 3/4 and the others < 1/3, so some thresholds separate exactly and
    # the chosen one gives IoU 1; thresholds above 3/4 would cut into the mask.
    masks = square_masks()
    maps = masks.double() * 3 + torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    tau = choose_threshold(maps, masks)
    assert tau <= 0.75
    assert mean_iou(maps, masks, tau)[0] == pytest.approx(1.0)
    assert mean_iou(maps, masks, 0.95)[0] < 1.0


def test_a_map_that_knows_nothing_does_no_better_than_the_whole_image():
    # A constant map gives the whole image at any threshold: IoU = the mask's area (25/256).
    masks = square_masks()
    flat = torch.ones(masks.shape, dtype=torch.float64)
    assert mean_iou(flat, masks, 0.5)[0] == pytest.approx(whole_image_iou(masks)[0])
    assert whole_image_iou(masks)[0] == pytest.approx(25 / 256)


def test_iou_counts_intersection_over_union():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    assert float(iou(a, b)) == pytest.approx(4 / 12)


def test_small_maps_are_resized_to_the_mask_before_thresholding():
    info = torch.zeros(1, 4, 4)
    info[0, :2, :2] = 1.0  # the top-left quarter
    mask = map_to_mask(info, 0.5, (16, 16))
    assert mask.shape == (1, 16, 16) and bool(mask[0, 0, 0]) and not bool(mask[0, 15, 15])


class RegionWords(DenoiserBase):
    """A captioned denoiser whose prediction changes only inside a word's region: "top"
    adds a bump to the top half, "left" to the left half. The orthogonal CMI map of a word
    is ||eps_hat(.|caption) - eps_hat(.|caption without the word)||^2 per pixel, so it is
    non-zero exactly on that word's region: localization must be perfect (IoU 1)."""

    tokenizer = None  # words are split on white space
    REGIONS = {"top": (slice(0, 4), slice(None)), "left": (slice(None), slice(0, 4))}

    def null_conditions(self, n):
        return [""] * n

    def eps_hat(self, x_alpha, alpha, conditions):
        out = 0.5 * x_alpha * torch.sigmoid(-alpha).view(-1, 1, 1, 1)
        for k, caption in enumerate(conditions):
            for word, region in self.REGIONS.items():
                if word in caption.split():
                    out[k, :, region[0], region[1]] += 1.0
        return out


def region_masks(item):
    masks = {}
    for word, region in RegionWords.REGIONS.items():
        m = torch.zeros(8, 8, dtype=torch.bool)
        m[region] = True
        masks[word] = m
    return {w: m for w, m in masks.items() if w in item["caption"].split()}


def test_collected_maps_of_words_that_change_only_their_region_localize_perfectly():
    captions = ["a top thing", "a left thing", "a top left thing", "a thing"] * 2
    items = [{"id": i, "image": torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(i)), "caption": c}
             for i, c in enumerate(captions)]
    spec = MeasurementSpec(("top", "left"), n_draws=4, maps=True)
    selection = collect_word_maps(RegionWords(), items[:4], region_masks, spec, batch_size=3)
    heldout = collect_word_maps(RegionWords(), items[4:], region_masks, spec, batch_size=3)
    assert [len(heldout.maps[w]) for w in ("top", "left")] == [2, 2]  # the captions that hold each word
    assert heldout.summary["cmi/top"]["images"] == 2
    result = localization(selection, heldout, ["top", "left"])
    assert result["miou"][0] == pytest.approx(1.0) and result["maps"] == 4
    assert result["whole_image"][0] == pytest.approx(0.5)  # each region is half the image
