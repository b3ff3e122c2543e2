"""The one measurement primitive: named contrasts of named condition columns on a batch.

Every quantity of the package is a *contrast* between two condition columns of one
denoiser pass over shared draws (evaluate.py): pointwise MI is (null -> caption), the
CMI of a word is (caption without the word -> caption), PID needs three contrasts
against one reference, ranking one per candidate. :func:`measure` is the single place
where a batch becomes those numbers:

1. x: the clean inputs as given, or ``denoiser.encode(images, ids)``;
2. draws: as given, or made from a :class:`DrawSpec` (keyed by sample id when ids are
   given, so that any number of processes or batch sizes sees the same draws);
3. the draws are checked against the model's trained log-SNR range;
4. identical condition columns are evaluated once (columns are compared by value);
5. one micro-batched pass of :func:`~infodiff_lightning.evaluate.denoiser_errors`.

The result, a :class:`Measurement`, gives each named contrast's per-draw terms
(eq. 5 or eq. 7) and its per-image :class:`~infodiff_lightning.estimate.Estimate`.
Caption contrasts, candidate ranking, PID, localization maps, vector-pair validation
and the public ``informations`` / ``pointwise_mi`` / ``conditional_mi`` / ``pid``
functions are builders of columns and contrasts on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser
from .draws import Draws, draws_for_ids, sample_draws
from .estimate import Estimate, contrast_estimate, information_terms
from .evaluate import Errors, denoiser_errors
from .integrate import AlphaSampler, TruncatedLogistic

__all__ = ["DrawSpec", "Measurement", "measure", "default_sampler", "reference_range", "REFERENCE_SAMPLER",
           "check_alpha_range", "make_draws", "same_column"]


#: The reference proposal over log-SNR (Kong et al.'s choice for SD 2.1): its range
#: [-5, 7] is the integral every default estimate is of.
REFERENCE_SAMPLER = TruncatedLogistic(1.0, 2.0, 3.0)


def reference_range(denoiser: Denoiser) -> tuple[float, float]:
    """The log-SNR range of the default estimates: the reference range within the
    denoiser's trained range."""
    return REFERENCE_SAMPLER.restricted(denoiser.alpha_range).range


def default_sampler(denoiser: Denoiser) -> AlphaSampler:
    """The draws every estimate takes unless told otherwise, over :func:`reference_range`:
    iid draws from the denoiser's fitted proposal (proposal.py, eq. OPT) when it has one,
    otherwise from the reference truncated logistic (``REFERENCE_SAMPLER``).

    Why iid and not stratified: stratified draws have less variance at equal count, but
    their standard error (eq. PAIR with the skew heuristic, uncertainty.py) undercovers on
    heavy-tailed terms (87-93% on the Gaussian mixture), while iid draws carry the
    calibrated bootstrap-t error (BENCHMARKS.md "Calibration"). Stratified proposals
    (``stratified=True``) remain an option of every sampler."""
    rng = reference_range(denoiser)
    proposal = denoiser.alpha_proposal
    if proposal is not None:
        # a proposal narrower than the range would silently change what is estimated
        if proposal.lo > rng[0] + 1e-6 or proposal.hi < rng[1] - 1e-6:
            raise ValueError(f"the model's log-SNR proposal spans [{proposal.lo:.3f}, {proposal.hi:.3f}] but the "
                             f"estimates integrate over [{rng[0]:.3f}, {rng[1]:.3f}]; refit it over that range")
        return proposal.restricted(rng)
    return REFERENCE_SAMPLER.restricted(denoiser.alpha_range)


def check_alpha_range(denoiser: Denoiser, draws: Draws) -> None:
    """Raise if the draws leave the denoiser's trained log-SNR range."""
    rng = denoiser.alpha_range
    if rng is None:
        return
    lo, hi = float(draws.alpha.min()), float(draws.alpha.max())
    if lo < rng[0] - 1e-6 or hi > rng[1] + 1e-6:
        raise ValueError(f"draws span alpha [{lo:.3f}, {hi:.3f}] outside the model's trained range "
                         f"[{rng[0]:.3f}, {rng[1]:.3f}]; use sampler.restricted(denoiser.alpha_range)")


def _draw_dtype(x: Tensor) -> torch.dtype:
    # eps in float64 only for float64 inputs (analytic systems); float32 otherwise, also
    # for half-precision models, whose noisy inputs are formed in float32 (evaluate.py).
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def make_draws(denoiser: Denoiser, x: Tensor, n_draws: int, sampler: AlphaSampler | None,
               generator: torch.Generator | int | None) -> Draws:
    """N x S draws for the rows of ``x`` from one generator (an int seeds a new one);
    ``sampler`` None: :func:`default_sampler`."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    sampler = default_sampler(denoiser) if sampler is None else sampler
    return sample_draws(int(x.shape[0]), n_draws, tuple(x.shape[1:]), sampler, generator, _draw_dtype(x))


@dataclass(frozen=True)
class DrawSpec:
    """How to make the draws of a batch: ``n_draws`` per image from ``sampler`` (None: the
    denoiser's :func:`default_sampler`), keyed by (``seed``, sample id, ``round``) when the
    batch has ids, else from one generator seeded with ``seed`` (round 0 only). Rounds
    number the successive draws of adaptive precision (adaptive.py)."""

    n_draws: int
    seed: int = 0
    sampler: AlphaSampler | None = None
    round: int = 0

    def __post_init__(self) -> None:
        if int(self.n_draws) < 1:
            raise ValueError(f"n_draws must be >= 1, got {self.n_draws}")
        if int(self.round) < 0:
            raise ValueError(f"round must be >= 0, got {self.round}")

    def next_round(self) -> "DrawSpec":
        """The same spec one round later: new draws for every sample id."""
        return DrawSpec(self.n_draws, self.seed, self.sampler, self.round + 1)

    def make(self, denoiser: Denoiser, x: Tensor, ids: Sequence[int] | None = None) -> Draws:
        sampler = default_sampler(denoiser) if self.sampler is None else self.sampler
        shape = tuple(x.shape[1:])
        if ids is None:
            if self.round:
                raise ValueError("draw rounds are keyed by sample id: give the batch's ids")
            return make_draws(denoiser, x, self.n_draws, sampler, self.seed)
        return draws_for_ids(list(ids), self.n_draws, shape, sampler, self.seed, _draw_dtype(x), self.round)


def same_column(a: Column, b: Column) -> bool:
    """Whether two condition columns hold the same conditions (so one pass serves both)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and a.device == b.device and bool(torch.equal(a, b)))
    return len(a) == len(b) and all(type(u) is type(v) and u == v for u, v in zip(a, b))


@dataclass
class Measurement:
    """The errors of one pass and where each named column and contrast sits in it."""

    x: Tensor
    errors: Errors
    column_index: dict[str, int]  # column name -> column of the pass (duplicates share one)
    contrast_index: dict[Hashable, int]  # contrast key -> pair number of the pass
    pairs: list[tuple[int, int]]  # (reference, condition) columns of each pair of the pass

    @property
    def n_evals(self) -> int:
        return self.errors.n_evals

    @property
    def design(self) -> str:
        return self.errors.design

    def _pair(self, key: Hashable) -> tuple[int, tuple[int, int]]:
        if key not in self.contrast_index:
            raise KeyError(f"no contrast {key!r} was measured; measured: {list(self.contrast_index)}")
        p = self.contrast_index[key]
        return p, self.pairs[p]

    def terms(self, key: Hashable, estimator: str = "orthogonal") -> Tensor:
        """(N, S) per-draw terms of contrast ``key`` (eq. 5 "standard" or eq. 7 "orthogonal")."""
        p, pair = self._pair(key)
        return information_terms(self.errors, p, pair, estimator)

    def estimate(self, key: Hashable, estimator: str = "orthogonal", keep_terms: bool = False) -> Estimate:
        """Per-image estimate of contrast ``key`` with its standard error (and map, when
        the pass kept maps)."""
        p, pair = self._pair(key)
        return contrast_estimate(self.errors, p, pair, estimator, keep_terms)

    def draw_map(self, key: Hashable) -> Tensor | None:
        """(N, S, *map_shape) per-draw map terms of contrast ``key``, or None without maps."""
        return self.errors.draw_map(self._pair(key)[0])

    def mse(self, column: str) -> Tensor:
        """(N, S) squared errors ||eps - eps_hat(. | column)||^2 of one named column."""
        if column not in self.column_index:
            raise KeyError(f"no column {column!r} was measured; measured: {list(self.column_index)}")
        return self.errors.mse[..., self.column_index[column]]


def measure(denoiser: Denoiser, columns: Mapping[str, Column], contrasts: Mapping[Hashable, tuple[str, str]] | None = None,
            *, draws: Draws | DrawSpec, x: Tensor | None = None, images: Tensor | None = None,
            ids: Sequence[int] | None = None, maps: str | None = None,
            microbatch: int | None = None) -> Measurement:
    """Measure named contrasts of named condition columns on one batch (module docstring).

    ``columns``: name -> column of one condition per image. ``contrasts``: key ->
    (reference column name, condition column name). Give ``x`` (the clean inputs) or
    ``images`` (encoded here with the batch's ``ids``). ``draws``: explicit
    :class:`~infodiff_lightning.draws.Draws` or a :class:`DrawSpec`. ``maps``: None,
    "orthogonal" or "standard" per-element maps of every contrast. ``microbatch``:
    denoiser inputs per call (None: the denoiser's default).
    """
    if (x is None) == (images is None):
        raise ValueError("measure: give either x (clean inputs) or images (to encode), not both or neither")
    if not columns:
        raise ValueError("measure: no condition columns given")
    if ids is not None:
        ids = [int(i) for i in ids]
    if images is not None:
        x = denoiser.encode(images, ids=ids)
    if ids is not None and len(ids) != int(x.shape[0]):
        raise ValueError(f"measure: {len(ids)} ids for {int(x.shape[0])} images")
    if isinstance(draws, DrawSpec):
        draws = draws.make(denoiser, x, ids)
    check_alpha_range(denoiser, draws)

    unique: list[Column] = []
    column_index: dict[str, int] = {}
    for name, col in columns.items():
        j = next((j for j, u in enumerate(unique) if same_column(col, u)), None)
        if j is None:
            j = len(unique)
            unique.append(col)
        column_index[name] = j
    pairs: list[tuple[int, int]] = []
    contrast_index: dict[Hashable, int] = {}
    for key, spec in (contrasts or {}).items():
        if len(spec) != 2 or any(name not in column_index for name in spec):
            raise ValueError(f"contrast {key!r} must name two of the columns {list(column_index)}, got {spec!r}")
        pair = (column_index[spec[0]], column_index[spec[1]])
        if pair not in pairs:
            pairs.append(pair)
        contrast_index[key] = pairs.index(pair)
    errors = denoiser_errors(denoiser, x, unique, draws, pairs, maps=maps, microbatch=microbatch)
    return Measurement(x, errors, column_index, contrast_index, pairs)
