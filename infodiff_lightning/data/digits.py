"""A second, real dataset: scikit-learn's handwritten digits (``load_digits``, 1797 images
of 8x8 pixels, 16 grey levels, from 43 writers) with captions that name the digit.

Images are scaled to [-1, 1] and enlarged by pixel repetition to ``image_size`` (16 by
default; the UNet needs two resolution levels); captions read "a handwritten seven".
Fixed splits by index (:data:`DIGIT_SPLITS`): train 0..1496, held out 1497..1796.
The dataset's MI is at most H(digit) = log 10 nats (ten roughly equiprobable classes, the
caption a function of the class): a model's measured MI must not exceed it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .datamodule import SplitCaptionData

__all__ = ["DIGIT_WORDS", "DIGIT_SPLITS", "DIGIT_VOCABULARY", "digit_caption", "CaptionedDigits", "CaptionedDigitsData"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SPLITS = {"train": (0, 1497), "heldout": (1497, 300), "all": (0, 1797)}
DIGIT_VOCABULARY = sorted({"a", "handwritten", *DIGIT_WORDS})


def digit_caption(label: int) -> str:
    """The caption of a digit: "a handwritten seven"."""
    return f"a handwritten {DIGIT_WORDS[int(label)]}"


def _load() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    return torch.from_numpy(d.images).float(), torch.from_numpy(d.target).long()


class CaptionedDigits(Dataset):
    """One split of the digits: items {"id" (index in load_digits), "image" (1, size, size)
    in [-1, 1], "caption", "label", "error"}."""

    def __init__(self, split: str = "train", image_size: int = 16, limit: int | None = None):
        if split not in DIGIT_SPLITS:
            raise ValueError(f"split must be one of {', '.join(DIGIT_SPLITS)}, got {split!r}")
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the digits are 8x8), got {image_size}")
        first, n = DIGIT_SPLITS[split]
        self.ids = range(first, first + (n if limit is None else min(limit, n)))
        self.split, self.image_size = split, image_size
        images, self.labels = _load()
        x = images[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
        self.images = F.interpolate(x, scale_factor=image_size // 8, mode="nearest")

    def __len__(self) -> int:
        return len(self.ids)

    def caption(self, i: int) -> str:
        return digit_caption(self.labels[self.ids[i]])

    def __getitem__(self, i: int) -> dict:
        k = self.ids[i]
        return {"id": k, "image": self.images[k], "caption": digit_caption(self.labels[k]),
                "label": int(self.labels[k]), "error": ""}


class CaptionedDigitsData(SplitCaptionData):
    """The digits for training (train split; the first held-out digits are the validation
    and probe items) and analysis (``test_split``: "heldout" by default, "train" or "all")."""

    name = "handwritten digits"

    def __init__(self, image_size: int = 16, batch_size: int = 64, seed: int = 0, num_workers: int = 0,
                 test_split: str = "heldout", limit_test: int | None = None, n_val: int = 64):
        super().__init__()
        self.save_hyperparameters()
        self.train_set = CaptionedDigits("train", image_size)
        self.val_set = CaptionedDigits("heldout", image_size, n_val)
        self.test_set = CaptionedDigits(test_split, image_size, limit_test)
