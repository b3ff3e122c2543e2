"""What the fine-tuning monitor and the analysis jobs need from modules and datamodules.

Declared here so that any module or datamodule can be monitored, not only the ones of
this package: the callback checks them with ``isinstance`` at setup and says which is
missing.
"""
from __future__ import annotations

from typing import ContextManager, Protocol, runtime_checkable

from torch import Tensor

from .data.normalization import Normalization
from .denoisers.base import TextDenoiser

__all__ = ["MeasurableModule", "ProbeData", "CaptionedEvaluationData", "GroupedEvaluationData", "LocalizationEvaluationData",
           "VectorPairSource"]


@runtime_checkable
class MeasurableModule(Protocol):
    """A module whose current weights can be measured.

    ``denoiser`` (a read-only property, as on every module of this package) is a text
    denoiser over the live weights (its caches cleared on each access, since the weights
    change while training); ``ema_weights(use)`` is a context in which the module's
    weights are its EMA weights when it keeps them and ``use`` is true, and which yields
    whether they are."""

    @property
    def denoiser(self) -> TextDenoiser: ...

    def ema_weights(self, use: bool = True) -> ContextManager[bool]: ...


@runtime_checkable
class ProbeData(Protocol):
    """A datamodule with fixed held-out items to measure: ``probe_items(n)`` is a list of
    n dicts with "id" (int), "image" (3, H, W) in [-1, 1] and "caption" (str), the same
    on every call and every rank."""

    def probe_items(self, n: int) -> list[dict]: ...


@runtime_checkable
class CaptionedEvaluationData(Protocol):
    """A datamodule whose test split is captioned images: ``test_captions()`` lists the
    captions of the items measured (None for an item without one), cheaply, so that a job
    can check its words before it computes anything; ``describe_test_split()`` says in
    words which items those are."""

    def test_captions(self) -> list[str | None]: ...

    def describe_test_split(self) -> str: ...


@runtime_checkable
class GroupedEvaluationData(Protocol):
    """A datamodule whose test items fall into named groups (a benchmark file, a word):
    ``groups()`` names every group in a fixed order, the same on every rank, so that a job
    can build one metric per group before the loop; ``describe_test_split()`` says in
    words which items are measured. The batch layout is the job's: CaptionRanking reads
    "image", "id", "candidates" (true caption first), "group", "groups" (every group
    the item counts in), "error"; WordLocalization
    reads "image", "id", "caption", "word", "mask", "split", "error"."""

    def groups(self) -> list[str]: ...

    def describe_test_split(self) -> str: ...


@runtime_checkable
class LocalizationEvaluationData(GroupedEvaluationData, Protocol):
    """Word-mask rows, grouped by word, some of them (``selection_rows()`` many) set aside
    to choose the localization threshold on."""

    def selection_rows(self) -> int: ...


@runtime_checkable
class VectorPairSource(Protocol):
    """A datamodule of vector pairs (x, y): ``dims`` is (dim_x, dim_y), ``train_pairs()``
    the raw training rows and ``normalization()`` the per-column map fitted on them
    (VectorPairData)."""

    @property
    def dims(self) -> tuple[int, int]: ...

    def train_pairs(self) -> tuple[Tensor, Tensor]: ...

    def normalization(self) -> Normalization: ...
