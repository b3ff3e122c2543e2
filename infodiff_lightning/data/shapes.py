"""A small generated captioned dataset: coloured shapes at named positions.

Item i is drawn from a generator keyed by (seed, i), so the dataset needs no files and
is the same on every machine and rank. Captions follow one template,
"a <colour> <shape> on the <position>", and every caption word is visible in the image
(colour -> pixel values, shape -> outline, position -> location), so the information
of each word is non-zero for a model that learned the data.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..draws import id_generator
from .caption_folder import TEST_SPLITS
from .datamodule import SplitCaptionData

__all__ = ["COLOURS", "SHAPES", "POSITIONS", "CaptionedShapes", "CaptionedShapesData", "render_shape"]

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0), "yellow": (1.0, 1.0, -1.0)}
SHAPES = ("square", "circle", "cross")
POSITIONS = ("left", "right", "top", "bottom")


def render_shape(colour: str, shape: str, position: str, size: int, jitter: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A (3, size, size) image in [-1, 1]: grey background, the shape in its half."""
    img = torch.full((3, size, size), -0.6)
    r = max(2, size // 5)
    cy, cx = {"left": (size // 2, size // 4), "right": (size // 2, 3 * size // 4),
              "top": (size // 4, size // 2), "bottom": (3 * size // 4, size // 2)}[position]
    cy, cx = cy + jitter[0], cx + jitter[1]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    if shape == "square":
        mask = (dy <= r) & (dx <= r)
    elif shape == "circle":
        mask = (dy**2 + dx**2) <= r**2
    elif shape == "cross":
        mask = ((dy <= r) & (dx <= r // 3)) | ((dx <= r) & (dy <= r // 3))
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    img[:, mask] = torch.tensor(COLOURS[colour])[:, None]
    return img


class CaptionedShapes(Dataset):
    """``n`` items {"id", "image" (3, size, size) in [-1, 1], "caption"}; ids start at ``offset``."""

    def __init__(self, n: int = 512, size: int = 16, seed: int = 0, offset: int = 0):
        if n < 1 or size < 8:
            raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
        self.n, self.size, self.seed, self.offset = n, size, seed, offset

    @property
    def ids(self) -> range:
        return range(self.offset, self.offset + self.n)

    @property
    def vocabulary(self) -> list[str]:
        return ["a", "on", "the", *COLOURS, *SHAPES, *POSITIONS]

    def __len__(self) -> int:
        return self.n

    def _labels(self, i: int) -> tuple[str, str, str, torch.Generator]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = id_generator(self.seed, self.offset + i)
        c = list(COLOURS)[int(torch.randint(len(COLOURS), (), generator=g))]
        s = SHAPES[int(torch.randint(len(SHAPES), (), generator=g))]
        p = POSITIONS[int(torch.randint(len(POSITIONS), (), generator=g))]
        return c, s, p, g

    def caption(self, i: int) -> str:
        """The caption of item i (cheap: nothing is rendered)."""
        c, s, p, _ = self._labels(i)
        return f"a {c} {s} on the {p}"

    def __getitem__(self, i: int) -> dict:
        c, s, p, g = self._labels(i)
        j = torch.randint(-1, 2, (2,), generator=g).tolist()
        return {"id": self.offset + i, "image": render_shape(c, s, p, self.size, tuple(j)),
                "caption": f"a {c} {s} on the {p}", "error": ""}


class CaptionedShapesData(SplitCaptionData):
    """Train / validation splits of :class:`CaptionedShapes` and a fixed probe set.

    The probe set (first ``probe_size`` validation items) is what the
    InformationMonitor measures at every evaluation. An analysis job measures the held-out
    validation items (``test_split="heldout"``, the default: ids n_train .. n_train +
    n_val - 1, which a model trained on this data never saw) or every item (``"all"``).
    """

    name = "generated shapes"

    def __init__(self, n_train: int = 512, n_val: int = 64, image_size: int = 16, batch_size: int = 32,
                 seed: int = 0, num_workers: int = 0, test_split: str = "heldout"):
        super().__init__()
        if test_split not in TEST_SPLITS:
            raise ValueError(f"test_split must be one of {', '.join(TEST_SPLITS)}, got {test_split!r}")
        self.save_hyperparameters()
        self.train_set = CaptionedShapes(n_train, image_size, seed, offset=0)
        self.val_set = CaptionedShapes(n_val, image_size, seed, offset=n_train)
        self.test_set = self.val_set if test_split == "heldout" else CaptionedShapes(n_train + n_val, image_size, seed)

    @property
    def vocabulary(self) -> list[str]:
        return self.train_set.vocabulary
