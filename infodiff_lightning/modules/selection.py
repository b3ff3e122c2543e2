"""Selection by information as a job: score every candidate of a generation run by its
pointwise MI, then keep k per prompt by each rule, written as caption folders.

For each candidate x of prompt c (data/generated.py reads the generation run), the
project's pointwise MI io(x; c) (estimators.py, eq. 7: the null prompt against c, on
den.encode(x)) with its calibrated standard error, from draws keyed by the candidate's
id, with the model's default sampler; with a target (``target_stderr`` /
``target_relative``) each candidate draws rounds of ``n_draws`` until its standard error
meets it (adaptive.py). Records, resume, failures and DDP are those of every analysis
job.

After the loop, every rank holds every candidate's (prompt, candidate, MI, stderr,
trajectory score) in candidate-id order (one gather); the rules of
analyses/selection.py choose k per prompt, and rank zero writes, per rule,
``selected/<rule>/``: the chosen images copied from the generation run with their
``.txt`` captions (a caption folder that train.py's CaptionFolderData reads unchanged)
and ``selection.jsonl`` (one line per chosen candidate). Ties of ``mi_separated`` go to
``ties.jsonl`` and the summary.

The ``truth`` rule (the ceiling of issue #28) needs world prompts: each candidate is also
judged by the exact alignment scorer (analyses/world_alignment.py) and recorded with
``aligned`` and its ``truth_score`` (analyses/selection.py); the prompts where fewer than
k candidates are aligned go to ``truth_short.jsonl`` and the summary.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import torch

from ..adaptive import Precision
from ..analyses.selection import ON_TIE, RULES, candidate_mi, select, truth_score
from ..analyses.world_alignment import parse_prompt, score_alignment_batch
from ..io import json_line, log_scalars
from ..metrics.samples import SampleRows, mean_and_stderr
from .records import Field, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["CandidateSelection", "SELECTED_FOLDER"]

#: The selected sets inside the run folder: selected/<rule>/.
SELECTED_FOLDER = "selected"


class CandidateSelection(TextToImageJob):
    """Pointwise MI of every generated candidate and the selected sets (module doc).

    Args:
        pretrained: diffusers folder or hub id (the model that generated, or any other);
            lora: optional LoRA adapter folder.
        k: candidates kept per prompt by every rule (1: the argmax).
        rules: which rules write a folder (analyses/selection.py: mi, mi_separated,
            trajectory, random).
        on_tie: what mi_separated does with a tie: "random" (among the tied), "best"
            (the argmax anyway) or "drop" (leave the prompt out).
        truth_check_dot: whether the truth rule's alignment counts the world's centre dot
            (world_alignment.score_alignment's check_dot).
        n_draws, seed: (alpha, eps) draws per candidate, keyed by (seed, candidate id);
            with a target, the draws of each round.
        target_stderr, target_relative, max_draws: adaptive precision (adaptive.py).
        microbatch: denoiser inputs per call (None: the model's default).
        torch_dtype: e.g. "float16" on a GPU; fail_fast: stop at the first failed candidate.
    """

    def __init__(self, pretrained: str, lora: str | None = None, k: int = 1, rules: Sequence[str] = RULES,
                 on_tie: str = "random", n_draws: int = 32, seed: int = 0, target_stderr: float | None = None,
                 target_relative: float | None = None, max_draws: int = 256, microbatch: int | None = None,
                 truth_check_dot: bool = True, torch_dtype: str | None = None, fail_fast: bool = False):
        if k < 1:
            raise ValueError(f"k must be >= 1 (candidates kept per prompt), got {k}")
        rules = tuple(rules)
        unknown = [r for r in rules if r not in RULES]
        if unknown or not rules:
            raise ValueError(f"rules must name some of {', '.join(RULES)}, got {list(rules)}")
        if on_tie not in ON_TIE:
            raise ValueError(f"on_tie must be one of {', '.join(ON_TIE)}, got {on_tie!r}")
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 (a standard error needs them), got {n_draws}")
        if microbatch is not None and microbatch < 1:
            raise ValueError(f"microbatch must be >= 1 (or null: the model's default), got {microbatch}")
        self.precision = None
        if target_stderr is not None or target_relative is not None:
            self.precision = Precision(target_stderr, target_relative, min_draws=n_draws, round_draws=n_draws,
                                       max_draws=max_draws)
        super().__init__(pretrained, lora, torch_dtype, 0, fail_fast)
        self.k, self.rules, self.on_tie, self.n_draws, self.seed = k, rules, on_tie, n_draws, seed
        self.microbatch = microbatch
        self.truth, self.truth_check_dot = "truth" in rules, truth_check_dot
        self.rows = SampleRows(6)  # prompt, candidate, MI, its stderr, trajectory score, truth score (0 without truth)
        truth_fields = [Field("aligned", "flag"), Field("truth_score")] if self.truth else []
        self.schema = Schema([Field("prompt", "count"), Field("candidate", "count"), Field("caption", "text"),
                              Field("mi", stderr=True), Field("draws", "count"), Field("trajectory_score"),
                              *truth_fields])

    def check_data(self, datamodule) -> None:
        if not hasattr(datamodule, "candidates_per_prompt"):
            raise ValueError(f"CandidateSelection reads a generation run: use GeneratedCandidatesData, not "
                             f"{type(datamodule).__name__}")
        m = datamodule.candidates_per_prompt()
        if self.k > m:
            raise ValueError(f"k: {self.k} per prompt asked, but the generation run has {m} candidates per prompt")
        if self.truth:
            for caption in dict.fromkeys(datamodule.test_captions()):
                try:
                    parse_prompt(caption)
                except ValueError as e:
                    raise ValueError(f"rules: 'truth' needs world prompts (the exact alignment scorer reads only "
                                     f"the world's captions): {e}") from None

    def describe_run(self, datamodule) -> str:
        how = f"{self.n_draws} draws" if self.precision is None else f"adaptive draws (rounds of {self.n_draws})"
        return f"scoring {datamodule.describe_test_split()} by pointwise MI ({how}); keeping {self.k} per prompt"

    # ---- one batch ----------------------------------------------------------------
    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        captions = [batch["caption"][k] for k in keep]
        value, stderr, draws = candidate_mi(self.denoiser, batch["image"][keep].to(self.device), captions, ids,
                                            self.n_draws, self.seed, self.precision, self.microbatch)
        out = [{"id": i, "prompt": int(batch["prompt"][k]), "candidate": int(batch["candidate"][k]),
                "caption": captions[j], "mi": (float(value[j]), float(stderr[j])), "draws": int(draws[j]),
                "trajectory_score": float(batch["trajectory_score"][k])}
               for j, (i, k) in enumerate(zip(ids, keep))]
        if self.truth:  # the exact verdict, on the same pixels the MI was measured on
            verdicts = score_alignment_batch(batch["image"][keep], captions, self.truth_check_dot)
            for record, v in zip(out, verdicts):
                record.update(aligned=v["aligned"], truth_score=truth_score(v, self.truth_check_dot))
        return out

    def update_metrics(self, records: list[dict]) -> None:
        if records:
            self.rows.update(torch.tensor([[r["prompt"], r["candidate"], r["mi"], r["mi_stderr"],
                                            r["trajectory_score"], r.get("truth_score", 0.0)]
                                           for r in records], dtype=torch.float64),
                             [r["id"] for r in records])

    # ---- the selection ------------------------------------------------------------
    def results(self) -> dict:
        got = self.rows.compute()  # the one collective: every rank has every candidate, in id order
        ids = got["ids"].to(torch.long).reshape(-1).tolist()
        rows = got["values"].reshape(-1, 6)
        truth = rows[:, 5] if self.truth else None
        out: dict = {"k": self.k, "candidates": len(ids), "prompts": int(torch.unique(rows[:, 0]).numel()),
                     "rules": {}}
        ties: list[dict] = []
        for rule in self.rules:
            kept, rule_ties = select(rows[:, :5], rule, self.k, self.seed, self.on_tie, truth)
            mi_mean, mi_se = mean_and_stderr(rows[kept, 2]) if kept else (torch.tensor(float("nan")),) * 2
            tr_mean, _ = mean_and_stderr(rows[kept, 4]) if kept else (torch.tensor(float("nan")),) * 2
            out["rules"][rule] = {"images": len(kept), "mi": float(mi_mean), "mi_stderr": float(mi_se),
                                  "trajectory_score": float(tr_mean), "folder": f"{SELECTED_FOLDER}/{rule}"}
            if rule == "mi_separated":
                out["rules"][rule]["ties"] = len(rule_ties)
                ties = rule_ties
            if rule == "truth":
                out["rules"][rule]["short"] = len(rule_ties)  # prompts with fewer than k aligned candidates
                out["rules"][rule]["aligned_candidates"] = int((truth == 1).sum())
                if self.trainer.is_global_zero:
                    path = Path(self._out) / "truth_short.jsonl"
                    path.write_text("".join(json_line(t) for t in rule_ties))
                    os.chmod(path, 0o644)
            if self.trainer.is_global_zero:
                self._write_folder(rule, [ids[j] for j in kept], rows[kept, :5])
        if self.trainer.is_global_zero and "mi_separated" in self.rules:
            path = Path(self._out) / "ties.jsonl"
            path.write_text("".join(json_line(t) for t in ties))
            os.chmod(path, 0o644)
        log_scalars(self.trainer, {f"selection/{r}/mi": v["mi"] for r, v in out["rules"].items()}, step=0)
        return out

    def _write_folder(self, rule: str, ids: list[int], rows: torch.Tensor) -> None:
        """selected/<rule>/: the chosen images and captions, and selection.jsonl."""
        data = self.trainer.datamodule
        folder = Path(self._out) / SELECTED_FOLDER / rule
        if folder.exists():  # a rerun writes the whole selection again
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        lines = []
        for cid, row in zip(ids, rows.tolist()):
            record = data.record(cid)
            source = data.run / record["file"]
            shutil.copyfile(source, folder / source.name)
            (folder / source.with_suffix(".txt").name).write_text(record["caption"] + "\n")
            lines.append(json_line({"id": cid, "prompt": int(row[0]), "candidate": int(row[1]), "file": source.name,
                                    "caption": record["caption"], "mi": row[2], "mi_stderr": row[3],
                                    "trajectory_score": row[4]}))
        (folder / "selection.jsonl").write_text("".join(lines))

    def report_lines(self, results: dict) -> list[str]:
        lines = [f"{results['candidates']} candidates of {results['prompts']} prompts; {results['k']} kept per prompt.",
                 "", "| rule | images | mean MI (nats) | stderr | mean trajectory score | ties | folder |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for rule, r in results["rules"].items():
            lines.append(f"| {rule} | {r['images']} | {r['mi']:.4f} | {r['mi_stderr']:.4f} | "
                         f"{r['trajectory_score']:.4g} | {r.get('ties', '')} | `{r['folder']}/` |")
        lines += ["", "The trajectory score is MI-TUNE's ranking heuristic, not a calibrated MI."]
        if "truth" in results["rules"]:
            t = results["rules"]["truth"]
            lines += [f"truth: {t['aligned_candidates']} of {results['candidates']} candidates aligned; {t['short']} "
                      f"prompts had fewer than {results['k']} aligned (filled by the next best truth scores, "
                      "`truth_short.jsonl`)."]
        return lines
