"""Error against denoiser calls (NFE) for the ways of drawing log-SNR, side by side.

For each system, each quantity and each scheme, every image gets R independent sets of S
draws; the per-image root-mean-square error is taken against the image's long-run value
(``--long_run`` draws of the fitted proposal, stratified: the lowest-variance unbiased
scheme here). Schemes, all over the same reference log-SNR range (so all estimate the same
integral):

- reference: iid truncated logistic (loc 1, scale 2, clip 3), the reference code's scheme;
- stratified: the same, two draws per stratum;
- fitted: iid draws of the model's fitted proposal (proposal.py), the default when a model
  folder carries ``logsnr_proposal.json``;
- fitted stratified: the fitted proposal, two draws per stratum.

SD(z) and "cover" check each scheme's standard errors against the long run (z = error /
sqrt(stderr^2 + long-run stderr^2), pooled over images and repeats; calibrated: SD(z)
near 1, 95% coverage). "MSE ratio" is MSE(reference) / MSE(scheme) at equal S: how many times fewer draws (and
so denoiser calls) the scheme needs for the reference's error, with a 95% interval from
a bootstrap over images. The fitted proposal is fitted on pilot images that are not
evaluated (the world's threshold split; fresh samples for the analytic systems).

    python benchmarks/bench_draw_schemes.py --out draw_schemes.json            # world + analytic
    python benchmarks/bench_draw_schemes.py --systems world --images 8 --repeats 4

``--floors 0.5 0.25 0.1`` adds the fitted proposal at other defensive shares (the share of
the reference sampler's density mixed in; the library's default is proposal.DEFAULT_FLOOR). ``--model`` measures
another model folder (e.g. the demo's fine-tuned export) with the proposal still fitted on
``--fit_model`` (default: the same folder), and ``--word lovely`` measures the CMI of that
word in the demo's shifted world (crosses named "lovely") instead of a colour word's: how
much a proposal fitted before fine-tuning costs after it.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from infodiff_lightning.contrasts import caption_columns
from infodiff_lightning.data.world import COLOURS, CaptionedWorld
from infodiff_lightning.denoisers import CorrelatedGaussian, GaussianMixture, load_text_to_image
from infodiff_lightning.denoisers.noisy import NoisyDenoiser
from infodiff_lightning.denoisers.pid_toys import copy_system, pid_columns
from infodiff_lightning.integrate import Piecewise, TruncatedLogistic
from infodiff_lightning.measure import REFERENCE_SAMPLER, DrawSpec, measure
from infodiff_lightning.pid import PID_CONTRASTS, pid_from_terms
from infodiff_lightning.proposal import DEFAULT_FLOOR
from infodiff_lightning.proposal_fit import fit_model_proposal


def world(n_images: int, pilot: int, model: str = "models/world", fit_model: str | None = None,
          word: str | None = None, floors=(DEFAULT_FLOOR,)):
    """The world's cell: ``model`` measured, the proposal fitted (one per defensive share in
    ``floors``) on ``fit_model``'s pilot; ``word``: the demo's shifted world and that word's
    CMI instead of a colour word's."""
    shift = {} if word is None else {"shift": "shape", "p_shift": 1.0, "new_word": word}
    words = ("red", *(c for c in COLOURS if c != "red")) if word is None else (word,)

    def scenes(split, n, need_word):
        data = CaptionedWorld(split, 32, limit=400, **shift)
        idx = [i for i in range(len(data)) if not need_word or any(c in data.caption(i).split() for c in words)]
        return [data[i] for i in idx[:n]]

    def setup(den, items):
        caps = [it["caption"] for it in items]
        chosen = [next((c for c in words if c in cap.split()), words[0]) for cap in caps]
        cols, _, _ = caption_columns(den, caps)
        cols["-w"] = [c.replace(f" {w} ", " ") for c, w in zip(caps, chosen)]  # delete the word
        ids = [int(it["id"]) for it in items]
        x = den.encode(torch.stack([it["image"] for it in items]), ids=ids)
        return x, cols, ids

    contrasts = {"MI": ("null", "full"), f"CMI ({'colour word' if word is None else word})": ("-w", "full")}
    fit_den = load_text_to_image(fit_model or model)
    fit_den.alpha_proposal = None  # fitted below on the threshold split, whatever the folder holds
    xp, colsp, idsp = setup(fit_den, scenes("threshold", pilot, word is not None))
    proposals = {f: fit_model_proposal(fit_den, xp, colsp, contrasts, ids=idsp, n_draws=96, floor=f) for f in floors}
    den = fit_den if fit_model in (None, model) else load_text_to_image(model)
    x, cols, ids = setup(den, scenes("heldout", n_images, True))
    name = "world model" if model == "models/world" else model
    return name, den, x, cols, ids, contrasts, "info", proposals


def analytic(n_images: int, pilot: int, floors=(DEFAULT_FLOOR,)):
    g = torch.Generator().manual_seed(0)
    gauss = CorrelatedGaussian(dim=8, correlation=0.9, spread=10.0)
    mix = GaussianMixture(4, 8)
    toy = NoisyDenoiser(copy_system(), 0.3, 0)
    for name, system, kind in (("Gaussian (spread 10)", gauss, "info"), ("mixture", mix, "info"),
                               ("copy toy + noise 0.3", toy, "pid")):
        sampler = toy.base if system is toy else system
        xp, yp = sampler.sample(pilot, g)
        x, y = sampler.sample(n_images, g)
        if kind == "info":
            colsp, cols = {"null": system.null_conditions(pilot), "y": yp}, {"null": system.null_conditions(n_images), "y": y}
            contrasts = {"MI": ("null", "y")}
        else:
            colsp, cols = dict(zip(("ref", "y1", "y2", "y12"), pid_columns(yp))), \
                dict(zip(("ref", "y1", "y2", "y12"), pid_columns(y)))
            contrasts = PID_CONTRASTS
        proposals = {f: fit_model_proposal(system, xp, colsp, contrasts, ids=range(pilot), n_draws=96, floor=f)
                     for f in floors}
        yield name, system, x, cols, list(range(10_000, 10_000 + n_images)), contrasts, kind, proposals


def values(system, x, cols, ids, contrasts, kind, spec) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
    """Per-image (value, stderr) of each quantity under one DrawSpec, and the NFE per image."""
    m = measure(system, cols, contrasts, x=x, ids=ids, draws=spec)
    nfe = m.n_evals // int(x.shape[0])
    if kind == "info":
        return {k: (m.estimate(k).value, m.estimate(k).stderr) for k in contrasts}, nfe
    est = pid_from_terms(*[m.terms(k) for k in PID_CONTRASTS], design=m.design)
    return {t: (getattr(est, t).value, getattr(est, t).stderr)
            for t in ("redundancy", "unique1", "unique2", "synergy")}, nfe


def schemes(system, proposals: dict[float, Piecewise]) -> dict:
    """label -> sampler; the fitted proposal at the default share is "fitted (default)", at
    another share f "fitted floor f"."""
    ref = REFERENCE_SAMPLER.restricted(system.alpha_range)
    strat = TruncatedLogistic(ref.loc, ref.scale, ref.clip, True, ref.lo, ref.hi)
    out = {"reference (iid logistic)": ref, "stratified logistic": strat}
    for floor, p in proposals.items():
        tag = "" if floor == DEFAULT_FLOOR else f" floor {floor:g}"
        out["fitted (default)" if not tag else f"fitted{tag}"] = Piecewise(p.edges, p.mass, False)
        out[f"fitted stratified{tag}"] = Piecewise(p.edges, p.mass, True)
    return out


def bootstrap_ratio(err_ref: torch.Tensor, err: torch.Tensor, n_boot: int = 400) -> tuple[float, float, float]:
    """MSE ratio (reference / scheme) over images x repeats, and a 95% interval from
    resampling images (the repeats of an image stay together)."""
    g = torch.Generator().manual_seed(0)
    n = err.shape[0]
    ratio = float((err_ref**2).mean() / (err**2).mean())
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    boots = (err_ref[idx] ** 2).mean((1, 2)) / (err[idx] ** 2).mean((1, 2))
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=boots.dtype)).tolist()
    return ratio, lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["world", "analytic"], choices=["world", "analytic"])
    ap.add_argument("--images", type=int, default=8, help="images per system (world: held-out scenes naming a colour)")
    ap.add_argument("--analytic_images", type=int, default=200)
    ap.add_argument("--pilot", type=int, default=16, help="pilot images the proposal is fitted on")
    ap.add_argument("--draws", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--long_run", type=int, default=1024)
    ap.add_argument("--schemes", nargs="+", default=None,
                    help="only these schemes (by label prefix: reference, stratified, fitted, 'fitted stratified')")
    ap.add_argument("--floors", type=float, nargs="+", default=[DEFAULT_FLOOR],
                    help="defensive shares of the fitted proposal (each adds its fitted schemes)")
    ap.add_argument("--model", default="models/world", help="world: the model folder measured")
    ap.add_argument("--fit_model", default=None, help="world: the folder the proposal is fitted on (default --model)")
    ap.add_argument("--word", default=None,
                    help="world: the demo's shifted world (shape named WORD) and WORD's CMI instead of a colour's")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cells = []
    if "world" in args.systems:
        cells.append(world(args.images, args.pilot, args.model, args.fit_model, args.word, args.floors))
    if "analytic" in args.systems:
        cells.extend(analytic(args.analytic_images, args.pilot, args.floors))
    rows = []
    print("| system | quantity | S | scheme | NFE / image | RMSE | MSE ratio to reference (95% CI) | SD(z) | cover |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, system, x, cols, ids, contrasts, kind, proposals in cells:
        t0 = time.perf_counter()
        proposal = proposals[max(args.floors)]  # the long run: the most defensive share
        best = Piecewise(proposal.edges, proposal.mass, True)
        truth, _ = values(system, x, cols, ids, contrasts, kind, DrawSpec(args.long_run, 99_999, best))
        truth_se = {q: v[1] for q, v in truth.items()}
        truth = {q: v[0] for q, v in truth.items()}
        for s in args.draws:
            errs: dict[str, dict[str, torch.Tensor]] = {}
            zs: dict[str, dict[str, torch.Tensor]] = {}
            nfe = 0
            chosen = {label: smp for label, smp in schemes(system, proposals).items()
                      if label.startswith("reference") or args.schemes is None
                      or any(label.split(" (")[0].split(" floor")[0] == want for want in args.schemes)}
            for label, sampler in chosen.items():
                reps = []
                for r in range(args.repeats):
                    v, nfe = values(system, x, cols, ids, contrasts, kind, DrawSpec(s, 1000 * r + s, sampler))
                    reps.append({q: (v[q][0] - truth[q], v[q][1]) for q in truth})
                errs[label] = {q: torch.stack([rep[q][0] for rep in reps], 1) for q in truth}  # (N, R)
                # z against the long run, its own error included (as bench_calibration.py)
                zs[label] = {q: torch.stack([rep[q][0] / torch.sqrt(rep[q][1] ** 2 + truth_se[q] ** 2)
                                             for rep in reps], 1) for q in truth}
            for q in truth:
                ref = errs["reference (iid logistic)"][q]
                for label, by_quantity in errs.items():
                    e = by_quantity[q]
                    ratio, lo, hi = bootstrap_ratio(ref, e)
                    rmse = float((e**2).mean().sqrt())
                    z = zs[label][q][torch.isfinite(zs[label][q])]
                    sd_z, cover = float(z.std()), float((z.abs() <= 1.96).double().mean())
                    rows.append({"system": name, "quantity": q, "draws": s, "scheme": label, "nfe_per_image": nfe,
                                 "rmse": rmse, "mse_ratio": ratio, "ci": [lo, hi],
                                 "truth_mean": float(truth[q].mean()), "sd_z": sd_z, "coverage": cover})
                    print(f"| {name} | {q} | {s} | {label} | {nfe} | {rmse:.3f} | {ratio:.2f} ({lo:.2f}-{hi:.2f}) | "
                          f"{sd_z:.2f} | {100 * cover:.1f}% |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
