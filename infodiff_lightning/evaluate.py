"""One pass of the denoiser over images x conditions x draws, in micro-batches.

Everything the estimators need comes from the squared errors of this pass:

    mse[n, s, k]  = ||eps_ns - eps_hat(x_alpha_ns, alpha_ns | c_nk)||^2
    gap[n, s, p]  = ||eps_hat(. | c_ref) - eps_hat(. | c_cond)||^2       for pair p = (ref, cond)
    map[n, s, p, j] = 1/2 w_ns d_j                                        per draw, element j

where d_j is the squared gap (orthogonal map) or the error difference (standard map),
summed over the channel axis for images. Per-draw maps are kept (not only their mean) so
that every map gets a standard error and a PID map can choose its minimum source on
one half of the draws and evaluate it on the other (pid.py). A micro-batch holds whole (image, draw) units
with all K conditions of that unit, so every condition of an image sees the same
(alpha, eps): common random numbers. Nothing in the loop synchronises with the host.

An image whose entries of two columns are the same condition (a caption that does not
hold the word a "without the word" column removes, say) has that condition evaluated
once per draw and its prediction shared: the result is the same as evaluating it twice,
and ``n_evals`` counts the inputs actually evaluated.

Every denoiser call has the same number of inputs (``microbatch``; a short last call is
padded with copies of its last input, whose outputs are dropped). On one thread a CPU
convolution can round an input's result differently depending on how many inputs share
the call, so without this an image's numbers would depend on which images share its
batch, and so on the number of processes of a job; with it they depend only on the image,
its draws and the thread count. (The noisy input itself is formed with float64
coefficients for the same reason: logsnr.noise_channel.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser, column_len, concat, take
from .draws import Draws
from .logsnr import noise_channel

__all__ = ["Errors", "denoiser_errors"]


@dataclass
class Errors:
    """Per-draw squared errors of one pass (see module docstring), on CPU."""

    mse: Tensor  # (N, S, K)
    gap: Tensor  # (N, S, P)
    draw_maps: Tensor | None  # (N, S, P, *map_shape) per-draw map terms, or None
    weight: Tensor  # (N, S)
    alpha: Tensor  # (N, S)
    n_evals: int
    design: str = "iid"  # of the draws (uncertainty.DRAW_SCHEMES)

    def draw_map(self, pair_index: int) -> Tensor | None:
        """(N, S, *map_shape) per-draw map terms of one pair, or None without maps."""
        return None if self.draw_maps is None else self.draw_maps[:, :, pair_index]


def _map_reduce(d: Tensor, channel_dim: int | None) -> Tensor:
    return d.sum(channel_dim) if channel_dim is not None else d


def _same_entries(a: Column, b: Column) -> Tensor:
    """(N,) bool: whether entry i of column ``a`` is the same condition as entry i of ``b``
    (tensor rows equal element for element, so NaN rows never match; list entries of the
    same type and equal)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return torch.zeros(a.shape[0], dtype=torch.bool)
        return (a == b).reshape(a.shape[0], -1).all(1).cpu()
    return torch.tensor([type(u) is type(v) and u == v for u, v in zip(a, b)], dtype=torch.bool)


def entry_sources(columns: Sequence[Column], n: int) -> Tensor:
    """(N, K) long: for each image n and column k, the first column whose entry for image n
    is the same condition (k itself when none before it is). Only those entries are
    evaluated; the others share their prediction."""
    k = len(columns)
    src = torch.arange(k).repeat(n, 1)
    for b in range(1, k):
        for a in range(b):
            free = src[:, b] == b
            if not bool(free.any()):
                break
            hit = free & (src[:, a] == a) & _same_entries(columns[a], columns[b])
            src[hit, b] = a
    return src


def _calls(rows_per_unit: Tensor, microbatch: int) -> list[tuple[int, int]]:
    """Greedy packing of consecutive (image, draw) units into calls of at most
    ``microbatch`` inputs (one unit alone when it has more): [(start, stop), ...]."""
    if bool((rows_per_unit == rows_per_unit[0]).all()):  # every unit the same size: fixed strides
        per = max(1, microbatch // int(rows_per_unit[0]))
        total = int(rows_per_unit.numel())
        return [(a, min(a + per, total)) for a in range(0, total, per)]
    out, start, rows = [], 0, 0
    for u, r in enumerate(rows_per_unit.tolist()):
        if rows and rows + r > microbatch:
            out.append((start, u))
            start, rows = u, 0
        rows += r
    out.append((start, int(rows_per_unit.numel())))
    return out


def denoiser_errors(denoiser: Denoiser, x: Tensor, columns: Sequence[Column], draws: Draws,
                    pairs: Sequence[tuple[int, int]] = (), maps: str | None = None,
                    channel_dim: int | str | None = "auto", microbatch: int | None = None) -> Errors:
    """Evaluate eps_hat for every (image n, draw s, condition k) and reduce to errors.

    ``x``: (N, *shape) clean inputs (for latent models, the latents). ``columns``: K
    condition columns of N entries each. ``pairs``: (ref, cond) column indices whose
    gaps are wanted. ``maps``: None, "orthogonal" or "standard" per-element maps for
    every pair. ``channel_dim``: axis of one sample summed in maps ("auto": the channel
    axis of (C, H, W) inputs, none for vectors). ``microbatch``: denoiser inputs per call
    (default: the denoiser's ``default_microbatch``).
    """
    n, k = int(x.shape[0]), len(columns)
    if n == 0:
        raise ValueError("no images given (x has zero rows)")
    if k == 0:
        raise ValueError("no condition columns given")
    for i, col in enumerate(columns):
        if column_len(col) != n:
            raise ValueError(f"condition column {i} has {column_len(col)} entries but x has {n} images")
    if draws.n_images != n or tuple(draws.eps.shape[2:]) != tuple(x.shape[1:]):
        raise ValueError(f"draws are for {draws.n_images} images of shape {tuple(draws.eps.shape[2:])}, "
                         f"but x is {tuple(x.shape)}")
    for p in pairs:
        if not all(0 <= i < k for i in p) or len(p) != 2:
            raise ValueError(f"pair {p} does not index two of the {k} condition columns")
    if maps not in (None, "orthogonal", "standard"):
        raise ValueError(f"maps must be None, 'orthogonal' or 'standard', got {maps!r}")
    if microbatch is None:
        microbatch = int(denoiser.default_microbatch)
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1, got {microbatch}")
    if channel_dim == "auto":
        channel_dim = 0 if x.ndim == 4 else None

    s = draws.n_draws
    shape = tuple(x.shape[1:])
    src = entry_sources(columns, n)  # (N, K)
    own = src == torch.arange(k)  # entries evaluated

    # Errors are accumulated in at least float32 whatever the model's dtype (fp16
    # sums of squares over a latent lose digits and can overflow).
    device = x.device
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = n * s
    rows_per_unit = own.sum(1).repeat_interleave(s)  # unit u = (image u // s, draw u % s)
    mse = torch.empty(total, k, dtype=dtype, device=device)
    gap = torch.empty(total, len(pairs), dtype=dtype, device=device)
    map_shape = _map_reduce(torch.empty(shape, device="meta"), channel_dim).shape
    map_acc = torch.zeros(total, len(pairs), *map_shape, dtype=dtype, device=device) if maps and pairs else None
    finite = torch.ones((), dtype=torch.bool, device=device)
    n_evals = 0
    # Flat draw index u -> (image u // s, draw u % s); CPU indices, so no device sync.
    for start, stop in _calls(rows_per_unit, microbatch):
        u = torch.arange(start, stop)
        img, drw = u // s, u % s
        eps = draws.eps[img, drw].to(device=device, dtype=dtype, non_blocking=True)
        alpha = draws.alpha[img, drw].to(device=device, non_blocking=True)
        x_alpha = noise_channel(x[img.to(device)].to(dtype), alpha, eps).to(x.dtype)
        # rows: for each column j, the units of this call whose entry of column j is evaluated
        need = own[img]  # (len(u), K)
        which = [need[:, j].nonzero().flatten() for j in range(k)]
        cond = concat([take(col, img[w]) for col, w in zip(columns, which)])
        pos = torch.cat(which).to(device)
        rep, alpha_rep = x_alpha[pos], alpha[pos]
        rows = rep.shape[0]
        n_evals += rows
        if rows < microbatch:  # every call has the same shape: see the module docstring
            pad = torch.full((microbatch - rows,), rows - 1, dtype=torch.long, device=device)
            rep, alpha_rep = torch.cat([rep, rep[pad]]), torch.cat([alpha_rep, alpha_rep[pad]])
            cond = concat([cond, take(cond, pad.cpu())])
        out = denoiser.eps_hat(rep, alpha_rep, cond)[:rows].to(dtype)
        finite &= torch.isfinite(out).all()
        e_hat = torch.empty((k, len(u), *shape), dtype=dtype, device=device)
        at = 0
        for j, w in enumerate(which):
            e_hat[j, w.to(device)] = out[at:at + len(w)]
            at += len(w)
        for j in range(k):  # entries that share another column's condition take its prediction
            shared = (~need[:, j]).nonzero().flatten()
            if len(shared):
                e_hat[j, shared.to(device)] = e_hat[src[img[shared], j].to(device), shared.to(device)]
        ud = u.to(device)
        mse[ud] = ((eps.unsqueeze(0) - e_hat) ** 2).flatten(2).sum(-1).T
        if pairs:
            w = draws.weight[img, drw].to(device=device, dtype=dtype)
            for p, (ref, cnd) in enumerate(pairs):
                diff = e_hat[ref] - e_hat[cnd]
                sq = diff**2
                gap[ud, p] = sq.flatten(1).sum(1)
                if map_acc is not None:
                    if maps == "standard":
                        sq = (eps - e_hat[ref]) ** 2 - (eps - e_hat[cnd]) ** 2
                    contrib = 0.5 * w.reshape(-1, *([1] * len(shape))) * sq
                    map_acc[ud, p] = _map_reduce(contrib, None if channel_dim is None else channel_dim + 1)
    if not bool(finite):
        raise ValueError("the denoiser returned non-finite values (NaN or inf) for some inputs; "
                         "check its dtype (fp16 overflow?) and the alpha range")
    return Errors(
        mse=mse.reshape(n, s, k).cpu(),
        gap=gap.reshape(n, s, len(pairs)).cpu(),
        draw_maps=None if map_acc is None else map_acc.reshape(n, s, len(pairs), *map_shape).cpu(),
        weight=draws.weight.to(dtype).cpu(),
        alpha=draws.alpha.cpu(),
        n_evals=n_evals,
        design=draws.design,
    )
