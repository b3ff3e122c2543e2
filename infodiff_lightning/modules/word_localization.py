"""Word localization as an analysis job: how well each word's CMI map covers the pixels
the word describes (eq. LOC, localization.py).

For every (image, caption, word, mask) row the job measures io(x; w | caption without w)
with its per-pixel map through the shared measurement path, and records the map's IoU
with the mask at every threshold of :data:`~infodiff_lightning.analyses.localization.THRESHOLDS`
and the whole-image baseline (the mask's area). The threshold is chosen on the selection
rows (``data.selection_root``) as the one with the highest mean IoU there, or given
(``threshold``); the summary reports mean IoU on the evaluated rows at that threshold,
per word, per word type (``word_types``: named lists of words, e.g. colours and shapes;
``localization/type/<name>``) and over all, with standard errors, beside the whole-image
baseline.

With ``attention_steps`` > 0 two baselines are measured on the same rows: the word's
cross-attention map (DAAM, attention_maps.py eq. ATT, scaled to [0, 1] by its minimum and
maximum as DAAM thresholds it) and the product of attention and
CMI maps; each method's threshold is chosen on the selection rows on its own. Beside
each method's held-out mIoU the summary also gives, labelled as such, its best mIoU
over thresholds swept on the evaluated rows themselves (what the reference papers
report; optimistic, as the threshold has seen the answers).

The first ``log_images`` rows measured (rank zero) are drawn: image, true mask, and each
method's map with the mask's outline (figures/ and TensorBoard ``localization/<n>/<word>``).

Records, resume, failures and the report are those of every analysis job. A row whose
word is not in its caption is a failed sample (named in failures.rank<k>.jsonl).
"""
from __future__ import annotations

import torch

from ..analyses.attention_maps import attention_times_information, daam_normalised, word_attention
from ..contrasts import cmi_tag, unmeasurable_word
from ..io import log_scalars
from ..analyses.localization import THRESHOLDS, iou, map_to_mask, miou_at, select_threshold
from ..measurement import MeasurementSpec, measure_captions
from ..metrics.samples import SampleVectors
from ..protocols import LocalizationEvaluationData
from ..runs.viz import localization_figure
from .records import Field, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["WordLocalization"]

ALL = "all"
TYPE = "type"  # the summary key of a word type: localization/type/<name>
SPLITS = ("eval", "selection")
#: The maps whose IoU is measured: the word's CMI map, and with attention_steps the baselines.
METHODS = ("cmi", "attention", "attention_x_cmi")


def _iou_key(method: str) -> str:
    """The record field of a method's IoUs (one per threshold): "iou" for the CMI map."""
    return "iou" if method == "cmi" else f"iou_{method}"


class WordLocalization(TextToImageJob):
    """Mean IoU of per-word CMI maps against word masks.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        condition: how the word is removed ("delete", "placeholder", "mask").
        n_draws, seed: draws per image, keyed by (seed, row id); with a target, per round.
        target_stderr, target_relative, max_draws: adaptive precision of each row (as for
            CaptionAnalysis, but only the word's CMI is watched: the caption's MI is not
            measured); the record says how many draws the row took.
        threshold: one of THRESHOLDS to use as given (None: chosen on the selection rows).
        word_types: {type name: [words]}: each type's rows pooled (a word may be in several types).
        attention_steps: noise levels of the cross-attention baseline (0: no baseline).
        log_images: rows drawn as figures (image, mask, maps).
        microbatch, torch_dtype, fail_fast: as for CaptionAnalysis.
    """

    data_protocol, data_example = LocalizationEvaluationData, "LocalizationData"

    def __init__(self, pretrained: str, lora: str | None = None, condition: str = "delete", n_draws: int = 16,
                 seed: int = 0, threshold: float | None = None, word_types: dict[str, list[str]] | None = None,
                 attention_steps: int = 0, log_images: int = 4, microbatch: int | None = None,
                 torch_dtype: str | None = None, fail_fast: bool = False, target_stderr: float | None = None,
                 target_relative: float | None = None, max_draws: int = 256):
        for name, words in (word_types or {}).items():
            if not name or "/" in name or not words or not all(isinstance(w, str) and w for w in words):
                raise ValueError(f"word_types: {name!r} must name a non-empty list of words (and hold no '/'), "
                                 f"got {words!r}")
        if threshold is not None and threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(map(str, THRESHOLDS))} (or null: chosen on "
                             f"data.selection_root), got {threshold}")
        # mi off: the job reads only the word's CMI and its map, so the caption's MI (a null
        # column, one more denoiser input per draw, and under a target one more quantity to
        # wait for) is not measured
        spec_args = {"condition": condition, "n_draws": n_draws, "seed": seed, "maps": True, "microbatch": microbatch,
                     "target_stderr": target_stderr, "target_relative": target_relative, "max_draws": max_draws,
                     "mi": False}
        MeasurementSpec(("word",), **spec_args)  # validates condition, draws and targets, microbatch now
        super().__init__(pretrained, lora, torch_dtype, log_images, fail_fast)
        self.word_types = {f"{TYPE}/{name}": frozenset(words) for name, words in (word_types or {}).items()}
        self.spec_args, self.threshold = spec_args, threshold
        self.attention_steps = self.check_attention(attention_steps)
        self.methods = METHODS if attention_steps else METHODS[:1]
        self.metrics = torch.nn.ModuleDict()  # "<split>/<word>/<iou_<method>|whole|cmi>", made in setup
        # per row: its word and split, the word's CMI, each method's IoU at every threshold, the mask's area
        self.schema = Schema([Field("word", "text"), Field("split", "text"), Field("draws", "count"),
                              Field("cmi", stderr=True, map=True),
                              *(Field(_iou_key(m), "values", map=True) for m in self.methods),
                              Field("whole_image")])

    def check_data(self, datamodule) -> None:
        if self.threshold is None and datamodule.selection_rows() == 0:
            raise ValueError("threshold: give one (e.g. 0.5) or data.selection_root, the rows it is chosen on")

    def describe_run(self, datamodule) -> str:
        return f"localizing {datamodule.describe_test_split()}"

    def make_metrics(self) -> None:
        for split in SPLITS:  # every rank, same metrics, same order (DDP collectives)
            for word in self._keys():
                widths = [(f"iou_{m}", len(THRESHOLDS)) for m in self.methods] + [("whole", 1), ("cmi", 1)]
                for name, width in widths:
                    self.metrics[f"{split}/{word}/{name}"] = SampleVectors(width).to(self.device)

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        # One pass for the whole batch: each row's CMI is measured for its own word only
        # (``where``), so a row costs what it cost alone, and the denoiser's calls are
        # full micro-batches instead of one padded call per word (evaluate.py pads every
        # call to the micro-batch so that an image's numbers never depend on its batch)
        row_words = [batch["word"][k] for k in keep]
        kids = [int(batch["id"][k]) for k in keep]
        captions = [batch["caption"][k] for k in keep]
        words = sorted(set(row_words))
        spec = MeasurementSpec(tuple(words), **self.spec_args)
        where = {cmi_tag(w): [rw == w for rw in row_words] for w in words}
        images = batch["image"][keep].to(self.device)
        res = measure_captions(self.denoiser, images, kids, captions, spec, where)
        cmi = [res.cmi[w] for w in row_words]
        present = [bool(res.present[w][j]) for j, w in enumerate(row_words)]
        maps = {"cmi": torch.stack([est.map[j] for j, est in enumerate(cmi)])}
        masks = batch["mask"][keep].to(maps["cmi"].device)
        if self.attention_steps:
            attention = [None] * len(keep)  # at the attention's own resolution
            for w in words:  # word_attention reads one word's tokens for a group of captions
                js = [j for j, rw in enumerate(row_words) if rw == w]
                x = self.denoiser.encode(images[js], ids=[kids[j] for j in js])
                att, _ = word_attention(self.denoiser, x, [kids[j] for j in js], [captions[j] for j in js], [w],
                                        steps=self.attention_steps, seed=self.spec_args["seed"])[w]
                # DAAM's [0, 1] scaling first: a softmax's floor would keep the whole image at
                # every threshold below floor / peak (attention_maps.daam_normalised)
                for j, a in zip(js, daam_normalised(att).to(maps["cmi"].device)):
                    attention[j] = a
            maps["attention"] = torch.stack(attention)
            maps["attention_x_cmi"] = attention_times_information(maps["attention"], maps["cmi"])
        ious = {m: torch.stack([iou(map_to_mask(v, t, masks.shape[-2:]), masks) for t in THRESHOLDS], 1)
                for m, v in maps.items()}
        whole = masks.flatten(1).double().mean(1)
        samples, missing = [], []
        for j, (k, word) in enumerate(zip(keep, row_words)):
            if not present[j]:
                missing.append({"id": kids[j], "error": unmeasurable_word(captions[j], word, self.denoiser.tokenizer)})
                continue
            if (n := self.figure_slot()) is not None:
                fig = localization_figure(batch["image"][k].cpu(), batch["mask"][k].cpu(),
                                          {m: v[j].cpu() for m, v in maps.items()}, f"'{word}', row {kids[j]}")
                self.save_figure(fig, f"{kids[j]}_{word}", f"localization/{n}/{word}")
            samples.append({"id": kids[j], "word": word, "split": batch["split"][k], "draws": int(res.draws[j]),
                            "cmi": (cmi[j].value[j], cmi[j].stderr[j]),
                            **{_iou_key(m): v[j] for m, v in ious.items()}, "whole_image": whole[j]})
        if missing:
            self._fail(missing)
        return samples

    def update_metrics(self, records: list[dict]) -> None:
        # one update per metric and batch: a metric keeps the tensors of each update (reduced in
        # id order at the end, so the grouping changes no bit), and one update per row kept
        # about 20 small tensors, some 15 kB, per row measured
        rows_of: dict[str, list[dict]] = {}
        for r in records:
            for word in (r["word"], *(t for t, words in self.word_types.items() if r["word"] in words), ALL):
                rows_of.setdefault(f"{r['split']}/{word}", []).append(r)
        for key, rows in rows_of.items():
            ids = [r["id"] for r in rows]
            for m in self.methods:
                self.metrics[f"{key}/iou_{m}"].update(torch.tensor([r[_iou_key(m)] for r in rows]), ids)
            self.metrics[f"{key}/whole"].update(torch.tensor([[r["whole_image"]] for r in rows]), ids)
            self.metrics[f"{key}/cmi"].update(torch.tensor([[r["cmi"]] for r in rows]), ids)

    def results(self) -> dict:
        # collectives: every rank, every metric, same order; torchmetrics squeezes width-1 results
        computed = {key: {**r, "mean": r["mean"].reshape(-1), "stderr": r["stderr"].reshape(-1)}
                    for key, r in ((k, m.compute()) for k, m in self.metrics.items())}
        chosen = {m: select_threshold(computed[f"selection/{ALL}/iou_{m}"]["mean"],
                                      computed[f"selection/{ALL}/iou_{m}"]["n"], self.threshold)
                  for m in self.methods}
        t, chosen_on = chosen["cmi"]
        out = {"localization/threshold": {"value": THRESHOLDS[t], "chosen_on": chosen_on,
                                          **{m: THRESHOLDS[chosen[m][0]] for m in self.methods[1:]}}}
        for word in self._keys():
            i, w, c = (computed[f"eval/{word}/{n}"] for n in ("iou_cmi", "whole", "cmi"))
            if not i["n"]:
                continue
            entry = {**miou_at(i["mean"], i["stderr"], t), "whole_image": float(w["mean"][0]),
                     "whole_image_stderr": float(w["stderr"][0]), "cmi": float(c["mean"][0]),
                     "cmi_stderr": float(c["stderr"][0]), "n": i["n"]}
            for m in self.methods[1:]:
                a = computed[f"eval/{word}/iou_{m}"]
                entry[m] = miou_at(a["mean"], a["stderr"], chosen[m][0])
            out[f"localization/{word}"] = entry
        logged = {f"info/{k}/miou": v["miou"] for k, v in out.items() if "miou" in v}
        logged.update({f"info/{k}/{m}_miou": v[m]["miou"] for k, v in out.items() for m in self.methods[1:] if "miou" in v})
        log_scalars(self.trainer, logged, step=0)
        return out

    def _keys(self) -> list[str]:
        """The summary's rows: each word, each word type, then all rows."""
        return [*self.trainer.datamodule.groups(), *self.word_types, ALL]

    def report_lines(self, results: dict) -> list[str]:
        thr = results["localization/threshold"]
        others = self.methods[1:]
        lines = [f"Threshold {thr['value']} ({thr['chosen_on']}); IoU of the thresholded CMI map with the word's mask"
                 + "".join(f"; {m}: threshold {thr[m]}" for m in others) + ". In brackets: the best mIoU over "
                 "thresholds swept on these rows themselves (the reference papers' figure; optimistic).", "",
                 "| word | CMI mIoU | stderr | " + "".join(f"{m} mIoU | " for m in others)
                 + "whole image | CMI (nats) | rows |", "|---|---:|---:|" + "---:|" * len(others) + "---:|---:|---:|"]
        for key, r in results.items():
            if "miou" in r:
                cells = "".join(f"{r[m]['miou']:.3f} +- {r[m]['stderr']:.3f} [{r[m]['miou_swept_on_eval']:.3f}] | "
                                for m in others)
                lines.append(f"| {key.split('/', 1)[1]} | {r['miou']:.3f} [{r['miou_swept_on_eval']:.3f}] | "
                             f"{r['stderr']:.3f} | {cells}{r['whole_image']:.3f} | {r['cmi']:.3f} | {r['n']} |")
        return lines
