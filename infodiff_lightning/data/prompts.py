"""Prompts without images: what a generation job (modules/generation.py) generates from.

Two sources, one of them per datamodule:

- ``prompts``: a text file, one caption per line (UTF-8). A prompt's id is its line
  number counted from 0, so ids stay put when lines elsewhere change; blank lines are
  skipped (their numbers are not used).
- ``world_split``: the captions of the embedded world's scenes of a split ("train",
  "threshold", "heldout"; data/world.py). A prompt's id is its scene id, so a world
  scorer can look up the scene a prompt came from. ``unseen`` keeps only captions that no
  training scene has (the prompts a model trained on the world never read); ``unique``
  keeps one prompt per distinct caption (its first scene).

``limit`` keeps the first prompts (after the filters). Items are {"id", "caption",
"error"} ("" for every prompt here); the test split is every prompt, each measured once
across devices. Any captioned datamodule of this package (CaptionedWorldData,
CaptionFolderData) serves a generation job as well: it reads only the ids and captions.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from .loaders import evaluation_loader
from .rows import read_text
from .world import sample_scene, split_ids

__all__ = ["PromptList", "PromptData", "read_prompt_file", "world_prompts"]


def read_prompt_file(path: str | Path) -> list[tuple[int, str]]:
    """(line number from 0, caption) of every non-blank line of a prompt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    rows = [(k, line.strip()) for k, line in enumerate(read_text(path).splitlines()) if line.strip()]
    if not rows:
        raise ValueError(f"prompt file {path} holds no prompt (every line is blank)")
    return rows


def world_prompts(split: str, seed: int = 0, unseen: bool = False, unique: bool = False) -> list[tuple[int, str]]:
    """(scene id, caption) of the world's scenes of ``split`` (see the module doc)."""
    rows = [(i, sample_scene(i, seed).caption) for i in split_ids(split)]
    if unseen:
        seen = _train_captions(seed)
        rows = [(i, c) for i, c in rows if c not in seen]
    if unique:
        first: dict[str, int] = {}
        for i, c in rows:
            first.setdefault(c, i)
        rows = [(i, c) for c, i in first.items()]
    if not rows:
        raise ValueError(f"no world prompts left in split {split!r} (unseen={unseen}, unique={unique})")
    return rows


@lru_cache(maxsize=2)
def _train_captions(seed: int) -> frozenset[str]:
    """Every caption of the world's training scenes (20000 scenes: about 10 s, once per process)."""
    return frozenset(sample_scene(i, seed).caption for i in split_ids("train"))


class PromptList(Dataset):
    """Items {"id", "caption", "error"} of (id, caption) rows."""

    def __init__(self, rows: list[tuple[int, str]]):
        self.rows = rows
        self.ids = [i for i, _ in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, i: int) -> str:
        return self.rows[i][1]

    def __getitem__(self, i: int) -> dict:
        pid, caption = self.rows[i]
        return {"id": pid, "caption": caption, "error": ""}


class PromptData(L.LightningDataModule):
    """Prompts to generate from: a prompt file or the world's captions of a split (module doc)."""

    def __init__(self, prompts: str | None = None, world_split: str | None = None, unseen: bool = False,
                 unique: bool = False, limit: int | None = None, seed: int = 0, batch_size: int = 4,
                 num_workers: int = 0):
        super().__init__()
        if (prompts is None) == (world_split is None):
            raise ValueError("PromptData: give either prompts (a text file, one caption per line) or world_split "
                             "(the world's captions of a split), not both or neither")
        if prompts is not None and (unseen or unique):
            raise ValueError("PromptData: unseen and unique apply to world_split, not to a prompt file")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (or null: every prompt), got {limit}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        rows = read_prompt_file(prompts) if prompts is not None else world_prompts(world_split, seed, unseen, unique)
        self.test_set = PromptList(rows[:limit])

    def test_captions(self) -> list[str | None]:
        return [c for _, c in self.test_set.rows]

    def describe_test_split(self) -> str:
        hp = self.hparams
        where = hp.prompts if hp.prompts is not None else (
            f"world split {hp.world_split}" + (", unseen in training" if hp.unseen else "")
            + (", unique" if hp.unique else ""))
        return f"{len(self.test_set)} prompts of {where}"

    def test_dataloader(self) -> DataLoader:
        """The prompts, each exactly once across devices."""
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers)
