"""Word localization as an analysis job: how well each word's CMI map covers the pixels
the word describes (eq. LOC, localization.py).

For every (image, caption, word, mask) row the job measures io(x; w | caption without w)
with its per-pixel map through the shared measurement path, and records the map's IoU
with the mask at every threshold of :data:`~infodiff_lightning.localization.THRESHOLDS`
and the whole-image baseline (the mask's area). The threshold is chosen on the selection
rows (``data.selection_root``) as the one with the highest mean IoU there, or given
(``threshold``); the summary reports mean IoU on the evaluated rows at that threshold,
per word and over all, with standard errors, beside the whole-image baseline.

Records, resume, failures and the report are those of every analysis job. A row whose
word is not in its caption is a failed sample (named in failures.rank<k>.jsonl).
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..denoisers import load_text_to_image
from ..io import log_scalars
from ..localization import THRESHOLDS, iou, map_to_mask
from ..measurement import MeasurementSpec, measure_captions
from ..metrics.samples import SampleVectors
from .analysis_job import AnalysisJob, torch_dtype_of
from .protocols import LocalizationEvaluationData

__all__ = ["WordLocalization"]

ALL = "all"
SPLITS = ("eval", "selection")


class WordLocalization(AnalysisJob):
    """Mean IoU of per-word CMI maps against word masks.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        condition: how the word is removed ("delete", "placeholder", "mask").
        n_draws, seed: draws per image, keyed by (seed, row id).
        threshold: one of THRESHOLDS to use as given (None: chosen on the selection rows).
        microbatch, torch_dtype, fail_fast: as for CaptionAnalysis.
    """

    def __init__(self, pretrained: str, lora: str | None = None, condition: str = "delete", n_draws: int = 16,
                 seed: int = 0, threshold: float | None = None, microbatch: int = 64, torch_dtype: str | None = None,
                 fail_fast: bool = False):
        super().__init__(fail_fast=fail_fast)
        if threshold is not None and threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(map(str, THRESHOLDS))} (or null: chosen on "
                             f"data.selection_root), got {threshold}")
        self.spec_args = {"condition": condition, "n_draws": n_draws, "seed": seed, "maps": True,
                          "microbatch": microbatch}
        MeasurementSpec(("word",), **self.spec_args)  # validates condition, n_draws, microbatch now
        self.threshold = threshold
        self.denoiser = load_text_to_image(pretrained, lora, torch_dtype=torch_dtype_of(torch_dtype))
        self.metrics = torch.nn.ModuleDict()  # "<split>/<word>/<iou|whole|cmi>", made in setup

    def validate(self, datamodule: Any) -> None:
        if not isinstance(datamodule, LocalizationEvaluationData):
            raise ValueError("WordLocalization needs a datamodule of word masks (the LocalizationEvaluationData "
                             f"protocol, e.g. LocalizationData); got {type(datamodule).__name__}")
        if self.threshold is None and datamodule.selection_rows() == 0:
            raise ValueError("threshold: give one (e.g. 0.5) or data.selection_root, the rows it is chosen on")
        rank_zero_info(f"localizing {datamodule.describe_test_split()}")

    def setup(self, stage: str) -> None:
        self.denoiser.to(self.device)
        for split in SPLITS:  # every rank, same metrics, same order (DDP collectives)
            for word in [*self.trainer.datamodule.groups(), ALL]:
                for name, width in (("iou", len(THRESHOLDS)), ("whole", 1), ("cmi", 1)):
                    self.metrics[f"{split}/{word}/{name}"] = SampleVectors(width).to(self.device)

    def measure(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        records, missing = [], []
        for word in sorted({batch["word"][k] for k in keep}):
            ks = [k for k in keep if batch["word"][k] == word]
            kids = [int(batch["id"][k]) for k in ks]
            spec = MeasurementSpec((word,), **self.spec_args)
            res = measure_captions(self.denoiser, batch["image"][ks].to(self.device), kids,
                                   [batch["caption"][k] for k in ks], spec)
            est, present = res.cmi[word], res.present[word]
            masks = batch["mask"][ks].to(est.map.device)
            ious = torch.stack([iou(map_to_mask(est.map, t, masks.shape[-2:]), masks) for t in THRESHOLDS], 1)
            whole = masks.flatten(1).double().mean(1)
            for j, k in enumerate(ks):
                if not bool(present[j]):
                    missing.append({"id": kids[j], "error": f"word {word!r} is not in its caption {batch['caption'][k]!r}"})
                    continue
                records.append({"id": kids[j], "word": word, "split": batch["split"][k],
                                "cmi": float(est.value[j]), "cmi_stderr": float(est.stderr[j]),
                                "iou": ious[j].tolist(), "whole_image": float(whole[j])})
        if missing:
            self._fail(missing)
        self._update(records)
        return sorted(records, key=lambda r: r["id"])

    def _update(self, records: list[dict]) -> None:
        for r in records:
            for word in (r["word"], ALL):
                key = f"{r['split']}/{word}"
                self.metrics[f"{key}/iou"].update(torch.tensor([r["iou"]]), [r["id"]])
                self.metrics[f"{key}/whole"].update(torch.tensor([[r["whole_image"]]]), [r["id"]])
                self.metrics[f"{key}/cmi"].update(torch.tensor([[r["cmi"]]]), [r["id"]])

    def replay(self, records: list[dict]) -> None:
        self._update(records)

    def results(self) -> dict:
        # collectives: every rank, every metric, same order; torchmetrics squeezes width-1 results
        computed = {key: {**r, "mean": r["mean"].reshape(-1), "stderr": r["stderr"].reshape(-1)}
                    for key, r in ((k, m.compute()) for k, m in self.metrics.items())}
        if self.threshold is not None:
            t = THRESHOLDS.index(self.threshold)
            chosen_on = "given"
        else:
            sel = computed[f"selection/{ALL}/iou"]
            if sel["n"] == 0:
                raise ValueError("no selection row was measured: the threshold cannot be chosen")
            t = int(torch.argmax(sel["mean"]))
            chosen_on = f"{sel['n']} selection rows"
        out = {"localization/threshold": {"value": THRESHOLDS[t], "chosen_on": chosen_on}}
        for word in [*self.trainer.datamodule.groups(), ALL]:
            i, w, c = (computed[f"eval/{word}/{n}"] for n in ("iou", "whole", "cmi"))
            if i["n"]:
                out[f"localization/{word}"] = {"miou": float(i["mean"][t]), "stderr": float(i["stderr"][t]),
                                               "whole_image": float(w["mean"][0]), "whole_image_stderr":
                                               float(w["stderr"][0]), "cmi": float(c["mean"][0]), "n": i["n"]}
        log_scalars(self.trainer, {f"info/{k}/miou": v["miou"] for k, v in out.items() if "miou" in v}, step=0)
        return out

    def report_lines(self, results: dict) -> list[str]:
        thr = results["localization/threshold"]
        lines = [f"Threshold {thr['value']} ({thr['chosen_on']}); IoU of the thresholded CMI map with the word's mask.",
                 "", "| word | mIoU | stderr | whole image | CMI (nats) | rows |", "|---|---:|---:|---:|---:|---:|"]
        for key, r in results.items():
            if "miou" in r:
                lines.append(f"| {key.split('/', 1)[1]} | {r['miou']:.3f} | {r['stderr']:.3f} | "
                             f"{r['whole_image']:.3f} | {r['cmi']:.3f} | {r['n']} |")
        return lines
