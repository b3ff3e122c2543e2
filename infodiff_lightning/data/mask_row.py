"""One word-localization row (image, caption, word, where its mask is), whichever layout it
was read from (data/localization_files.py, data/coco_it.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .coco import union_mask

__all__ = ["MaskRow"]


@dataclass(frozen=True)
class MaskRow:
    """One localization row; the mask is decoded when the item is read. ``segmentations``
    (COCO, with the image's height and width) or ``mask_file`` (an image) says where it is."""

    image: Path
    caption: str
    word: str
    segmentations: tuple = ()
    height: int = 0
    width: int = 0
    mask_file: Path | None = None
    split: str = "eval"
    error: str = ""  # why the row cannot be used ("" if it can): recorded as its failure

    def mask(self) -> torch.Tensor:
        """The (height, width) bool mask of the word, at the image file's resolution."""
        if self.mask_file is not None:
            from PIL import Image

            try:
                with Image.open(self.mask_file) as m:
                    mask = torch.from_numpy(np.asarray(m.convert("L")) > 0)
                with Image.open(self.image) as im:
                    width, height = im.size
            except Exception as e:  # PIL raises several types; one message naming the file
                raise ValueError(f"cannot read mask {self.mask_file.name} or its image: {type(e).__name__}: {e}") from e
            if tuple(mask.shape) != (height, width):
                raise ValueError(f"mask {self.mask_file.name} is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"its image {self.image.name} {width}x{height}")
            return mask
        return union_mask(list(self.segmentations), self.height, self.width)
