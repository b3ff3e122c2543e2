"""The digits dataset: real handwritten digits with captions that name them."""
from pathlib import Path

import pytest
import torch
import yaml

from infodiff_lightning.data.digits import (DIGIT_SPLITS, DIGIT_VOCABULARY, DIGIT_WORDS, CaptionedDigits,
                                            CaptionedDigitsData)

ROOT = Path(__file__).resolve().parents[1]


def test_each_caption_names_its_digit_and_images_span_minus_one_to_one():
    data = CaptionedDigits("heldout")
    for i in range(0, len(data), 37):
        item = data[i]
        assert item["caption"] == f"a handwritten {DIGIT_WORDS[item['label']]}"
        assert item["image"].shape == (1, 16, 16)
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0  # grey levels 0 and 16


def test_enlarging_repeats_pixels_so_every_2x2_block_is_one_original_pixel():
    image = CaptionedDigits("train")[5]["image"][0]
    assert torch.equal(image[0::2, 0::2], image[1::2, 1::2])


def test_train_and_heldout_are_disjoint_and_cover_the_dataset():
    train, held = set(CaptionedDigits("train").ids), set(CaptionedDigits("heldout").ids)
    assert not train & held and len(train | held) == DIGIT_SPLITS["all"][1] == 1797


def test_all_ten_digits_are_in_the_heldout_split_in_near_equal_numbers():
    labels = torch.tensor([CaptionedDigits("heldout")[i]["label"] for i in range(300)])
    counts = torch.bincount(labels, minlength=10)
    assert int(counts.min()) >= 20  # 30 each on average; H(digit) is close to log 10


def test_the_bundled_digits_config_has_the_caption_vocabulary():
    config = yaml.safe_load((ROOT / "configs/train/digits.yaml").read_text())
    assert sorted(config["model"]["init_args"]["scratch"]["words"]) == DIGIT_VOCABULARY


def test_a_bad_split_or_size_is_named():
    with pytest.raises(ValueError, match="split must be one of train, heldout, all"):
        CaptionedDigits("test")
    with pytest.raises(ValueError, match="multiple of 8"):
        CaptionedDigits("train", image_size=12)


def test_the_datamodule_measures_the_heldout_split_by_default():
    dm = CaptionedDigitsData()
    assert dm.describe_test_split() == "300 handwritten digits, ids 1497..1796 (test_split=heldout)"
    assert len(dm.probe_items(8)) == 8


def test_the_bundled_digits_model_names_held_out_digits_by_their_most_informative_caption():
    # models/digits, loaded as a user loads it, ranks the ten captions of 40 held-out digits
    # by pointwise MI (standard estimator, 8 draws shared by the captions). On all 300 with
    # 16 draws it is right 85.7% of the time; chance is 10%, so 24 of 40 (60%) fails only a
    # model that did not learn the digits (or a loading path that lost its weights).
    from infodiff_lightning.data.digits import digit_caption
    from infodiff_lightning.denoisers import load_text_to_image
    from infodiff_lightning.analyses.ranking import PREDICTION_ESTIMATOR, score_candidates
    from infodiff_lightning.analyses.statistics import correct

    denoiser = load_text_to_image(str(ROOT / "models/digits"))
    data = CaptionedDigits("heldout", limit=40)
    items = [data[i] for i in range(len(data))]
    candidates = [digit_caption(k) for k in range(len(DIGIT_WORDS))]
    scores = score_candidates(denoiser, torch.stack([it["image"] for it in items]), [it["id"] for it in items],
                              [candidates] * len(items), n_draws=8, microbatch=512)
    hits = int(correct(scores.value[PREDICTION_ESTIMATOR], [it["label"] for it in items]).sum())
    assert hits >= 24, f"{hits} of 40 held-out digits named correctly"
