"""Information-guided fine-tuning (MI-TUNE, Wang et al. ICLR 2025) on the embedded world, end to end.

    python mi_tune.py                                   # the configs' sizes (docs/mi_tune.md)
    OMP_NUM_THREADS=1 python mi_tune.py --out runs/mi_tune --candidates 8 --eval_candidates 2   # docs/mi_tune.md
    python mi_tune.py --prompts 6 --candidates 2 --sampler_steps 2 --train_steps 2 ...   # a tiny smoke run
    python mi_tune.py --out runs/mi_tune --report_only        # the tables of what has finished so far

One round (``--rounds`` repeats it):

1. ``analyze.py --config configs/mi_tune/generate.yaml``: M candidates for each selection
   prompt (the world's threshold-split captions no training scene has), DDIM under guidance,
   with MI-TUNE's trajectory score.
2. ``analyze.py --config configs/mi_tune/select.yaml``: every candidate's pointwise MI with a
   standard error and its exact alignment verdict; one image per prompt kept by each arm's
   rule: ``mi`` (argmax MI), ``mi_separated`` (argmax unless within its standard error of the
   next: then random among those), ``trajectory`` (MI-TUNE's score), ``random`` (the
   control), ``truth`` (random among the aligned: the ceiling).
3. ``train.py fit --config configs/mi_tune/finetune.yaml``: a LoRA (rank 32 on the attention
   projections) of the bundled model on each arm's set, the same steps, batch and seed for
   every arm, the InformationMonitor on the colour, shape and position words of the probe.
4. ``analyze.py --config configs/mi_tune/evaluate.yaml``: images of the evaluation prompts
   (held-out captions no training scene has) from the base model and from each adapter,
   the same prompts and noise for every arm.
5. ``python -m infodiff_lightning.runs.score_alignment``: each evaluation run and each
   selected set scored by the exact alignment scorer, per category with Wilson intervals.

Then ``results.json`` and ``results.md`` in ``--out``: alignment per category per arm, the
share of the truth-selected gain over random that each arm recovers (bootstrap over
prompts), each arm's difference from random in standard errors, the diversity of the
selected sets, and the cost (UNet inputs and minutes) of every stage.

Every stage is resumable: a stage whose output exists is skipped (an analysis run whose
status.json says complete, an exported adapter, a score file), and an interrupted analysis
run continues where it stopped when its command is run again. Round r > 1 generates and
selects with each arm's adapter of round r - 1 and trains that adapter further on the
round's selected set (the fine-tuner's ``init_lora``), as MI-TUNE repeats its rounds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs/mi_tune"
ARMS = ("mi", "mi_separated", "trajectory", "random", "truth")
#: Words the monitor tracks when the probe captions hold them: the ones alignment is about.
MONITOR_WORDS = ("red", "blue", "green", "yellow", "square", "circle", "cross", "triangle", "left", "right", "top",
                 "bottom")


def run(cmd: list, log: Path) -> float:
    """Run one ordinary command of this repository, its output appended to ``log``; its wall seconds."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    with open(log, "a") as f:
        f.write("\n$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode not in (0,):
        sys.exit(f"mi_tune: step failed (exit status {done.returncode}; see {log}): {' '.join(cmd)}")
    return time.time() - start


def finished_run(root: Path) -> Path | None:
    """The analysis run folder under ``root`` whose status says complete, if any."""
    for status in sorted(root.glob("*/run-*/status.json")):
        if json.loads(status.read_text()).get("status") in ("complete", "complete_with_failures"):
            return status.parent
    return None


class Loop:
    def __init__(self, args):
        self.a = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = self.out / "commands.log"
        self.cost_file = self.out / "cost.json"
        self.cost = json.loads(self.cost_file.read_text()) if self.cost_file.is_file() else {}

    def note(self, stage: str, seconds: float, inputs: int) -> None:
        self.cost[stage] = {"seconds": round(seconds, 1), "unet_inputs": int(inputs)}
        self.cost_file.write_text(json.dumps(self.cost, indent=2))

    # ---- the stages -----------------------------------------------------------------
    def analyze(self, stage: str, config: str, root: Path, options: list) -> Path:
        """An analysis job with its run folder under ``root`` (skipped when finished)."""
        done = finished_run(root)
        if done is None:
            seconds = run([sys.executable, "analyze.py", "--config", CONFIGS / config,
                           "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root,
                           *options], self.log)
            done = finished_run(root)
            if done is None:
                sys.exit(f"mi_tune: {stage}: no finished run under {root}")
            summary = json.loads((done / "summary.json").read_text())
            self.note(stage, seconds, self.inputs(stage, summary))
        return done

    def inputs(self, stage: str, summary: dict) -> int:
        """UNet inputs (batch rows) a stage cost: 2 per sampler step per image (conditional
        and unconditional), 2 per MI draw per candidate."""
        if "steps" in summary:
            return 2 * summary["images"] * summary["steps"]
        return 2 * summary.get("candidates", 0) * self.a.n_draws

    def generate(self, root: Path, lora: Path | None, evaluation: bool, stage: str) -> Path:
        a = self.a
        opts = ["--model.init_args.pretrained", a.model, "--model.init_args.steps", a.sampler_steps,
                "--model.init_args.guidance", a.guidance]
        if evaluation:
            opts += ["--model.init_args.candidates", a.eval_candidates]
            if a.eval_prompts is not None:
                opts += ["--data.init_args.limit", a.eval_prompts]
        else:
            opts += ["--model.init_args.candidates", a.candidates]
            if a.prompts is not None:
                opts += ["--data.init_args.limit", a.prompts]
        if lora is not None:
            opts += ["--model.init_args.lora", lora]
        return self.analyze(stage, "evaluate.yaml" if evaluation else "generate.yaml", root, opts)

    def select(self, root: Path, candidates: Path, lora: Path | None, rules: list[str], stage: str) -> Path:
        opts = ["--model.init_args.pretrained", self.a.model, "--data.init_args.run", candidates,
                "--model.init_args.n_draws", self.a.n_draws,
                "--model.init_args.rules", json.dumps(rules)]
        if lora is not None:
            opts += ["--model.init_args.lora", lora]
        return self.analyze(stage, "select.yaml", root, opts)

    def finetune(self, arm: str, data: Path, folder: Path, stage: str, start: Path | None) -> Path:
        """A LoRA of the base model on ``data`` (a caption folder), continuing the adapter
        ``start`` (the arm's previous round) when given; its adapter folder."""
        adapter = folder / "adapter"
        if (adapter / "unet_lora").is_dir():
            return adapter / "unet_lora"
        train_root = folder / "train"
        words = self.monitor_words(data)
        cmd = [sys.executable, "train.py", "fit", "--config", CONFIGS / "finetune.yaml",
               "--model.init_args.pretrained", self.a.model, "--model.init_args.export_dir", adapter,
               "--data.init_args.root", data, "--data.init_args.n_probe", self.a.n_probe,
               "--data.init_args.batch_size", self.a.batch_size,
               "--trainer.max_steps", self.a.train_steps, "--trainer.default_root_dir", train_root,
               "--trainer.logger.init_args.save_dir", train_root,
               "--trainer.callbacks.init_args.words", json.dumps(words),
               "--trainer.callbacks.init_args.probe_size", self.a.n_probe,
               "--trainer.callbacks.init_args.every_n_steps", max(1, self.a.train_steps)]
        if start is not None:
            cmd += ["--model.init_args.init_lora", start]
        last = sorted(train_root.glob("finetune/version_*/checkpoints/last.ckpt"))
        if last:  # an interrupted fine-tuning continues from its last checkpoint
            cmd += ["--ckpt_path", last[-1]]
        seconds = run(cmd, self.log)
        if not (adapter / "unet_lora").is_dir():
            sys.exit(f"mi_tune: {stage}: no adapter in {adapter}")
        self.note(stage, seconds, 3 * self.a.train_steps * self.a.batch_size)  # forward + backward ~ 3 forwards
        return adapter / "unet_lora"

    def monitor_words(self, data: Path) -> list[str]:
        """The alignment words that the probe (the last n_probe images of the folder) names."""
        files = sorted(p for p in data.iterdir() if p.suffix == ".png")[-self.a.n_probe:]
        text = " ".join(p.with_suffix(".txt").read_text() for p in files).split()
        return [w for w in MONITOR_WORDS if w in text] or ["a"]

    def score(self, name: str, folder: Path, stage: str) -> dict:
        path = self.out / "scores" / f"{name}.json"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            seconds = run([sys.executable, "-m", "infodiff_lightning.runs.score_alignment", "--run", folder,
                           "--out", path], self.log)
            self.note(stage, seconds, 0)
        return json.loads(path.read_text())

    # ---- the loop --------------------------------------------------------------------
    def write_report(self, scores: dict[str, dict]) -> dict:
        from infodiff_lightning.analyses.mi_tune_report import report

        results = report(scores, self.a.rounds, list(self.a.arms), self.cost)
        (self.out / "results.json").write_text(json.dumps(results["json"], indent=2))
        (self.out / "results.md").write_text(results["markdown"])
        print(results["markdown"])
        return results["json"]

    def report_only(self) -> dict:
        """The tables from the score files already written (a run cut short: what finished)."""
        scores = {}
        folder = self.out / "scores"
        if (folder / "eval_base.json").is_file():
            scores["base"] = json.loads((folder / "eval_base.json").read_text())
        for r in range(1, self.a.rounds + 1):
            for arm in self.a.arms:
                for key, name in ((f"round{r}/selected/{arm}", f"round{r}_selected_{arm}"),
                                  (f"round{r}/{arm}", f"round{r}_eval_{arm}")):
                    if (folder / f"{name}.json").is_file():
                        scores[key] = json.loads((folder / f"{name}.json").read_text())
        return self.write_report(scores)

    def main(self) -> dict:
        a = self.a
        # the control and the ceiling first: a run cut short still has what every arm is compared with
        a.arms = sorted(a.arms, key=lambda arm: (arm not in ("random", "truth"), ARMS.index(arm)))
        adapters: dict[str, Path | None] = {arm: None for arm in a.arms}
        selected: dict[str, list[Path]] = {arm: [] for arm in a.arms}
        scores: dict[str, dict] = {}
        base_eval = self.generate(self.out / "eval/base", None, True, "evaluate/base")
        scores["base"] = self.score("eval_base", base_eval, "score/eval_base")
        for r in range(1, a.rounds + 1):
            rd = self.out / f"round{r}"
            if r == 1:  # one candidate pool from the base model serves every arm
                cands = self.generate(rd / "candidates", None, False, f"round{r}/generate")
                sel = self.select(rd / "select", cands, None, list(a.arms), f"round{r}/select")
                for arm in a.arms:
                    selected[arm].append(sel / "selected" / arm)
            else:  # each arm generates and selects with its own adapter
                for arm in a.arms:
                    cands = self.generate(rd / "candidates" / arm, adapters[arm], False, f"round{r}/generate/{arm}")
                    sel = self.select(rd / "select" / arm, cands, adapters[arm], [arm], f"round{r}/select/{arm}")
                    selected[arm].append(sel / "selected" / arm)
            for arm in a.arms:
                scores[f"round{r}/selected/{arm}"] = self.score(f"round{r}_selected_{arm}", selected[arm][-1],
                                                                f"round{r}/score/selected_{arm}")
            for arm in a.arms:
                adapters[arm] = self.finetune(arm, selected[arm][-1], rd / "finetune" / arm,
                                              f"round{r}/finetune/{arm}", adapters[arm])
            for arm in a.arms:
                ev = self.generate(rd / "eval" / arm, adapters[arm], True, f"round{r}/evaluate/{arm}")
                scores[f"round{r}/{arm}"] = self.score(f"round{r}_eval_{arm}", ev, f"round{r}/score/eval_{arm}")
        return self.write_report(scores)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/mi_tune", help="where every stage writes (default runs/mi_tune)")
    ap.add_argument("--model", default=str(ROOT / "models/world"), help="the base model (default models/world)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="selection rules to fine-tune on")
    ap.add_argument("--prompts", type=int, default=None, help="selection prompts (default: the config's, all)")
    ap.add_argument("--candidates", type=int, default=8, help="candidates per selection prompt")
    ap.add_argument("--n_draws", type=int, default=16, help="MI draws per candidate")
    ap.add_argument("--train_steps", type=int, default=300, help="fine-tuning steps per arm")
    ap.add_argument("--batch_size", type=int, default=16, help="the fine-tuning batch of configs/mi_tune/finetune.yaml")
    ap.add_argument("--n_probe", type=int, default=4, help="images of each set kept as the monitor's probe")
    ap.add_argument("--sampler_steps", type=int, default=20, help="DDIM steps (selection and evaluation)")
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance of generation and evaluation (default 1: at 3 the bundled model "
                         "loses most of its alignment, docs/mi_tune.md)")
    ap.add_argument("--eval_prompts", type=int, default=None, help="evaluation prompts (default: all)")
    ap.add_argument("--eval_candidates", type=int, default=2, help="images per evaluation prompt")
    ap.add_argument("--report_only", action="store_true",
                    help="run nothing: write results.md from the score files already in --out")
    args = ap.parse_args(argv)
    for name in ("rounds", "candidates", "train_steps", "sampler_steps", "eval_candidates", "n_probe"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.n_draws < 2:
        ap.error("--n_draws must be >= 2 (a standard error needs two draws)")
    if not (Path(args.model) / "unet").is_dir():
        ap.error(f"--model {args.model} is not a diffusers folder (no unet/ inside)")
    if "random" not in args.arms:
        ap.error("--arms must include random: every comparison is against the random control")
    args.model = str(Path(args.model).resolve())
    loop = Loop(args)
    loop.report_only() if args.report_only else loop.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
