"""What every text-to-image analysis job shares, on top of :class:`~.analysis_job.AnalysisJob`.

* **Loading**: ``load_text_to_image(pretrained, lora, torch_dtype=...)`` once, here; the
  adapter is reached as the property :attr:`TextToImageJob.denoiser` in every job.
* **Device placement**: ``setup`` moves the denoiser to the job's device, then calls
  :meth:`TextToImageJob.make_metrics` (metrics that depend on the datamodule, built in the
  same order on every rank before the loop).
* **Validation**: the datamodule must satisfy the job's :attr:`TextToImageJob.data_protocol`;
  if it does not, a ValueError names the job, the datamodule's class, the protocol and
  the methods it lacks (never a silent skip). A job with a caption
  :class:`~infodiff_lightning.measurement.MeasurementSpec` (``self.spec``) has its words
  and pairs checked against the captions of the test split;
  :meth:`TextToImageJob.check_data` adds what is the job's own.
* **The figure budget**: ``log_images`` (>= 0) items drawn, counted by
  :meth:`TextToImageJob.figure_slot` (one counter per group of figures, e.g. per pair;
  rank zero only).
* **Memory**: the denoiser's caches (text embeddings per condition, VAE latents per
  sample id) are emptied after every batch (:meth:`TextToImageJob.on_test_batch_end`), so
  that a job holds nothing per sample measured beyond its record.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from lightning.pytorch.utilities import rank_zero_info

from ..denoisers import AttentionDenoiser, load_text_to_image
from ..measurement import MeasurementSpec
from ..protocols import CaptionedEvaluationData
from .analysis_job import AnalysisJob, torch_dtype_of

__all__ = ["TextToImageJob", "protocol_methods"]


def protocol_methods(protocol: type) -> list[str]:
    """The public methods and properties a ``Protocol`` class declares (its bases' included)."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base is object or base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        names += [n for n in vars(base) if not n.startswith("_") and n not in names]
    return names


class TextToImageJob(AnalysisJob):
    """Base of the analysis jobs of a text-to-image model (see the module doc).

    Args:
        pretrained: diffusers folder or hub id (a fine-tuned export works the same way).
        lora: optional LoRA adapter folder saved by the fine-tuning module (unet_lora/).
        torch_dtype: e.g. "float16" on a GPU (None: the model's own).
        log_images: items drawn as figures (>= 0).
        fail_fast: stop at the first failed sample.
    """

    #: What the job needs from its datamodule, and a datamodule of this package that has it.
    data_protocol: type = CaptionedEvaluationData
    data_example: str = "CaptionedWorldData"
    #: The words and pairs checked against the test captions (None: nothing to check).
    spec: MeasurementSpec | None = None

    def __init__(self, pretrained: str, lora: str | None = None, torch_dtype: str | None = None,
                 log_images: int = 0, fail_fast: bool = False):
        super().__init__(fail_fast=fail_fast)
        if log_images < 0:
            raise ValueError(f"log_images must be >= 0, got {log_images}")
        self.log_images = log_images
        self._figures: Counter = Counter()  # items drawn so far, per group of figures
        self._denoiser = load_text_to_image(pretrained, lora, torch_dtype=torch_dtype_of(torch_dtype))

    @property
    def denoiser(self):
        """The text-to-image denoiser the job measures."""
        return self._denoiser

    def check_attention(self, attention_steps: int) -> int:
        """``attention_steps`` of a cross-attention baseline, checked (0: no baseline)."""
        if attention_steps < 0:
            raise ValueError(f"attention_steps must be >= 0 (0: no attention baseline), got {attention_steps}")
        if attention_steps and not isinstance(self.denoiser, AttentionDenoiser):
            raise ValueError(f"attention_steps: {type(self.denoiser).__name__} has no cross-attention to read; "
                             "set attention_steps: 0")
        return attention_steps

    # ---- validation ---------------------------------------------------------------
    def validate(self, datamodule: Any) -> None:
        """Check the datamodule before anything is computed (analyze.py calls it)."""
        if not isinstance(datamodule, self.data_protocol):
            missing = [n for n in protocol_methods(self.data_protocol) if not hasattr(datamodule, n)]
            raise ValueError(f"{type(self).__name__} needs a datamodule of the {self.data_protocol.__name__} protocol "
                             f"(e.g. {self.data_example}); {type(datamodule).__name__} lacks "
                             f"{', '.join(missing) or 'its methods'}")
        if self.spec is not None:
            captions = [c for c in datamodule.test_captions() if c]
            self.spec.check_captions(captions, self.denoiser.tokenizer, "captions of the test split")
        self.check_data(datamodule)
        rank_zero_info(self.describe_run(datamodule))

    def check_data(self, datamodule: Any) -> None:
        """The job's own checks of a datamodule that satisfies the protocol (none by default)."""

    def describe_run(self, datamodule: Any) -> str:
        """The line logged before the run."""
        return f"measuring {datamodule.describe_test_split()}"

    # ---- setup and figures ------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.denoiser.to(self.device)
        self.make_metrics()

    def make_metrics(self) -> None:
        """Metrics that depend on the datamodule (every rank, same order; none by default)."""

    def on_test_batch_end(self, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Empty the denoiser's caches. A job measures each sample once, so embeddings and
        latents kept past their batch only grow with the samples measured (an SD 2.1 prompt
        embedding is 77 x 1024 floats, 315 kB; a job's conditions are several per sample:
        the caption and each caption without a word); the few conditions that recur, such
        as the empty prompt, are encoded again per batch, a text-encoder pass per batch."""
        self.denoiser.clear_cache()

    def figure_slot(self, group: str = "") -> int | None:
        """The number of the next item drawn in ``group`` (counted from 0), or None when the
        ``log_images`` budget of the group is spent or this is not rank zero."""
        if not self.trainer.is_global_zero or self._figures[group] >= self.log_images:
            return None
        self._figures[group] += 1
        return self._figures[group] - 1

    def figures_left(self, group: str = "") -> int:
        """How many more items of ``group`` may be drawn (0 off rank zero)."""
        return max(0, self.log_images - self._figures[group]) if self.trainer.is_global_zero else 0
