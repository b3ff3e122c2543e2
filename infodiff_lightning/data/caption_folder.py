"""A folder of captioned images: ``name.png|jpg|jpeg|webp|bmp`` with ``name.txt`` beside it,
or with one table of captions (``captions``: a JSONL file of {"file_name", "caption"}
objects, or a CSV file with those columns; file names relative to the folder).

Images are resized (shorter side) and centre-cropped to ``image_size`` and scaled to
[-1, 1]; any PIL mode converts (alpha is dropped, grey is repeated over three channels,
16-bit and float images are scaled from their full range). Sample ids are the positions
in the sorted file list (or the table's rows), so they are stable across runs and ranks.
A malformed table is an error naming the file, the line and the field.

Two ways to meet a bad sample (unreadable or corrupt image, no caption file, empty
caption): ``strict=True`` (training) raises an error naming the file; ``strict=False``
(evaluation) returns the item with a zero image, an empty caption and ``"error"`` set to
the reason, so that an analysis job records it and goes on. Every item has an
``"error"`` key ("" when the item is fine).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .datamodule import SplitCaptionData
from .rows import RowError, inside, read_table, read_text, some_usable

__all__ = ["CaptionFolder", "CaptionFolderData", "load_image", "fit_mask", "read_caption_table", "TEST_SPLITS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Which items an analysis job measures: every item, or the held-out (probe) split.
TEST_SPLITS = ("all", "heldout")


def _to_rgb(img):
    """A PIL image of any mode as 8-bit RGB (see the module doc)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        full = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / full * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def _resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``size`` (load_image and fit_mask agree)."""
    s = size / min(w, h)
    return max(size, round(w * s)), max(size, round(h * s))


def load_image(path: str | Path, size: int, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """(3, size, size) float in [-1, 1]: crop to ``box`` (x, y, width, height in pixels) if
    given, resize the shorter side, centre crop."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()
            img = _to_rgb(opened)
    except Exception as e:  # PIL raises several types; name the file in one clear error
        raise ValueError(f"cannot read image {Path(path).name}: {type(e).__name__}: {e}") from e
    if box is not None:
        x, y, bw, bh = box
        if bw < 1 or bh < 1:
            raise ValueError(f"{Path(path).name}: box {list(box)} is empty")
        img = img.crop((round(x), round(y), round(x + bw), round(y + bh)))
    img = img.resize(_resized_size(*img.size, size), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return arr / 127.5 - 1.0


def fit_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A (h, w) bool mask through the geometry of :func:`load_image` (shorter side to
    ``size``, nearest neighbour, centre crop), so it stays aligned with its image."""
    import torch.nn.functional as F

    h, w = mask.shape
    new_w, new_h = _resized_size(w, h, size)
    big = F.interpolate(mask.float()[None, None], size=(new_h, new_w), mode="nearest")[0, 0]
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return big[top:top + size, left:left + size].bool()


def read_caption(image_path: Path) -> str:
    """The caption beside an image (name.txt), stripped; a ValueError if missing or empty."""
    txt = image_path.with_suffix(".txt")
    if not txt.is_file():
        raise ValueError(f"{image_path.name} has no caption file {txt.name}")
    try:
        caption = read_text(txt).strip()
    except OSError as e:
        raise ValueError(f"cannot read {txt.name}: {e.strerror or e}") from None
    if not caption:
        raise ValueError(f"{txt.name} is empty: no caption to measure")
    return caption


TABLE_FIELDS = ("file_name", "caption")


def read_caption_table(path: str | Path) -> list[tuple[str, str]]:
    """(file name, caption) rows of a JSONL or CSV caption table, in file order; the first
    unusable row raises a ValueError naming the file, line and field (for training, where
    every row is needed; evaluation reads rows one by one, :class:`CaptionFolder`)."""
    rows = read_table(path, TABLE_FIELDS)
    bad = [r["error"] for r in rows if r["error"]]
    if bad:
        raise ValueError(bad[0] + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""))
    return [(row["file_name"], row["caption"]) for row in rows]


class CaptionFolder(Dataset):
    """Items {"id", "image", "caption", "error"} of a caption folder (see the module doc)."""

    def __init__(self, root: str | Path, image_size: int = 512, strict: bool = True,
                 captions: str | Path | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"caption folder {root} does not exist")
        self.table: list[str | None] | None = None
        self.row_errors: list[str] | None = None  # per table row: why it cannot be used ("" if it can)
        if captions is not None:
            self._read_table(root, Path(captions))
            bad = [e for e in self.row_errors if e]
            if strict and bad:
                raise ValueError(bad[0] + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""))
            absent = [p.name for p in self.files if p is not None and not p.is_file()]
            if strict and absent:
                raise ValueError(f"{len(absent)} images named in {Path(captions).name} are not in {root}, "
                                 f"e.g. {absent[:3]}")
        else:
            self.files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
        if strict and self.table is None:
            missing = [p.name for p in self.files if not p.with_suffix(".txt").exists()]
            if missing:
                raise ValueError(f"{len(missing)} images in {root} have no caption file (.txt beside them), "
                                 f"e.g. {missing[:3]}")
        self.image_size, self.strict = image_size, strict

    def _read_table(self, root: Path, captions: Path) -> None:
        """Rows of the caption table: each row's path inside ``root`` and its caption, or
        why the row cannot be used (the other rows can)."""
        self.files, self.table, self.row_errors = [], [], []
        for row in read_table(captions, TABLE_FIELDS):
            error, path = row["error"], None
            if not error:
                try:
                    path = inside(root, row["file_name"], "file_name")
                except RowError as e:
                    error = f"{captions.name} line {row['line']}: {e}"
            self.files.append(path)
            self.table.append(None if error else row["caption"])
            self.row_errors.append(error)
        some_usable(self.row_errors, captions.name)

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, i: int) -> str | None:
        """The caption of item i, or None where it has none (cheap: no image is read)."""
        if self.table is not None:
            return self.table[i]
        try:
            return read_caption(self.files[i])
        except ValueError:
            return None

    def __getitem__(self, i: int) -> dict:
        p = self.files[i]
        try:
            if self.row_errors is not None and self.row_errors[i]:
                raise ValueError(self.row_errors[i])
            caption = self.table[i] if self.table is not None else read_caption(p)
            if not p.is_file():
                raise ValueError(f"{p.name} does not exist")
            return {"id": i, "image": load_image(p, self.image_size), "caption": caption, "error": ""}
        except ValueError as e:
            if self.strict:
                raise
            return {"id": i, "image": torch.zeros(3, self.image_size, self.image_size), "caption": "",
                    "error": str(e)}


class CaptionFolderData(SplitCaptionData):
    """A caption folder for fine-tuning and analysis (``captions``: an optional JSONL / CSV
    table of file names and captions instead of .txt files).

    Fine-tuning trains on all but the last ``n_probe`` items; those are the validation and
    probe items. An analysis job (``test_dataloader``) measures every item by default
    (``test_split="all"``), or only the held-out ones (``"heldout"``); there, unreadable
    items are recorded as failures instead of stopping the job.
    """

    probe_option = "n_probe"

    def __init__(self, root: str, image_size: int = 512, batch_size: int = 4, n_probe: int = 8, num_workers: int = 2,
                 seed: int = 0, test_split: str = "all", captions: str | None = None):
        super().__init__()
        if test_split not in TEST_SPLITS:
            raise ValueError(f"test_split must be one of {', '.join(TEST_SPLITS)}, got {test_split!r}")
        self.save_hyperparameters()
        self.root = root
        self._train_data: CaptionFolder | None = None
        self.test_set = CaptionFolder(root, image_size, strict=False, captions=captions)
        if test_split == "heldout":
            n = len(self.test_set)
            self.test_set = Subset(self.test_set, range(max(0, n - n_probe), n))

    def _strict(self) -> tuple[Subset, Subset]:
        if self._train_data is None:  # built on first use: analysis jobs never need it
            data = CaptionFolder(self.root, self.hparams.image_size, strict=True, captions=self.hparams.captions)
            n, n_probe = len(data), self.hparams.n_probe
            if n <= n_probe:
                raise ValueError(f"{self.root} has {n} items; need more than n_probe={n_probe}")
            self._train_data = (Subset(data, range(n - n_probe)), Subset(data, range(n - n_probe, n)))
        return self._train_data

    @property
    def train_set(self) -> Subset:
        return self._strict()[0]

    @property
    def val_set(self) -> Subset:
        return self._strict()[1]

    def describe_test_split(self) -> str:
        return f"{len(self.test_set)} images of {self.root} (test_split={self.hparams.test_split})"
