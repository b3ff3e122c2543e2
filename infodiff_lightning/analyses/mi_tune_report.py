"""The MI-TUNE experiment's tables (mi_tune.py): alignment per category per arm, the gain each
selection rule recovers, diversity and cost, from the score files of
runs/score_alignment.py (statistics in analyses/alignment_eval.py).

Per round and category: each arm's rate with its Wilson interval over images; each arm's
difference from the random control with its standard error over prompts (eq. DIFF; the
arms share prompts and noise, so the difference is paired) and whether it is more than
3 standard errors from 0; the share of the truth arm's gain over random that the arm
recovers (eq. REC) with a 95% percentile bootstrap interval over prompts.
"""
from __future__ import annotations

from .alignment_eval import CATEGORIES, difference, per_prompt_rates, recovered

__all__ = ["report", "compare"]

#: The arms whose recovered share is reported (the MI scores and MI-TUNE's heuristic).
SCORED_ARMS = ("mi", "mi_separated", "trajectory")


def _per_prompt(score: dict, category: str) -> dict[int, float]:
    items = score["items"]
    return per_prompt_rates([it["outcomes"] for it in items], [it["prompt"] for it in items], category)


def compare(scores: dict[str, dict], prefix: str, arms: list[str], base: bool = True) -> dict:
    """Per category and arm (and the base model when ``base``): rate and interval, the paired
    difference from random, and (for MI-type arms, with a truth arm) the recovered share."""
    out: dict = {}
    names = (["base"] if base else []) + [f"{prefix}/{a}" for a in arms]
    for c in CATEGORIES:
        row: dict = {}
        control = _per_prompt(scores[f"{prefix}/random"], c) if f"{prefix}/random" in scores else {}
        truth = _per_prompt(scores[f"{prefix}/truth"], c) if f"{prefix}/truth" in scores else {}
        for name in names:
            if name not in scores or c not in scores[name]["categories"]:
                continue
            entry = dict(scores[name]["categories"][c])
            mine = _per_prompt(scores[name], c)
            if control and not name.endswith("/random"):
                d = difference(mine, control)
                d["beyond_3se"] = d["z"] is not None and abs(d["z"]) > 3
                entry["vs_random"] = d
            arm = name.split("/")[-1]
            if control and truth and arm in SCORED_ARMS:
                entry["recovered"] = recovered(mine, control, truth)
            row[name.split("/")[-1] if name != "base" else "base"] = entry
        if row:
            out[c] = row
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def report(scores: dict[str, dict], rounds: int, arms: list[str], cost: dict) -> dict:
    """{"json": the comparison per round, diversity and cost; "markdown": the tables}."""
    result: dict = {"rounds": {}, "cost": cost}
    md: list[str] = []
    for r in range(1, rounds + 1):
        prefix = f"round{r}"
        table = compare(scores, prefix, arms)
        chosen = compare(scores, f"{prefix}/selected", arms, base=False)
        diversity = {a: {**scores[f"{prefix}/selected/{a}"]["diversity"],
                         "selected_aligned": scores[f"{prefix}/selected/{a}"]["categories"]["aligned"]["rate"],
                         "selected_aligned_no_dot":
                             scores[f"{prefix}/selected/{a}"]["categories"]["aligned_no_dot"]["rate"],
                         "images": scores[f"{prefix}/selected/{a}"]["images"]}
                     for a in arms if f"{prefix}/selected/{a}" in scores}
        eval_diversity = {name.split("/")[-1]: scores[name]["diversity"]["within_prompt_distance"]
                          for name in ["base"] + [f"{prefix}/{a}" for a in arms] if name in scores}
        result["rounds"][prefix] = {"categories": table, "selected_categories": chosen, "selected_sets": diversity,
                                    "evaluation_within_prompt_distance": eval_diversity}
        md += [f"## Round {r}: alignment on the evaluation prompts (% of images, Wilson 95%)", "",
               "| category | " + " | ".join(["base", *arms]) + " |", "|---|" + "---:|" * (len(arms) + 1)]
        for c, row in table.items():
            cells = []
            for a in ["base", *arms]:
                e = row.get(a)
                if e is None:
                    cells.append("-")
                    continue
                mark = ""
                if "vs_random" in e and e["vs_random"]["beyond_3se"]:
                    mark = " *"
                cells.append(f"{e['hits']}/{e['n']} = {_pct(e['rate'])} [{_pct(e['low'])}, {_pct(e['high'])}]{mark}")
            md.append(f"| {c} | " + " | ".join(cells) + " |")
        md += ["", "`*`: more than 3 standard errors (over prompts, paired) from the random arm.", "",
               "### Difference from random (percentage points, per-prompt paired; z = difference / SE)", "",
               "| category | " + " | ".join(a for a in ["base", *arms] if a != "random") + " |",
               "|---|" + "---:|" * len([a for a in ["base", *arms] if a != "random"])]
        for c, row in table.items():
            cells = []
            for a in ["base", *arms]:
                if a == "random":
                    continue
                d = row.get(a, {}).get("vs_random")
                cells.append("-" if d is None else f"{100 * d['difference']:+.1f} +- {100 * d['stderr']:.1f}"
                             + (f" (z {d['z']:.1f})" if d["z"] is not None else ""))
            md.append(f"| {c} | " + " | ".join(cells) + " |")
        scored = [a for a in arms if a in SCORED_ARMS]
        if scored and "truth" in arms:
            md += _recovered_table("Share of the truth-selected gain over random recovered (95% bootstrap over prompts)",
                                   table, scored)
            md += _recovered_table("The selected sets themselves: share of the truth set's alignment gain over the "
                                   "random set (95% bootstrap over prompts)", chosen, scored)
        md += ["", "### Selected sets", "",
               "| arm | images | aligned (dot) | aligned (no dot) | pairwise distance | distinct readings |",
               "|---|---:|---:|---:|---:|---:|"]
        for a, d in diversity.items():
            md.append(f"| {a} | {d['images']} | {_pct(d['selected_aligned'])}% | {_pct(d['selected_aligned_no_dot'])}% "
                      f"| {d['pairwise_distance']:.3f} | {_pct(d['distinct_readings'])}% |")
        md += ["", "Evaluation images, mean RMS distance between the images of one prompt: "
               + ", ".join(f"{a} {'n/a (one image per prompt)' if v is None else f'{v:.3f}'}"
                           for a, v in eval_diversity.items()), ""]
    md += ["## Cost (this run)", "", "| stage | UNet inputs | minutes |", "|---|---:|---:|"]
    for stage, c in cost.items():
        md.append(f"| {stage} | {c['unet_inputs']} | {c['seconds'] / 60:.1f} |")
    return {"json": result, "markdown": "\n".join(md) + "\n"}


def _recovered_table(title: str, rows: dict, scored: list) -> list[str]:
    """Markdown lines of a recovered-share table: per category, the truth gain and each
    scored arm's recovered share with its bootstrap interval."""
    md = ["", f"### {title}", "", "| category | truth gain (pp) | " + " | ".join(scored) + " |",
          "|---|---:|" + "---:|" * len(scored)]
    for c, row in rows.items():
        rec = [row.get(a, {}).get("recovered") for a in scored]
        gain = next((x["truth_gain"] for x in rec if x), None)
        cells = ["-" if x is None or x["recovered"] is None else
                 f"{_pct(x['recovered'])}% [{_pct(x['low'])}, {_pct(x['high'])}]" for x in rec]
        md.append(f"| {c} | {'-' if gain is None else f'{100 * gain:+.1f}'} | " + " | ".join(cells) + " |")
    return md
