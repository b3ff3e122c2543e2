"""Training curves of a run as one figure and a CSV (for a model card, or a run without
TensorBoard at hand).

    python -m infodiff_lightning.curves --run runs/train/world/version_0 --out models/world/training_curves
    python -m infodiff_lightning.curves --run runs/train/digits/version_0 runs/train/digits_null/version_0 \
        --out models/digits/training_curves      # a model trained in two stages

Reads the run's TensorBoard events: the training loss (and its moving average) and every
monitored information scalar ``info/<tag>/value`` with its ``info/<tag>/stderr`` band.
Writes <out>.png and <out>.csv (tag, step, value).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_scalars(run: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in a TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def chain_stages(stages: list[dict[str, list[tuple[int, float]]]]) -> dict[str, list[tuple[int, float]]]:
    """The scalars of runs trained one after another, on one step axis. A stage whose steps
    start again at or below the last step so far (a new run begun from the previous stage's
    exported weights) is shifted past that step; a stage that continues the count (a run
    resumed with --ckpt_path) keeps its steps."""
    chained: dict[str, list[tuple[int, float]]] = {}
    last = None
    for scalars in stages:
        steps = [s for rows in scalars.values() for s, _ in rows]
        if not steps:
            continue
        shift = last if last is not None and min(steps) <= last else 0
        for tag, rows in scalars.items():
            chained.setdefault(tag, []).extend((s + shift, v) for s, v in rows)
        last = max(steps) + shift
    return chained


def plot_curves(scalars: dict[str, list[tuple[int, float]]], title: str = ""):
    """Loss (left) and the monitored CMI / MI values with +-1 stderr bands (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_info) = plt.subplots(1, 2, figsize=(12, 4.5))
    loss = scalars.get("train/loss", [])
    if loss:
        steps, values = zip(*loss)
        ax_loss.plot(steps, values, lw=0.5, alpha=0.4, label="train/loss")
        k = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - k):i + 1]) / len(values[max(0, i - k):i + 1]) for i in range(len(values))]
        ax_loss.plot(steps, smooth, lw=1.5, label=f"moving average ({k + 1} points)")
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="denoising loss", title="training loss")
    ax_loss.legend()
    for tag in sorted(t for t in scalars if t.startswith("info/") and t.endswith("/value") and "/pid/" not in t):
        steps, values = zip(*scalars[tag])
        se = dict(scalars.get(tag[: -len("value")] + "stderr", []))
        lo = [v - se.get(s, 0.0) for s, v in zip(steps, values)]
        hi = [v + se.get(s, 0.0) for s, v in zip(steps, values)]
        line, = ax_info.plot(steps, values, marker="o", ms=3, label=tag[len("info/"): -len("/value")])
        ax_info.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
    ax_info.set(xlabel="step", ylabel="nats (probe mean +- stderr)", title="monitored information")
    ax_info.set_yscale("symlog", linthresh=0.1)  # linear below 0.1 nats, where distractors live
    ax_info.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, nargs="+",
                    help="a run folder with TensorBoard events (runs/train/<name>/version_N); several: the stages "
                         "of one model in training order, drawn on one step axis")
    ap.add_argument("--out", required=True, help="output path without extension (.png and .csv are written)")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    for run in args.run:
        if not list(Path(run).glob("events.out.tfevents.*")):
            ap.error(f"--run {run}: no TensorBoard events in this folder")
    scalars = chain_stages([read_scalars(run) for run in args.run])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(scalars, args.title).savefig(out.with_suffix(".png"), dpi=110)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag", "step", "value"])
        for tag, rows in sorted(scalars.items()):
            w.writerows((tag, s, f"{v:.6g}") for s, v in rows)
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
