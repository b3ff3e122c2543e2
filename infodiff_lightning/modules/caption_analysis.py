"""Standalone analysis of a pretrained (or fine-tuned) text-to-image model on captioned images.

For every image of the datamodule's test split: io(x; caption), io(x; w | rest) for each
tracked word present in the caption, and the conditional PID (redundancy, unique,
synergy) of each tracked word pair, with standard errors. Per-image rows are appended
to ``per_image.rank<k>.jsonl`` as they are computed (nothing is lost if the job dies; a
failing batch is recorded in ``failures.rank<k>.jsonl`` and the job goes on). Dataset
means go to ``summary.json`` and TensorBoard, with heat-map overlays of the CMI maps and
of the four PID maps for the first images.
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from ..contrasts import caption_contrasts
from ..draws import draws_for_ids
from ..estimators import Estimate, default_sampler
from ..io import json_line, run_dir, write_json_atomic
from ..metrics import PointwiseInformation
from ..pid import PID_TERMS
from ..viz import overlay

__all__ = ["CaptionAnalysis", "load_text_to_image"]


def load_text_to_image(pretrained: str, lora: str | None = None, **kw):
    """The adapter for a diffusers folder or hub id: latent if it has a vae/, else pixel."""
    from ..denoisers import LatentDiffusionDenoiser, PixelTextDenoiser

    local = Path(pretrained)
    cls = PixelTextDenoiser if local.is_dir() and not (local / "vae").is_dir() else LatentDiffusionDenoiser
    denoiser = cls.from_pretrained(pretrained, **kw)
    if lora is not None:
        denoiser.load_lora(lora)
    return denoiser


class CaptionAnalysis(L.LightningModule):
    """MI / CMI / conditional PID of a text-to-image model over a captioned dataset.

    Args:
        pretrained: diffusers folder or hub id (a fine-tuned export works the same way).
        lora: optional LoRA adapter folder saved by the fine-tuning module (unet_lora/).
        words: words whose CMI is measured; pairs: word pairs whose conditional PID is measured.
        condition: how words are removed: "delete", "placeholder" or "mask".
        n_draws: (alpha, eps) draws per image (keyed by image id and seed).
        maps: compute per-pixel maps (needed for overlays); log_images: overlays for this many images.
        microbatch: denoiser inputs per call; torch_dtype: e.g. "float16" on a GPU.
    """

    def __init__(self, pretrained: str, lora: str | None = None, words: Sequence[str] = (),
                 pairs: Sequence[Sequence[str]] = (), condition: str = "delete", n_draws: int = 32, seed: int = 0,
                 maps: bool = True, log_images: int = 4, microbatch: int = 64, torch_dtype: str | None = None):
        super().__init__()
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 for a standard error, got {n_draws}")
        if condition not in ("delete", "placeholder", "mask"):
            raise ValueError(f"condition must be 'delete', 'placeholder' or 'mask', got {condition!r}")
        self.words, self.pairs = list(words), [tuple(p) for p in pairs]
        if any(len(p) != 2 for p in self.pairs):
            raise ValueError(f"pairs must be pairs of words, got {self.pairs}")
        self.condition, self.n_draws, self.seed = condition, n_draws, seed
        self.maps, self.log_images, self.microbatch = maps, log_images, microbatch
        dtype = getattr(torch, torch_dtype) if torch_dtype else None
        self.denoiser = load_text_to_image(pretrained, lora, torch_dtype=dtype)
        names = ["mi"] + [f"cmi/{w}" for w in self.words] + \
            [f"pid/{w1}+{w2}/{t}" for w1, w2 in self.pairs for t in PID_TERMS]
        self.info = torch.nn.ModuleDict({n.replace("/", "__").replace("+", "_and_"): PointwiseInformation() for n in names})
        self._names = names
        self._logged_images = 0

    def _metric(self, name: str) -> PointwiseInformation:
        return self.info[name.replace("/", "__").replace("+", "_and_")]

    def setup(self, stage: str) -> None:
        self.denoiser.to(self.device)
        self._out = run_dir(self.trainer)  # a broadcast: every rank asks

    def test_step(self, batch, batch_idx: int) -> None:
        ids = [int(i) for i in batch["id"]]
        try:
            self._analyse(batch, ids)
        except Exception as e:  # record and go on: one bad batch must not lose the job
            self._append("failures", [{"ids": ids, "error": f"{type(e).__name__}: {e}",
                                       "traceback": traceback.format_exc(limit=3)}])

    def _analyse(self, batch, ids: list[int]) -> None:
        images, captions = batch["image"], list(batch["caption"])
        d = self.denoiser
        x = d.encode(images.to(self.device), ids=ids)
        draws = draws_for_ids(ids, self.n_draws, tuple(x.shape[1:]), default_sampler(d), self.seed)
        res = caption_contrasts(d, x, captions, self.words, self.pairs, tokenizer=d.tokenizer, method=self.condition,
                                draws=draws, maps=self.maps, microbatch=self.microbatch)
        self._metric("mi").update(res.mi)
        rows = [{"id": i, "caption": c, "mi": float(res.mi.value[k]), "mi_stderr": float(res.mi.stderr[k])}
                for k, (i, c) in enumerate(zip(ids, captions))]
        for w, est in res.cmi.items():
            has = res.present[w]
            if bool(has.any()):
                self._metric(f"cmi/{w}").update(Estimate(est.value[has], est.stderr[has], est.n_evals))
            for k, row in enumerate(rows):
                if bool(has[k]):
                    row[f"cmi/{w}"], row[f"cmi/{w}_stderr"] = float(est.value[k]), float(est.stderr[k])
        for (w1, w2), pid in res.pid.items():
            has = res.present[(w1, w2)]
            for term, e in zip(PID_TERMS, pid.terms()):
                if bool(has.any()):
                    self._metric(f"pid/{w1}+{w2}/{term}").update(Estimate(e.value[has], e.stderr[has], e.n_evals))
                for k, row in enumerate(rows):
                    if bool(has[k]):
                        row[f"pid/{w1}+{w2}/{term}"] = float(e.value[k])
                        row[f"pid/{w1}+{w2}/{term}_stderr"] = float(e.stderr[k])
        self._append("per_image", rows)
        if self.trainer.is_global_zero and self.maps:
            self._overlays(images, res)

    def _append(self, stem: str, rows: list[dict]) -> None:
        path = Path(self._out) / f"{stem}.rank{self.trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for r in rows:
                f.write(json_line(r))
            f.flush()

    def _overlays(self, images, res) -> None:
        exp = getattr(self.logger, "experiment", None)
        if exp is None or not hasattr(exp, "add_image"):
            return
        for k in range(images.shape[0]):
            if self._logged_images >= self.log_images:
                return
            n = self._logged_images
            exp.add_image(f"maps/{n}/mi", overlay(images[k], res.mi.map[k]), 0)
            for w, est in res.cmi.items():
                if bool(res.present[w][k]):
                    exp.add_image(f"maps/{n}/cmi/{w}", overlay(images[k], est.map[k]), 0)
            for (w1, w2), pid in res.pid.items():
                if bool(res.present[(w1, w2)][k]):
                    for term, e in zip(PID_TERMS, pid.terms()):
                        exp.add_image(f"maps/{n}/pid/{w1}+{w2}/{term}", overlay(images[k], e.map[k]), 0)
            self._logged_images += 1

    def on_test_epoch_end(self) -> None:
        summary = {}
        for name in self._names:
            try:
                r = self._metric(name).compute()  # a collective: every rank calls it for every name
            except ValueError:  # no image had this word (the synced count is zero on every rank)
                continue
            summary[name] = {"mean": float(r["mean"]), "stderr": float(r["stderr"]), "images": int(r["count"])}
            self.log(f"info/{name}/value", summary[name]["mean"], sync_dist=True)
            self.log(f"info/{name}/stderr", summary[name]["stderr"], sync_dist=True)
        if self.trainer.is_global_zero:
            write_json_atomic(Path(self._out) / "summary.json", summary)
            lines = [f"{n:<40}{v['mean']:>10.4f} +- {v['stderr']:.4f}  ({v['images']} images)" for n, v in summary.items()]
            rank_zero_info("\n".join(lines) + f"\nresults in {self._out}")
