"""The candidates of a generation run (modules/generation.py), as a datamodule.

``run`` is a generation job's run folder: its per-candidate records
(``per_image.rank*.jsonl``) name each candidate's image (relative to the run folder),
prompt id, candidate index, caption and trajectory score. Items are {"id" (the
candidate id of the record), "image" (3, S, S) in [-1, 1], "caption", "prompt",
"candidate", "trajectory_score", "error"}; an unreadable image is an item with its
"error" set (the job records it and goes on). The run must have finished
(status.json "complete" or "complete_with_failures"): a selection over a part of the
candidates would compare prompts with different numbers of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..io import read_records
from .caption_folder import load_image
from .loaders import evaluation_loader

__all__ = ["GeneratedCandidates", "GeneratedCandidatesData", "generation_records"]

FINISHED = ("complete", "complete_with_failures")


def generation_records(run: str | Path) -> list[dict]:
    """The candidate records of a finished generation run, in candidate-id order."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"generation run {run} does not exist")
    status_file = run / "status.json"
    status = json.loads(status_file.read_text()).get("status") if status_file.is_file() else None
    if status not in FINISHED:
        raise ValueError(f"generation run {run} is not finished (status {status!r}); run its command again to "
                         "complete it")
    records = sorted(read_records(run, "per_image"), key=lambda r: r["id"])
    if not records or not {"prompt", "candidate", "file", "trajectory_score"} <= set(records[0]):
        raise ValueError(f"{run} holds no generation records (per_image.rank*.jsonl of a Generation job)")
    return records


class GeneratedCandidates(Dataset):
    """Items of the candidates of a generation run (see the module doc)."""

    def __init__(self, run: str | Path, image_size: int):
        self.run, self.image_size = Path(run), image_size
        self.records = generation_records(run)
        self.ids = [int(r["id"]) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def caption(self, i: int) -> str:
        return self.records[i]["caption"]

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        item = {"id": int(r["id"]), "caption": r["caption"], "prompt": int(r["prompt"]),
                "candidate": int(r["candidate"]), "trajectory_score": float(r["trajectory_score"]), "error": ""}
        try:
            item["image"] = load_image(self.run / r["file"], self.image_size)
        except (ValueError, OSError) as e:
            item.update(image=torch.zeros(3, self.image_size, self.image_size), error=str(e))
        return item


class GeneratedCandidatesData(L.LightningDataModule):
    """The candidates of generation run ``run`` for a selection job. ``image_size``: the
    size the images are read at (null: their own size, that of the first image)."""

    def __init__(self, run: str, image_size: int | None = None, batch_size: int = 16, num_workers: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        if image_size is None:
            from PIL import Image

            with Image.open(Path(run) / generation_records(run)[0]["file"]) as first:
                image_size = min(first.size)
        self.test_set = GeneratedCandidates(run, image_size)
        self.run = Path(run)

    def candidates_per_prompt(self) -> int:
        """M: the candidates per prompt of the generation run."""
        return max(int(r["candidate"]) for r in self.test_set.records) + 1

    def record(self, candidate_id: int) -> dict:
        """The generation record of a candidate."""
        if not hasattr(self, "_by_id"):
            self._by_id = {int(r["id"]): r for r in self.test_set.records}
        return self._by_id[int(candidate_id)]

    def test_captions(self) -> list[str | None]:
        return [r["caption"] for r in self.test_set.records]

    def describe_test_split(self) -> str:
        return f"{len(self.test_set)} candidates of {self.run}"

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers)
