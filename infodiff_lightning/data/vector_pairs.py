"""Pairs of vectors (x, y) from a user's arrays: reading, checking, splitting, standardising.

Accepted files:

- ``.npz``: one file with two arrays, named by ``x_key`` and ``y_key`` (default "x", "y");
- ``.npy``: two files, one per variable (``x`` and ``y``);
- ``.parquet``: one file; X is the columns named in ``x_columns`` (default: every column
  whose name starts with "x"), Y those in ``y_columns`` (default: names starting with "y").

A 1-D array is one column. Rows are pairs: row i of X goes with row i of Y. The checks
name the file and what is wrong: rows that differ in number, a non-finite entry (with
the first bad row), a column that is constant (it carries no information, and
standardising it would divide by zero), fewer than ``min_rows`` rows.

Splits are fixed by ``seed``: a random permutation of the rows cut into ``folds`` parts
of near-equal size; part ``fold`` is held out (validation during training, and the pairs
whose information is estimated), the rest is trained on. The default, 5 folds, holds
out 20%. Cross-fitting runs every fold (one model each) so that every pair is measured
by a model that never saw it; :func:`infodiff_lightning.crossfit.combine_folds` merges
the fold estimates.

Before training, each column of x and of y is mapped by a strictly increasing function
fitted on the training split (``normalization``: "standard", "gaussianize" or "none";
normalization.py). Such maps leave I(X;Y) unchanged. Standardisation (per-column mean and standard deviation of the training
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from .loaders import evaluation_loader
from .normalization import NORMALIZATIONS, Normalization, fit_normalization

__all__ = ["read_vector_pairs", "check_vector_pairs", "VectorPairs", "VectorPairData"]

SPLITS = ("train", "val", "all")


def _as_matrix(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 1-D or 2-D array (rows = samples), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{what}: expected real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def _read_parquet(path: Path, x_columns: Sequence[str] | None, y_columns: Sequence[str] | None):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names
    xs = list(x_columns) if x_columns else [c for c in names if c.startswith("x")]
    ys = list(y_columns) if y_columns else [c for c in names if c.startswith("y")]
    for what, cols in (("x_columns", xs), ("y_columns", ys)):
        if not cols:
            raise ValueError(f"{path}: no columns for {what} (columns are {names}); name them with {what}")
        missing = [c for c in cols if c not in names]
        if missing:
            raise ValueError(f"{path}: {what} {missing} not among the columns {names}")
    mat = lambda cols: np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in cols], 1)  # noqa: E731
    return mat(xs), mat(ys)


def read_vector_pairs(x: str, y: str | None = None, x_key: str = "x", y_key: str = "y",
                      x_columns: Sequence[str] | None = None,
                      y_columns: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, dim_x), Y (n, dim_y)) as float64 from .npz, two .npy files or .parquet (see the module doc)."""
    px = Path(x)
    if not px.is_file():
        raise FileNotFoundError(f"x: no such file {px}")
    suffix = px.suffix.lower()
    if suffix == ".npy":
        if y is None:
            raise ValueError(f"x: {px} is one .npy array; give the other variable's .npy file as y")
        py = Path(y)
        if not py.is_file():
            raise FileNotFoundError(f"y: no such file {py}")
        return _as_matrix(np.load(px), str(px)), _as_matrix(np.load(py), str(py))
    if y is not None:
        raise ValueError(f"y: give y only with a .npy file as x ({px} holds both variables)")
    if suffix == ".npz":
        with np.load(px) as f:
            for key, opt in ((x_key, "x_key"), (y_key, "y_key")):
                if key not in f.files:
                    raise ValueError(f"{px}: no array {key!r} ({opt}); the file holds {f.files}")
            return _as_matrix(f[x_key], f"{px}[{x_key}]"), _as_matrix(f[y_key], f"{px}[{y_key}]")
    if suffix == ".parquet":
        xs, ys = _read_parquet(px, x_columns, y_columns)
        return _as_matrix(xs, f"{px} x_columns"), _as_matrix(ys, f"{px} y_columns")
    raise ValueError(f"x: {px} is not a .npz, .npy or .parquet file")


def check_vector_pairs(x: np.ndarray, y: np.ndarray, source: str, min_rows: int = 10) -> None:
    """Raise a ValueError naming ``source`` and the problem if (x, y) are not usable pairs."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{source}: x has {x.shape[0]} rows but y has {y.shape[0]}; row i of x must pair with row i of y")
    if x.shape[0] < min_rows:
        raise ValueError(f"{source}: {x.shape[0]} rows; need at least {min_rows}")
    for name, a in (("x", x), ("y", y)):
        bad = ~np.isfinite(a).all(1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(f"{source}: {name} has {rows.size} rows with NaN or infinite entries (first: row {rows[0]}); "
                             f"drop or impute them")
        const = np.flatnonzero(a.std(0) == 0)
        if const.size:
            raise ValueError(f"{source}: {name} column {int(const[0])} is constant ({float(a[0, const[0]])!r}); "
                             f"it carries no information: drop it")


class VectorPairs(Dataset):
    """Rows of (x, y) as analysis-job items {"id", "x", "y", "error"}; ``ids`` are row numbers of the file."""

    def __init__(self, x: Tensor, y: Tensor, ids: Tensor):
        self.x, self.y, self.ids = x, y, ids

    def __len__(self) -> int:
        return int(self.ids.numel())

    def __getitem__(self, i: int) -> dict:
        return {"id": int(self.ids[i]), "x": self.x[i], "y": self.y[i], "error": ""}


class VectorPairData(L.LightningDataModule):
    """A user's two arrays as training batches and evaluation items (see the module doc).

    Args:
        x, y: the files (``y`` only for two .npy files).
        x_key, y_key: array names in a .npz file; x_columns, y_columns: Parquet columns.
        folds, fold: the rows are cut into ``folds`` parts (fixed by ``seed``) and part
            ``fold`` is held out (validation during training, and the rows whose information
            is estimated by default); 5 folds hold out 20%.
        eval_split: rows the analysis job measures: "val" (held out, the default), "train" or "all".
        normalization: the per-column map fitted on the training split: "standard" (mean
            and standard deviation, the default), "gaussianize" (normal scores of the
            empirical CDF: for heavy tails and bounded or distorted marginals) or "none".
        seed: fixes the split and the order of training batches.
        batch_size: training pairs per step; eval_batch_size: pairs per analysis step.
    """

    def __init__(self, x: str, y: str | None = None, x_key: str = "x", y_key: str = "y",
                 x_columns: Sequence[str] | None = None, y_columns: Sequence[str] | None = None,
                 folds: int = 5, fold: int = 0, eval_split: str = "val", normalization: str = "standard", seed: int = 0,
                 batch_size: int = 256,
                 eval_batch_size: int = 500):
        super().__init__()
        if folds < 2:
            raise ValueError(f"folds must be >= 2 (one part held out, the rest trained on), got {folds}")
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        if eval_split not in SPLITS:
            raise ValueError(f"eval_split must be one of {SPLITS}, got {eval_split!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        for name, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        xs, ys = read_vector_pairs(x, y, x_key, y_key, x_columns, y_columns)
        check_vector_pairs(xs, ys, source=str(x) if y is None else f"{x}, {y}")
        self.x, self.y = torch.from_numpy(xs), torch.from_numpy(ys)
        n = self.x.shape[0]
        if n < 2 * folds:
            raise ValueError(f"{folds} folds of {n} rows leave fewer than 2 rows per fold")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        held = torch.zeros(n, dtype=torch.bool)
        held[perm[torch.arange(n) % folds == fold]] = True  # fold k: every folds-th row of the permutation
        self.split_ids = {"val": held.nonzero().squeeze(1), "train": (~held).nonzero().squeeze(1),
                          "all": torch.arange(n)}
        self.eval_split, self.normalization_kind, self.seed = eval_split, normalization, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    @property
    def dims(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.y.shape[1])

    def train_pairs(self) -> tuple[Tensor, Tensor]:
        """The training split's raw (x, y) rows."""
        ids = self.split_ids["train"]
        return self.x[ids], self.y[ids]

    def normalization(self) -> Normalization:
        """The ``normalization`` map, fitted on the training split only."""
        return fit_normalization(self.normalization_kind, *self.train_pairs())

    def split(self, name: str) -> VectorPairs:
        ids = self.split_ids[name]
        return VectorPairs(self.x[ids], self.y[ids], ids)

    def train_dataloader(self) -> DataLoader:
        # Whole batches by tensor indexing: a per-row collate would cost more than the
        # small networks trained on these pairs.
        ids = self.split_ids["train"]
        data = torch.utils.data.TensorDataset(self.x[ids], self.y[ids])
        order = RandomSampler(data, generator=torch.Generator().manual_seed(self.seed))
        batches = BatchSampler(order, min(self.batch_size, len(data)), drop_last=True)
        return DataLoader(data, sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return evaluation_loader(self.split("val"), self.eval_batch_size, self.trainer)

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.split(self.eval_split), self.eval_batch_size, self.trainer)
