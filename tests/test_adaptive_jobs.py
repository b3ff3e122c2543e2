"""Adaptive precision in the PID-study, prompt-intervention and vector-MI jobs (#29).

Each job takes ``target_stderr`` / ``target_relative`` / ``max_draws`` (adaptive.py): each
image (or vector pair) draws rounds of ``n_draws`` until what it measures is as precise as
asked, and its record says how many draws it took.

Why an absurdly loose target gives exactly the numbers of the fixed ``n_draws`` run: the
first round of an image is ``n_draws`` draws keyed by (seed, image id, round 0), which are
the draws a fixed run keys by (seed, image id) (DrawSpec round 0); a standard error of any
finite size meets a target of 1e9 nats, so every image stops after that round; and its
estimate is computed from that round's terms as the fixed run computes it from the same
terms. Nothing else differs, so the records are the same bits. (An undefined, NaN, error
meets no target: ``n_draws`` must give a defined error, as 4 iid draws do, but 4 paired
draws do not: eq. PAIR has S / 2 degrees of freedom and needs more than 2, so the vector
job, whose default draws are paired, takes 8.)
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze as analyze_cli
from infodiff_lightning.analyses.pid_study import measure_pairs
from infodiff_lightning.data.vector_pairs import VectorPairData
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.denoisers.pid_toys import xor_system
from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from infodiff_lightning.modules import PIDStudy, PromptIntervention, VectorInformation, VectorMITrainer
from job_helpers import records, untouched_global_state
from test_ddp_coverage import SHAPES_DATA, WORDS, analyze, summary
from test_pid_study import CaptionedToy, red_square_images

ROOT = Path(__file__).resolve().parents[1]
N_DRAWS, MAX_DRAWS = 4, 16
LOOSE = ("--model.init_args.target_stderr", "1e9", "--model.init_args.max_draws", str(MAX_DRAWS))
ROUNDS = set(range(N_DRAWS, MAX_DRAWS + 1, N_DRAWS))  # the draw counts an image can end with


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adaptive_jobs")
    return tmp, save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp / "model")


def three_runs(tmp: Path, name: str, args: list[str], target: tuple[str, ...]) -> dict[str, Path]:
    """The job (1 process) at the fixed n_draws, under the loose target and under ``target``."""
    folder = tmp / name
    folder.mkdir()
    return {"fixed": analyze(folder, "fixed", 1, *args), "loose": analyze(folder, "loose", 1, *args, *LOOSE),
            "target": analyze(folder, "target", 1, *args, *target)}


# ---- the PID study ---------------------------------------------------------------------------

PID_TARGET = ("--model.init_args.target_relative", "0.5", "--model.init_args.max_draws", str(MAX_DRAWS))


@pytest.fixture(scope="module")
def pid_runs(tiny_model):
    tmp, model = tiny_model
    args = ["--config", str(ROOT / "configs/analyze/pid_study.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", str(N_DRAWS), "--model.init_args.pairs", "[[green, square], [square, bottom]]",
            "--model.init_args.log_images", "0", "--model.init_args.microbatch", "64", *SHAPES_DATA]
    return three_runs(tmp, "pid", args, PID_TARGET), args


def test_pid_study_records_each_pairs_draws_and_a_loose_target_is_the_fixed_run(pid_runs):
    runs, _ = pid_runs
    fixed, loose, target = (records(runs[k]) for k in ("fixed", "loose", "target"))
    assert loose == fixed  # the same bits (module docstring), draws included
    assert all(p["draws"] == N_DRAWS for r in fixed for p in r["pairs"].values())
    assert summary(runs["loose"])["pairs"] == summary(runs["fixed"])["pairs"]
    draws = [[p["draws"] for p in r["pairs"].values()] for r in target if r["pairs"]]
    assert draws and all(d in ROUNDS for ds in draws for d in ds)
    # context caption: all pairs of an image are one pass, so they share its draw count
    assert all(len(set(ds)) == 1 for ds in draws)
    assert len({ds[0] for ds in draws}) > 1  # the target stops images at different rounds


@pytest.mark.slow
def test_pid_study_under_a_target_on_2_processes_gives_the_1_process_summary(pid_runs):
    # an image's rounds are keyed by (seed, id, round): where it stops cannot depend on the rank
    runs, args = pid_runs
    two = analyze(runs["target"].parents[1], "target_two", 2, *args, *PID_TARGET)
    assert records(two) == records(runs["target"])
    assert summary(two) == summary(runs["target"])


def test_pid_pairs_without_context_stop_each_on_its_own_draws():
    # context "none": each pair is its own pass over the two words alone, so an image's
    # draws for a pair, and its numbers, are those of the pair measured by itself
    x, _, _ = red_square_images(xor_system(), 400)
    x, ids = x[:6], [10, 11, 12, 13, 14, 15]
    captions = ["a red square", "a blue square", "a red square, blue", "a blue round", "a round", "red blue square"]
    pairs = [("red", "square"), ("blue", "square")]
    toy, options = CaptionedToy(xor_system()), {"n_draws": 8, "seed": 3, "target_stderr": 0.15, "max_draws": 48}
    both = measure_pairs(toy, x, ids, captions, pairs, context="none", **options)
    for pair, est in both.items():
        alone = measure_pairs(toy, x, ids, captions, [pair], context="none", **options)[pair]
        assert alone.rows == est.rows and torch.equal(alone.draws, est.draws)
        assert torch.equal(alone.values, est.values) and torch.equal(alone.stderrs, est.stderrs)
        assert set(est.draws.tolist()) <= set(range(8, 49, 8))
    assert int(both[pairs[0]].draws.max()) > 8  # the target asks for more than one round
    fixed = measure_pairs(toy, x, ids, captions, pairs, context="none", n_draws=8, seed=3)
    loose = measure_pairs(toy, x, ids, captions, pairs, context="none", n_draws=8, seed=3, target_stderr=1e9)
    for pair in pairs:
        assert torch.equal(loose[pair].values, fixed[pair].values) and torch.equal(loose[pair].draws,
                                                                                   fixed[pair].draws)


# ---- the prompt intervention ----------------------------------------------------------------

CMI_TARGET = 0.5


@pytest.fixture(scope="module")
def intervention_runs(tiny_model):
    tmp, model = tiny_model
    args = ["--config", str(ROOT / "configs/analyze/intervention.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.words", "[red, the]", "--model.init_args.n_draws", str(N_DRAWS),
            "--model.init_args.steps", "2", "--model.init_args.attention_steps", "0", "--model.init_args.n_boot",
            "200", "--model.init_args.log_images", "0", *SHAPES_DATA]
    return three_runs(tmp, "intervention", args, ("--model.init_args.target_relative", str(CMI_TARGET),
                                                  "--model.init_args.max_draws", str(MAX_DRAWS)))


def test_intervention_records_each_images_draws_and_a_loose_target_is_the_fixed_run(intervention_runs):
    fixed, loose, target = (records(intervention_runs[k]) for k in ("fixed", "loose", "target"))
    assert loose == fixed and all(r["draws"] == N_DRAWS for r in fixed)
    assert summary(intervention_runs["loose"])["all_words"] == summary(intervention_runs["fixed"])["all_words"]
    assert target and all(r["draws"] in ROUNDS for r in target)
    for r in target:  # stopped because the CMI of every word removed met the target, or at the maximum
        words = r["words"].values()
        assert r["draws"] == MAX_DRAWS or all(v["cmi_stderr"] <= CMI_TARGET * abs(v["cmi"]) for v in words)
    assert len({r["draws"] for r in target}) > 1


# ---- the vector MI -------------------------------------------------------------------------

VECTOR_TARGET, VECTOR_DRAWS, VECTOR_MAX = 0.5, 8, 32


@pytest.fixture(scope="module")
def vector_runs(tmp_path_factory):
    """An untrained vector denoiser with the Gaussian baseline (the exact denoiser of a
    Gaussian fitted to the training pairs), on 200 Gaussian pairs (40 held out)."""
    tmp = tmp_path_factory.mktemp("adaptive_vector")
    x, y = CorrelatedGaussian(dim=2, correlation=0.8, spread=2.0, seed=1).sample(200, torch.Generator().manual_seed(0))
    np.savez(tmp / "pairs.npz", x=x.numpy(), y=y.numpy())
    data = VectorPairData(str(tmp / "pairs.npz"), normalization="gaussianize")  # as configs/analyze/vector_mi.yaml
    trainer = VectorMITrainer(width=8, depth=1, ema_decay=None, gaussian_baseline=True)
    trainer.build(*data.dims, data.normalization(), data.train_pairs())
    model = trainer.save_denoiser(tmp / "model")
    args = ["--config", str(ROOT / "configs/analyze/vector_mi.yaml"), "--model.model", str(model),
            "--model.n_draws", str(VECTOR_DRAWS), "--data.x", str(tmp / "pairs.npz")]
    target = ("--model.target_stderr", str(VECTOR_TARGET), "--model.max_draws", str(VECTOR_MAX))
    runs = {}
    for name, extra in (("fixed", ()), ("loose", LOOSE), ("target", target)):
        with untouched_global_state():
            assert analyze_cli.main([*args, *extra, "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar",
                                     "false", "--trainer.default_root_dir", str(tmp / name),
                                     "--trainer.logger.init_args.save_dir", str(tmp / name)]) == 0
        [runs[name]] = (tmp / name / "vector_mi").glob("run-*")
    return runs


def test_vector_mi_records_each_pairs_draws_and_a_loose_target_is_the_fixed_run(vector_runs):
    fixed, loose, target = (records(vector_runs[k]) for k in ("fixed", "loose", "target"))
    assert len(fixed) == 40 and loose == fixed and all(r["draws"] == VECTOR_DRAWS for r in fixed)
    assert summary(vector_runs["loose"])["estimators"] == summary(vector_runs["fixed"])["estimators"]
    assert len(target) == 40 and all(r["draws"] in range(VECTOR_DRAWS, VECTOR_MAX + 1, VECTOR_DRAWS) for r in target)
    for r in target:  # both estimators are watched; two denoiser inputs (null, y) per draw
        assert r["draws"] == VECTOR_MAX or (r["standard_stderr"] <= VECTOR_TARGET
                                           and r["orthogonal_stderr"] <= VECTOR_TARGET)
        assert r["n_evals"] == 2 * r["draws"]
    assert len({r["draws"] for r in target}) > 1
    evals = summary(vector_runs["target"])["estimators"]["standard"]["denoiser_evals"]
    assert evals == sum(r["n_evals"] for r in target)


# ---- options that cannot work ----------------------------------------------------------------

@pytest.mark.parametrize("job,args", [(PIDStudy, {"pretrained": "unused", "pairs": [["red", "square"]]}),
                                      (PromptIntervention, {"pretrained": "unused", "words": ["red"]}),
                                      (VectorInformation, {"model": "unused"})])
@pytest.mark.parametrize("options,message", [({"target_stderr": 0.1, "n_draws": 32, "max_draws": 16},
                                              r"max_draws \(16\) must be >= min_draws \(32\)"),
                                             ({"target_stderr": 0.0}, "target must be > 0"),
                                             ({"target_relative": -0.1}, "relative must be > 0")])
def test_bad_targets_are_refused_before_the_model_is_loaded(job, args, options, message):
    # the options are checked by MeasurementSpec (the caption jobs' validation), whose
    # error names them; the model path is never read
    with pytest.raises(ValueError, match="target_stderr / target_relative / max_draws") as e:
        job(**args, **options)
    assert e.match(message)


# ---- the ground-truth job: adaptive draws still estimate the planted truth ---------------------

def test_ground_truth_job_under_a_target_stays_on_the_closed_form_mi(tmp_path):
    # A 4-dim Gaussian with correlation 0.8: I = -4/2 log(1 - 0.64) = 2.043 nats, known
    # exactly, measured with its exact denoiser. Each sample draws rounds of 8 until both
    # estimators' errors are <= 0.3 nats (or 64 draws): the dataset mean must stay within
    # 3 standard errors of the truth (optional stopping does not bias it measurably here),
    # and samples stop at different rounds.
    truth = -4 / 2 * math.log(1 - 0.8**2)
    run = analyze(tmp_path, "target", 1, "--config", str(ROOT / "configs/analyze/gaussian.yaml"),
                  "--model.system.init_args.dim", "4", "--model.system.init_args.correlation", "0.8",
                  "--model.n_samples", "200", "--model.batch_size", "100", "--model.n_draws", "8",
                  "--model.target_stderr", "0.3", "--model.max_draws", "64")
    rows = records(run)
    assert len(rows) == 200 and len({r["draws"] for r in rows}) > 1
    assert all(r["draws"] in range(8, 65, 8) for r in rows)
    for est, row in summary(run)["estimators"].items():
        assert row["truth"] == pytest.approx(truth)
        assert abs(row["estimate"] - truth) < 3 * row["stderr"], (est, row["estimate"], row["stderr"], truth)
