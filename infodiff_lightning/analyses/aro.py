"""ARO's headline aggregates (Yuksekgonul et al., ICLR 2023), computed as ARO computes
them, beside the ranking job's own figures.

ARO does not average every subgroup:

* **VG-Relation**: its replication notebook (``notebooks/Replicate ARO! VG-Relation,
  VG-Attribution.ipynb`` in github.com/mertyg/vision-language-models-are-bows) drops the
  relations it lists as symmetric (:data:`SYMMETRIC_RELATIONS`, its list as printed there)
  and averages the per-relation accuracies of the rest;
* **VG-Attribution**: ``VG_Attribution.evaluate_scores`` (``dataset_zoo/aro_datasets.py``)
  keeps only the attribute pairs with at least :data:`MIN_ATTRIBUTE_PAIR_ROWS` rows in the
  file, and the notebook averages their accuracies;
* **COCO-Order / Flickr30k-Order**: ``evaluate_scores`` reports Precision@1, the share of
  test cases whose true caption gets the highest score (its argmax gives a tie to the true
  caption, listed first; see data/aro_order.py for the perturbations that equal it).

The job's own ``macro`` (every subgroup) and accuracy stay; these are reported beside them
as ``aro_macro`` and ``precision_at_1`` (modules/caption_ranking.py).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from .statistics import accuracy_interval, macro_accuracy

__all__ = ["SYMMETRIC_RELATIONS", "MIN_ATTRIBUTE_PAIR_ROWS", "aro_kept_subgroups", "aro_summary"]

#: Relations ARO's replication notebook excludes from the VG-Relation macro accuracy
#: (the list named ``symmetric`` there, in its order).
SYMMETRIC_RELATIONS = frozenset([
    "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing", "chewing", "cleaning",
    "climbing", "close to", "coming from", "coming out of", "contain", "crossing", "dragging", "draped over",
    "drinking", "drinking from", "driving", "driving down", "driving on", "eating from", "eating in", "enclosing",
    "exiting", "facing", "filled with", "floating in", "floating on", "flying", "flying above", "flying in",
    "flying over", "flying through", "full of", "going down", "going into", "going through", "grazing in",
    "growing in", "growing on", "guiding", "hanging from", "hanging in", "hanging off", "hanging over",
    "higher than", "holding onto", "hugging", "in between", "jumping off", "jumping on", "jumping over", "kept in",
    "larger than", "leading", "leaning over", "leaving", "licking", "longer than", "looking in", "looking into",
    "looking out", "looking over", "looking through", "lying next to", "lying on top of", "making", "mixed with",
    "mounted on", "moving", "on the back of", "on the edge of", "on the front of", "on the other side of", "opening",
    "painted on", "parked at", "parked beside", "parked by", "parked in", "parked in front of", "parked near",
    "parked next to", "perched on", "petting", "piled on", "playing", "playing in", "playing on", "playing with",
    "pouring", "reaching for", "reading", "reflected on", "riding on", "running in", "running on", "running through",
    "seen through", "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
    "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on", "smiling at",
    "sniffing", "splashing", "sprinkled on", "stacked on", "standing against", "standing around", "standing behind",
    "standing beside", "standing in front of", "standing near", "standing next to", "staring at", "stuck in",
    "surrounding", "swimming in", "swinging", "talking to", "topped with", "touching", "traveling down",
    "traveling on", "tying", "typing on", "underneath", "wading in", "waiting for", "walking across", "walking by",
    "walking down", "walking next to", "walking through", "working in", "working on", "worn on", "wrapped around",
    "wrapped in", "by", "of", "near", "next to", "with", "beside", "on the side of", "around",
])

#: VG-Attribution: an attribute pair enters ARO's macro accuracy only with at least this
#: many rows in the file (VG_Attribution.evaluate_scores: ``if attr_mask.sum() < 25: continue``).
MIN_ATTRIBUTE_PAIR_ROWS = 25

RULES = {"relation": "relations ARO lists as symmetric dropped",
         "attribution": f"attribute pairs with fewer than {MIN_ATTRIBUTE_PAIR_ROWS} rows dropped"}


def aro_kept_subgroups(kind: str, subgroup_rows: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(kept, dropped) subgroup names (the relation or attribute pair, without the file's
    prefix) of a ``kind`` file under ARO's rule; ``subgroup_rows``: rows in the file per
    subgroup (every row read, measured or not: ARO counts the file's rows)."""
    names = sorted(subgroup_rows)
    if kind == "relation":
        dropped = [s for s in names if s in SYMMETRIC_RELATIONS]
    elif kind == "attribution":
        dropped = [s for s in names if subgroup_rows[s] < MIN_ATTRIBUTE_PAIR_ROWS]
    else:
        raise ValueError(f"ARO's macro is defined for relation and attribution files, not {kind!r}")
    return [s for s in names if s not in dropped], dropped


def aro_summary(out: Mapping[str, dict], benchmarks: Mapping[str, dict], estimators: Sequence[str],
                prefix: str = "ranking") -> dict[str, dict]:
    """ARO's headline figure of each file, from the job's accuracy entries ``out``
    ("<prefix>/<group>[/<sub>]/<est>": {"hits", "n", ...}; statistics.accuracy_summary).

    ``benchmarks``: per file (group) {"kind" ("relation", "attribution" or "order";
    data/ranking_files.py decides from the rows), "subgroup_rows"} and, for order files,
    "perturbations", "equal_to_caption" (perturbations equal to their caption) and
    "cases_with_equal" (test cases holding one). Returns for a relation or attribution
    file "<prefix>/<group>/aro_macro/<est>": the mean over the kept subgroups that have
    predictions, with the normal interval of statistics.macro_accuracy, the count of
    subgroups kept and dropped and the rule; for an order file
    "<prefix>/<group>/precision_at_1/<est>": its accuracy (the same hits) with the Wilson
    interval and the perturbation counts."""
    res = {}
    for group, b in benchmarks.items():
        for est in estimators:
            if b["kind"] == "order":
                entry = out.get(f"{prefix}/{group}/{est}")
                if entry is None:
                    continue
                acc, low, high = accuracy_interval(entry["hits"], entry["n"])
                res[f"{prefix}/{group}/precision_at_1/{est}"] = {
                    "accuracy": acc, "low": low, "high": high, "hits": entry["hits"], "n": entry["n"],
                    "perturbations": list(b.get("perturbations", ())),
                    "equal_to_caption": b.get("equal_to_caption", 0), "cases_with_equal": b.get("cases_with_equal", 0)}
                continue
            kept, dropped = aro_kept_subgroups(b["kind"], b["subgroup_rows"])
            subs = [out[k] for s in kept if (k := f"{prefix}/{group}/{s}/{est}") in out]
            if not subs:
                continue
            acc, low, high = macro_accuracy([(v["hits"], v["n"]) for v in subs])
            res[f"{prefix}/{group}/aro_macro/{est}"] = {
                "accuracy": acc, "low": low, "high": high, "subgroups": len(subs), "dropped_subgroups": len(dropped),
                "n": sum(v["n"] for v in subs), "rule": RULES[b["kind"]]}
    return res
