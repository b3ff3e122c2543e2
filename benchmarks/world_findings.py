"""What a model trained on the embedded world has learned, measured with the project's
estimators against the planted truth (the README's "measured" column).

    python benchmarks/world_findings.py --model models/world --out world_findings.json
    python benchmarks/world_findings.py --model models/world --parts ranking --n_draws 64   # one part
    python benchmarks/world_findings.py --model models/world --lora runs/mi_tune/round1/finetune/mi/adapter/unet_lora

8 draws per image (the default) is a quick look; the README's figures also give 32 draws
(localization, CMI, PID) and 64 (ranking), where the noise of the draws no longer hides
what the model knows.

Everything goes through the shared measurement path (MeasurementSpec -> measure_captions
-> CaptionMetrics) or the ranking core (ranking.score_candidates), on fixed splits:

- localization (eq. LOC): per-word CMI maps of colour and shape words, threshold chosen on
  the threshold split, mean IoU on held-out scenes beside the whole-image baseline;
- CMI of object words, distractors and function words on the same held-out scenes;
- caption ranking by pointwise MI (standard estimator): one-object colour recognition
  (4 candidates), two-object colour swaps and left/right swaps (2 candidates);
- the PID signature of each planted pair against its control, measured on the held-out
  scenes whose caption holds both words: difference of means in standard errors.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from infodiff_lightning.data.world import (COLOURS, DISTRACTORS, SHAPES, CaptionedWorld, attribute_swap,
                                           colour_candidates, left_right_swap)
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.analyses.localization import WordMaps, collect_word_maps, localization
from infodiff_lightning.measurement import CaptionMetrics, MeasurementSpec, measure_captions
from infodiff_lightning.analyses.ranking import PREDICTION_ESTIMATOR, score_candidates
from infodiff_lightning.analyses.statistics import accuracy_interval, correct

PARTS = ("localization", "ranking", "pid")
FUNCTION = ("a", "the", "on")
WORDS = (*COLOURS, *SHAPES, *DISTRACTORS, *FUNCTION)
#: (relation, planted pairs, control pairs, PID term that should stand out)
SIGNATURES = (
    ("synonym", [("scarlet", "red")], [("big", "red")], "redundancy"),
    ("synergy (XOR)", [("wavy", "spotted")], [("big", "red")], "synergy"),
    ("biased co-occurrence", [("red", "cross")], [("blue", "cross"), ("green", "cross"), ("yellow", "cross")],
     "redundancy"),
    ("homonym", [("bat", "cave"), ("bat", "baseball")], [("big", "red")], "synergy"),
)


def measure(denoiser, split: str, n: int, spec: MeasurementSpec) -> WordMaps:
    """Maps, masks and the measurement summary of the first ``n`` scenes of ``split``."""
    data = CaptionedWorld(split, 32, limit=n)
    return collect_word_maps(denoiser, (data[i] for i in range(n)), data.true_masks, spec)


def pid_of_pair(denoiser, data: CaptionedWorld, pair, n_max: int, n_draws: int, batch: int = 16) -> dict:
    """Conditional PID of ``pair`` over the first ``n_max`` scenes of ``data`` whose caption holds both words."""
    idx = [i for i in range(len(data)) if set(pair) <= set(data.caption(i).split())][:n_max]
    if not idx:
        return {}
    spec = MeasurementSpec((), (pair,), n_draws=n_draws, maps=False)
    metrics = CaptionMetrics(spec)
    for start in range(0, len(idx), batch):
        items = [data[i] for i in idx[start:start + batch]]
        ids = [it["id"] for it in items]
        metrics.update(measure_captions(denoiser, torch.stack([it["image"] for it in items]), ids,
                                        [it["caption"] for it in items], spec), ids)
    return metrics.compute()


def pooled(entries: list[dict]) -> dict:
    """Mean and standard error of the per-image values behind several summaries (weighted by images)."""
    n = sum(e["images"] for e in entries)
    mean = sum(e["mean"] * e["images"] for e in entries) / n
    var = sum((e["stderr"] or 0.0) ** 2 * e["images"] ** 2 for e in entries) / n**2
    return {"mean": mean, "stderr": math.sqrt(var), "images": n}


def ranking(denoiser, data: CaptionedWorld, n_draws: int, n_max: int, batch: int = 16) -> dict:
    """Accuracy (Wilson 95% interval) of choosing the true caption by pointwise MI."""
    tasks = {"colour (1 object, 4 candidates)": [], "colour swap (2 objects)": [], "left/right swap (2 objects)": []}
    for i in range(len(data)):
        scene = data.scene(i)
        cand = colour_candidates(scene)
        if cand is not None:
            tasks["colour (1 object, 4 candidates)"].append((i, *cand))
        for name, negative in (("colour swap (2 objects)", attribute_swap(scene)),
                               ("left/right swap (2 objects)", left_right_swap(scene))):
            if negative is not None:
                tasks[name].append((i, [scene.caption, negative], 0))
    out = {}
    for name, rows in tasks.items():
        rows = rows[:n_max]
        hits = {"standard": 0, "orthogonal": 0}
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            items = [data[i] for i, _, _ in chunk]
            scores = score_candidates(denoiser, torch.stack([it["image"] for it in items]),
                                      [it["id"] for it in items], [c for _, c, _ in chunk], n_draws=n_draws)
            truth = [t for _, _, t in chunk]
            for est in hits:
                hits[est] += int(correct(scores.value[est], truth).sum())
        out[name] = {est: accuracy_interval(h, len(rows)) for est, h in hits.items()}
        out[name]["n"] = len(rows)
    return out


def pid_signatures(denoiser, data: CaptionedWorld, n_pair: int, n_draws: int) -> tuple[list[dict], dict]:
    """Each planted relation's PID term against its control (:data:`SIGNATURES`): pooled
    means and z = difference / combined standard error; also the PID of every pair measured."""
    signatures, cache = [], {}
    for relation, planted, controls, term in SIGNATURES:
        for pair in {*planted, *controls} - set(cache):
            cache[pair] = pid_of_pair(denoiser, data, pair, n_pair, n_draws)

        def term_of(pairs):
            found = [cache[p][f"pid/{p[0]}+{p[1]}/{term}"] for p in pairs if cache[p]]
            return pooled(found) if found else None
        a, b = term_of(planted), term_of(controls)
        z = (a["mean"] - b["mean"]) / math.hypot(a["stderr"], b["stderr"]) if a and b else None
        signatures.append({"relation": relation, "planted": planted, "control": controls, "term": term,
                           "planted_value": a, "control_value": b, "z": z})
    return signatures, cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers folder trained on the world")
    ap.add_argument("--lora", help="a LoRA adapter of --model to measure with (e.g. an MI-TUNE arm's unet_lora)")
    ap.add_argument("--n_threshold", type=int, default=100, help="threshold-split scenes (localization)")
    ap.add_argument("--n_heldout", type=int, default=200, help="held-out scenes for localization and CMI")
    ap.add_argument("--n_rank", type=int, default=150, help="held-out scenes per ranking task (at most)")
    ap.add_argument("--n_pair", type=int, default=48, help="held-out scenes per PID pair (at most)")
    ap.add_argument("--n_draws", type=int, default=8)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="what to measure (default: all); localization includes the CMI of every word")
    ap.add_argument("--out", help="write the findings as JSON here")
    args = ap.parse_args()
    t0 = time.time()
    denoiser = load_text_to_image(args.model, lora=args.lora)
    held = CaptionedWorld("heldout", 32)
    loc, cmi, object_mean, rank, signatures, cache = {}, {}, None, {}, [], {}
    if "localization" in args.parts:
        spec = MeasurementSpec(WORDS, (), n_draws=args.n_draws, maps=True)
        selection = measure(denoiser, "threshold", args.n_threshold, spec)
        heldout = measure(denoiser, "heldout", args.n_heldout, spec)
        loc = {kind: localization(selection, heldout, words)
               for kind, words in (("colour", COLOURS), ("shape", SHAPES))}
        cmi = heldout.summary
        object_words = [cmi[f"cmi/{w}"]["mean"] for w in (*COLOURS, *SHAPES) if cmi[f"cmi/{w}"]["images"]]
        object_mean = sum(object_words) / len(object_words)
        print(f"[{time.time() - t0:.0f}s] localization and CMI done", flush=True)
    if "ranking" in args.parts:
        rank = ranking(denoiser, held, args.n_draws, args.n_rank)
        print(f"[{time.time() - t0:.0f}s] ranking done", flush=True)
    if "pid" in args.parts:
        signatures, cache = pid_signatures(denoiser, held, args.n_pair, args.n_draws)
        print(f"[{time.time() - t0:.0f}s] PID done", flush=True)

    findings = {"model": args.model, "args": vars(args), "localization": loc, "cmi": cmi,
                "object_word_cmi": object_mean, "ranking": rank, "signatures": signatures,
                "pid": {f"{p[0]}+{p[1]}": v for p, v in cache.items()}, "seconds": time.time() - t0}

    def pm(e):
        return f"{e['mean']:.3f} +- {e['stderr']:.3f} ({e['images']})" if e else "n/a"

    if loc:
        print(f"\nlocalization, {args.n_heldout} held-out scenes (threshold from {args.n_threshold} others):")
        for kind, r in loc.items():
            print(f"  {kind:<7} mIoU {r['miou'][0]:.3f} +- {r['miou'][1]:.3f}   whole image "
                  f"{r['whole_image'][0]:.3f} +- {r['whole_image'][1]:.3f}   (tau {r['threshold']}, {r['maps']} maps)")
        print(f"\nCMI (nats, mean +- stderr (images)); object words average {object_mean:.3f}:")
        for w in WORDS:
            e = cmi[f"cmi/{w}"]
            share = e["mean"] / object_mean if object_mean else float("nan")
            print(f"  {w:<10} {pm(e)}   {100 * share:.1f}% of object words")
    if rank:
        print(f"\nranking by pointwise MI (choice: {PREDICTION_ESTIMATOR} estimator; accuracy [95% interval]):")
        for name, r in rank.items():
            s, o = r["standard"], r["orthogonal"]
            print(f"  {name:<32} {100 * s[0]:.1f}% [{100 * s[1]:.1f}, {100 * s[2]:.1f}]   "
                  f"(orthogonal {100 * o[0]:.1f}%)   n={r['n']}")
    if signatures:
        print("\nPID signatures (planted pair vs control, nats; z = difference / combined stderr):")
        for s in signatures:
            z = f"{s['z']:.1f}" if s["z"] is not None else "n/a"
            print(f"  {s['relation']:<22} {s['term']:<10} planted {pm(s['planted_value'])}  control "
                  f"{pm(s['control_value'])}  z = {z}")
    print(f"\n{time.time() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(findings, f, indent=1)


if __name__ == "__main__":
    main()
