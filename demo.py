"""The main job on the embedded default, end to end (``make demo``).

    python demo.py                 # about 4 minutes on 2 CPU cores (up to 2x on a slow day)
    python demo.py --steps 100     # shorter fine-tuning

1. ``train.py fit --config configs/demo/finetune.yaml``: the bundled model (models/world,
   trained from scratch on the embedded world) is fine-tuned on a shifted world in which
   every cross is called "lovely", a word it learned to ignore (a distractor that never
   changed an image), with the InformationMonitor measuring the word on a fixed probe
   from step 0: its information rises as the word becomes a name for a shape.
2. ``analyze.py --config configs/demo/analyze.yaml --fresh true``: the caption analysis of
   the fine-tuned model on held-out scenes of the shifted world.
3. ``python -m infodiff_lightning.data.world_export ...`` (twice): the threshold and
   held-out scenes of the shifted world, written as localization folders (only the
   annotations of the new word and a known colour word); then ``analyze.py --config
   configs/demo/localization.yaml --fresh true`` before (``--model.init_args.pretrained
   models/world``) and after fine-tuning: the WordLocalization job (eq. LOC: one threshold
   chosen on the threshold scenes, mean IoU on the held-out ones) beside the whole-image
   baseline.

It ends with the headline findings, where the logs and the report are, and the command
that shows them in TensorBoard. Every step is an ordinary command of this repository;
the demo only chains them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
FINETUNE = ROOT / "configs/demo/finetune.yaml"
ANALYZE = ROOT / "configs/demo/analyze.yaml"
LOCALIZE = ROOT / "configs/demo/localization.yaml"
WORLD = {"threshold": "runs/demo/world_threshold", "heldout": "runs/demo/world_heldout"}  # as in LOCALIZE
BUNDLED = ROOT / "models/world"
SHIFT, NEW_WORD, RENAMED = "shape", "lovely", "cross"  # the shift of configs/demo/*.yaml
KNOWN_WORD = "red"


def run(cmd: list) -> None:
    print("\n$ " + " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"demo: step failed (exit status {done.returncode}): {' '.join(str(c) for c in cmd)}")


def newest(pattern: str, must_hold: str) -> Path:
    found = [p for p in (ROOT / "runs/demo").glob(pattern) if (p / must_hold).exists() and "superseded" not in p.name]
    if not found:
        sys.exit(f"demo: no run folder runs/demo/{pattern} with {must_hold}")
    return max(found, key=lambda p: (p / must_hold).stat().st_mtime)


def export_shifted_world(split: str, n: int) -> None:
    """Write ``n`` scenes of a split of the shifted world as a localization folder."""
    run([sys.executable, "-m", "infodiff_lightning.data.world_export", "--out", WORLD[split], "--split", split,
         "--n", n, "--shift", SHIFT, "--p_shift", "1.0", "--new_word", NEW_WORD, "--words", NEW_WORD, KNOWN_WORD])


def localize(model: Path | None, n_draws: int) -> tuple[dict, Path]:
    """The WordLocalization job with ``model`` (None: the config's, the fine-tuned one) on
    the exported scenes: per word, its summary entry (CMI, mIoU at the chosen threshold,
    whole-image baseline), and the run folder."""
    model_args = [] if model is None else ["--model.init_args.pretrained", model]
    run([sys.executable, "analyze.py", "--config", LOCALIZE, *model_args, "--model.init_args.n_draws", n_draws,
         "--fresh", "true"])
    folder = newest("localization/run-*", "summary.json")
    summary = json.loads((folder / "summary.json").read_text())
    threshold = summary["localization/threshold"]["value"]
    out = {}
    for w in (NEW_WORD, KNOWN_WORD):
        e = summary[f"localization/{w}"]
        out[w] = {"threshold": threshold, "miou": [e["miou"], e["stderr"]],
                  "whole_image": [e["whole_image"], e["whole_image_stderr"]], "maps": e["n"],
                  "cmi": {"mean": e["cmi"], "stderr": e["cmi_stderr"], "images": e["n"]}}
    return out, folder


def pm(entry: dict) -> str:
    se = entry["stderr"]
    return f"{entry['mean']:.2f} +- {se:.2f}" if se is not None else f"{entry['mean']:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default 300)")
    ap.add_argument("--model", default=str(BUNDLED), help="the model to fine-tune (default: the bundled models/world)")
    ap.add_argument("--n_threshold", type=int, default=50, help="scenes for choosing the localization threshold")
    ap.add_argument("--n_heldout", type=int, default=100, help="held-out scenes for localization")
    ap.add_argument("--n_draws", type=int, default=8, help="draws per image for localization")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    if not (Path(args.model) / "unet").is_dir():
        ap.error(f"--model {args.model} is not a diffusers folder (no unet/ inside)")
    py = sys.executable
    run([py, "train.py", "fit", "--config", FINETUNE, "--trainer.max_steps", args.steps,
         "--model.init_args.pretrained", args.model])
    train_run = newest("finetune/version_*", "monitor.jsonl")
    run([py, "analyze.py", "--config", ANALYZE, "--fresh", "true"])
    analysis_run = newest("analysis/run-*", "summary.json")

    print(f"\nlocalizing '{NEW_WORD}' and '{KNOWN_WORD}' before and after fine-tuning ...", flush=True)
    export_shifted_world("threshold", args.n_threshold)
    export_shifted_world("heldout", args.n_heldout)
    loc, loc_runs = {}, {}
    for when, model in (("before", Path(args.model)), ("after", None)):  # after: runs/demo/model
        loc[when], folder = localize(model, args.n_draws)
        loc_runs[when] = str(folder.relative_to(ROOT))
    records = [json.loads(line) for line in (train_run / "monitor.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    tag = f"cmi/{NEW_WORD}"
    findings = {"monitor": {"steps": [first["step"], last["step"]], "before": first["summary"][tag],
                            "after": last["summary"][tag]}, "localization": loc,
                "train_run": str(train_run.relative_to(ROOT)), "analysis_run": str(analysis_run.relative_to(ROOT)),
                "localization_runs": loc_runs}
    (ROOT / "runs/demo/findings.json").write_text(json.dumps(findings, indent=2, allow_nan=False))

    print(f"\n== What fine-tuning taught the model about '{NEW_WORD}', now the name of every {RENAMED} "
          "(nats; mean +- standard error) ==")
    print(f"monitored CMI of '{NEW_WORD}' on the {first['summary'][tag]['images']} probe images that name it:")
    for r in records:
        e = r["summary"][tag]
        print(f"  step {r['step']:>4}: {pm(e)}")
    print(f"\nlocalization on {args.n_heldout} held-out shifted scenes (threshold from {args.n_threshold} others):")
    print("| word | model | CMI | mIoU | whole-image IoU |\n|---|---|---:|---:|---:|")
    for when in ("before", "after"):
        for w, r in loc[when].items():
            print(f"| {w} | {when} | {pm(r['cmi'])} | {r['miou'][0]:.2f} +- {r['miou'][1]:.2f} "
                  f"| {r['whole_image'][0]:.2f} +- {r['whole_image'][1]:.2f} |")
    print(f"\nfine-tuning run:  {findings['train_run']}  (monitor.jsonl, config.yaml, checkpoints/)")
    print(f"analysis report:  {findings['analysis_run']}/report.md")
    print(f"localization:     {loc_runs['before']}/report.md (before), {loc_runs['after']}/report.md (after)")
    print("findings:         runs/demo/findings.json")
    print("view the curves and heat maps:  tensorboard --logdir runs/demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
