"""Where the noise of one draw comes from: the log-SNR alpha, or the noise eps at that alpha.

An image's estimate is the mean over draws of f = w(alpha) * gap(alpha, eps) / 2. Its
variance per draw splits (law of total variance) into

    Var f = Var_alpha E[f | alpha]   +   E_alpha Var[f | alpha]
            (alpha part)                 (eps part)

Stratified or quasi-random alpha under the same proposal can remove at most the alpha
part; the eps part stays, so it bounds what such a design can gain over the proposal it is
measured under (another proposal reweights both parts). Measured with A alphas per image and K independent eps at each (A x K draws):
eps part = mean within-alpha variance, alpha part = variance of the alpha means minus
eps part / K (unbiased).

Also measured: antithetic eps (the pairs (alpha, eps), (alpha, -eps)), against pairs of
independent draws, as the ratio Var(pair mean) / (Var f / 2): below 1 the pair is worth
more than two independent draws.

    python benchmarks/bench_variance_sources.py [--systems world analytic] [--images 8] [--alphas 32] [--eps 4]
"""
from __future__ import annotations

import argparse
import time

import torch

from bench_draw_schemes import analytic, world
from infodiff_lightning.draws import Draws
from infodiff_lightning.integrate import Piecewise
from infodiff_lightning.measure import REFERENCE_SAMPLER, measure


def split(system, x, cols, contrasts, sampler, n_alpha: int, n_eps: int, seed: int) -> dict[str, tuple]:
    """Per quantity: (mean, per-draw variance, alpha part, eps part), averaged over images."""
    g = torch.Generator().manual_seed(seed)
    n, shape = int(x.shape[0]), tuple(x.shape[1:])
    a, w = sampler.sample((n, n_alpha), g)
    eps = torch.randn((n, n_alpha, n_eps, *shape), generator=g, dtype=x.dtype)
    draws = Draws(a.repeat_interleave(n_eps, 1), w.repeat_interleave(n_eps, 1), eps.flatten(1, 2), "iid")
    m = measure(system, cols, contrasts, x=x, draws=draws)
    out = {}
    for k in contrasts:
        t = m.terms(k).double().reshape(n, n_alpha, n_eps)
        eps_part = t.var(2).mean(1)
        alpha_part = t.mean(2).var(1) - eps_part / n_eps
        out[k] = (float(t.mean()), float((alpha_part + eps_part).mean()), float(alpha_part.mean()),
                  float(eps_part.mean()))
    return out


def antithetic(system, x, cols, contrasts, sampler, n_pairs: int, seed: int) -> dict[str, tuple[float, float]]:
    """Per quantity: Var(pair mean) / (Var f / 2) for independent pairs and antithetic ones."""
    n, shape = int(x.shape[0]), tuple(x.shape[1:])
    out: dict[str, list[float]] = {k: [] for k in contrasts}
    for anti in (False, True):
        g = torch.Generator().manual_seed(seed)
        a, w = sampler.sample((n, n_pairs), g)
        e = torch.randn((n, n_pairs, *shape), generator=g, dtype=x.dtype)
        if anti:
            a2, w2, e2 = a, w, -e
        else:
            a2, w2 = sampler.sample((n, n_pairs), g)
            e2 = torch.randn((n, n_pairs, *shape), generator=g, dtype=x.dtype)
        draws = Draws(torch.stack([a, a2], 2).flatten(1), torch.stack([w, w2], 2).flatten(1),
                      torch.stack([e, e2], 2).flatten(1, 2), "iid")
        m = measure(system, cols, contrasts, x=x, draws=draws)
        for k in contrasts:
            t = m.terms(k).double()
            pair = 0.5 * (t[:, 0::2] + t[:, 1::2])
            out[k].append(float(pair.var(1).mean() / (t.var(1).mean() / 2)))
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["world", "analytic"], choices=["world", "analytic"])
    ap.add_argument("--images", type=int, default=8, help="world: held-out scenes naming a colour")
    ap.add_argument("--analytic_images", type=int, default=100)
    ap.add_argument("--alphas", type=int, default=32, help="alphas per image")
    ap.add_argument("--eps", type=int, default=4, help="independent eps at each alpha")
    ap.add_argument("--pairs", type=int, default=32, help="pairs per image for the antithetic comparison")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cells = []
    if "world" in args.systems:
        cells.append(world(args.images, 16))
    if "analytic" in args.systems:
        cells.extend(analytic(args.analytic_images, 16))
    print("| system | quantity | proposal | mean (nats) | per-draw variance | alpha part | eps part | "
          "antithetic pair / independent pair |")
    print("|---|---|---|---|---|---|---|---|")
    for name, system, x, cols, ids, contrasts, kind, proposals in cells:
        t0 = time.perf_counter()
        fitted = next(iter(proposals.values()))
        for label, sampler in (("reference", REFERENCE_SAMPLER.restricted(system.alpha_range)),
                               ("fitted (default)", Piecewise(fitted.edges, fitted.mass, False))):
            parts = split(system, x, cols, contrasts, sampler, args.alphas, args.eps, args.seed)
            anti = antithetic(system, x, cols, contrasts, sampler, args.pairs, args.seed + 1)
            for k, (mean, total, a_part, e_part) in parts.items():
                ind, ant = anti[k]
                print(f"| {name} | {k} | {label} | {mean:.3f} | {total:.2f} | {a_part:.2f} ({a_part / total:.0%}) | "
                      f"{e_part:.2f} ({e_part / total:.0%}) | {ant / ind:.2f} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
