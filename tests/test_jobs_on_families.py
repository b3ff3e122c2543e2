"""Every analysis job, run through analyze.py with its own config, on the new model
families: the tiny SD3 pipeline (flow matching, three text encoders) for all of them, the
tiny SDXL and Flux pipelines for the caption job, and SDXL for the cross-attention
baselines (attention_steps; the baseline read from SD3's and Flux's joint attention is
tested with their adapters).

What a user checks after a run: the summary exists, its values and standard errors (or
intervals) are finite, every item was measured (no failures file, no tracked word cut
off by the text window), and two processes report what one does.

Single-process runs call analyze.main in this process (no start-up cost); runs on two
processes go through a subprocess, as DDP re-launches the script.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import analyze
from infodiff_lightning.data.world_export import export_world
from tiny_families import save_flux_for_jobs, save_sd3_for_jobs, save_sdxl_for_jobs

# analyze.main is given its arguments while pytest's own are in sys.argv: expected here
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "analyze"
COMMON = ("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false")
#: the caption job as in test_caption_analysis: the first 8 validation shapes, 4 draws;
#: 3 images drawn (the third holds the pair, so its PID maps are drawn too)
CAPTIONS = ("--model.init_args.n_draws", "4", "--model.init_args.words", "[red, bottom]",
            "--model.init_args.pairs", "[[green, square]]", "--model.init_args.log_images", "3",
            "--data.init_args.n_train", "32", "--data.init_args.n_val", "8", "--data.init_args.batch_size", "4")
#: the jobs on the embedded world's held-out scenes, at the tiny VAEs' 16x16 pixels
WORLD = ("--data.init_args.image_size", "16", "--data.init_args.batch_size", "4")
#: the localization rows: masks of two colour and two shape words (both of the config's word
#: types have rows: 9 held-out rows and 3 selection rows in the scenes below)
TYPED_WORDS = ("red", "scarlet", "square", "cross")
PID = ("--model.init_args.n_draws", "4", "--model.init_args.pairs", "[[scarlet, red], [big, red]]",
       "--model.init_args.log_images", "1", "--data.init_args.limit_test", "8", *WORLD)


def arguments(config: str, model: Path, out: Path, name: str, extra: tuple) -> list[str]:
    return ["--config", str(CONFIGS / config), "--model.init_args.pretrained", str(model),
            "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.logger.init_args.name", name, *COMMON, *extra]


def run_folder(out: Path, name: str) -> Path:
    [folder] = (out / name).glob("run-*")  # named by the run's identity
    return folder


def analyze_here(config: str, model: Path, out: Path, name: str, *extra: str) -> Path:
    """The job on one process; its run folder."""
    assert analyze.main(arguments(config, model, out, name, extra)) == 0
    return run_folder(out, name)


def analyze_on_two_processes(config: str, model: Path, out: Path, name: str, *extra: str) -> Path:
    cmd = [sys.executable, str(ROOT / "analyze.py"), *arguments(config, model, out, name, extra),
           "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_folder(out, name)


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def records_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "per_image.rank0.jsonl").read_text().splitlines()]


def finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def assert_complete(folder: Path, total: int) -> dict:
    """Every one of ``total`` items measured: the summary says so and no failures were written."""
    summary = summary_of(folder)
    assert summary["status"] == "complete"
    assert summary["samples"]["measured"] == total and summary["samples"]["failed"] == 0
    assert not list(folder.glob("failures.rank*.jsonl"))
    return summary


# ----------------------------------------------------------------------------- models and data

@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def sd3(out) -> Path:
    # With T5 (SD3.5's transformer): all three encoders, a removed word found in each tokenizer.
    return save_sd3_for_jobs(out / "sd3")


@pytest.fixture(scope="module")
def sdxl(out) -> Path:
    return save_sdxl_for_jobs(out / "sdxl")


@pytest.fixture(scope="module")
def world(out) -> Path:
    """The embedded world's ARO and localization files: 4 held-out scenes, 2 threshold scenes."""
    export_world(out / "heldout", "heldout", n=4, image_size=16, words=TYPED_WORDS)
    export_world(out / "threshold", "threshold", n=2, image_size=16, words=TYPED_WORDS)
    return out


# ----------------------------------------------------------------------------- the caption job

def check_caption_run(folder: Path) -> None:
    summary = assert_complete(folder, 8)
    for tag in ("mi", "cmi/red", "cmi/bottom", *(f"pid/green+square/{t}" for t in
                                                 ("redundancy", "unique1", "unique2", "synergy"))):
        assert finite(summary[tag]["mean"], summary[tag]["stderr"]), tag
    # CaptionedShapes seed 0, ids 32..39: 'red' in 2 captions, 'bottom' in 4, 'green square' in 3
    assert (summary["mi"]["images"], summary["cmi/red"]["images"], summary["cmi/bottom"]["images"]) == (8, 2, 4)
    assert summary["pid/green+square/synergy"]["images"] == 3
    assert not any("beyond_window" in r for r in records_of(folder))  # every word inside the text window
    # maps of the first 3 images: MI and CMI maps of each, PID maps of image 34 (a green square)
    figures = {p.stem for p in (folder / "figures").glob("*.png")}
    assert {"32_mi", "32_cmi_bottom", "33_cmi_red", "34_pid_green+square_synergy"} <= figures


@pytest.fixture(scope="module")
def sd3_captions(sd3, out) -> Path:
    return analyze_here("captions.yaml", sd3, out, "captions-sd3", *CAPTIONS)


def test_the_caption_job_measures_mi_cmi_pid_and_maps_of_every_image_on_sd3(sd3_captions):
    check_caption_run(sd3_captions)


def test_the_caption_job_on_two_processes_gives_the_one_process_summary_on_sd3(sd3_captions, sd3, out):
    two = analyze_on_two_processes("captions.yaml", sd3, out, "captions-sd3-two", *CAPTIONS)
    # draws are keyed by image id and reduced in id order: the same bits on any number of ranks
    assert summary_of(two) == summary_of(sd3_captions)


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_the_caption_job_measures_every_image_on(family, request, out):
    model = request.getfixturevalue("sdxl") if family == "sdxl" else save_flux_for_jobs(out / "flux")
    check_caption_run(analyze_here("captions.yaml", model, out, f"captions-{family}", *CAPTIONS))


# ----------------------------------------------------------------------------- the other jobs on SD3

def test_the_ranking_job_ranks_every_candidate_list_on_sd3(sd3, world):
    folder = analyze_here("ranking.yaml", sd3, world, "ranking-sd3", "--model.init_args.n_draws", "4",
                          "--data.init_args.root", str(world / "heldout"), *WORLD)
    files = ("vg_attribution", "vg_relation", "coco_order")
    rows = sum(len(json.loads((world / "heldout" / f"{f}.json").read_text())) for f in files)
    summary = assert_complete(folder, rows)
    for group in (*files, "all"):
        for scorer in ("standard", "orthogonal"):
            entry = summary[f"ranking/{group}/{scorer}"]
            assert finite(entry["accuracy"], entry["low"], entry["high"])
            assert entry["low"] <= entry["accuracy"] <= entry["high"]
    assert summary["ranking/all/standard"]["n"] == rows


def test_the_localization_job_measures_every_word_mask_on_sd3(sd3, world):
    # attention_steps 0: the attention baseline runs on SDXL below
    folder = analyze_here("localization.yaml", sd3, world, "localization-sd3", "--model.init_args.n_draws", "4",
                          "--model.init_args.attention_steps", "0", "--data.init_args.root", str(world / "heldout"),
                          "--data.init_args.selection_root", str(world / "threshold"), *WORLD)
    annotations = [len(json.loads((world / split / "localization.json").read_text())["annotations"])
                   for split in ("heldout", "threshold")]
    summary = assert_complete(folder, sum(annotations))
    overall = summary["localization/all"]
    assert overall["n"] == annotations[0]  # every held-out word mask is scored
    assert finite(overall["miou"], overall["stderr"], overall["cmi"], overall["cmi_stderr"])
    assert "attention" not in overall
    for name in ("colour", "shape"):  # the config's word types
        assert summary[f"localization/type/{name}"]["n"] > 0 and finite(summary[f"localization/type/{name}"]["miou"])


@pytest.fixture(scope="module")
def sd3_pid(sd3, out) -> Path:
    return analyze_here("pid_study.yaml", sd3, out, "pid-sd3", *PID)


def test_the_pid_study_measures_every_pair_on_sd3(sd3_pid):
    summary = assert_complete(sd3_pid, 8)
    assert {tuple(p["pair"]) for p in summary["pairs"]} == {("scarlet", "red"), ("big", "red")}
    for p in summary["pairs"]:
        assert p["images"] > 0
        for term in ("redundancy", "unique1", "unique2", "synergy"):
            assert finite(p[term]["mean"], p[term]["stderr"], *p[term]["interval"]), (p["pair"], term)


def test_the_pid_study_on_two_processes_gives_the_one_process_summary_on_sd3(sd3_pid, sd3, out):
    two = analyze_on_two_processes("pid_study.yaml", sd3, out, "pid-sd3-two", *PID)
    assert summary_of(two) == summary_of(sd3_pid)


def intervention(model: Path, out: Path, name: str, attention_steps: int) -> dict:
    folder = analyze_here("intervention.yaml", model, out, name, "--model.init_args.words", "[red, the]",
                          "--model.init_args.n_draws", "4", "--model.init_args.steps", "3",
                          "--model.init_args.n_boot", "200", "--model.init_args.attention_steps", str(attention_steps),
                          "--model.init_args.log_images", "1", "--data.init_args.limit_test", "6", *WORLD)
    summary = assert_complete(folder, 6)
    # "the" is in every world caption: its correlations across images are defined
    for r in (summary["all_words"], summary["words"]["the"]):
        for level in ("image_level", "pixel_level"):
            assert finite(r[level]["r"], r[level]["low"], r[level]["high"]), level
    assert summary["words"]["the"]["images"] == 6 and summary["words"]["red"]["images"] > 0
    return summary


def test_the_intervention_job_regenerates_with_euler_on_sd3(sd3, out):
    # a flow model regenerates with its own sampler (Euler on the flow path), and says so
    summary = intervention(sd3, out, "intervention-sd3", attention_steps=0)
    assert summary["sampler"] == "Euler"
    assert "(Euler, 3 steps;" in (run_folder(out, "intervention-sd3") / "report.md").read_text()


def test_the_map_export_writes_every_images_maps_at_latent_resolution_on_sd3(sd3, out):
    folder = analyze_here("maps.yaml", sd3, out, "maps-sd3", "--model.init_args.n_draws", "4",
                          "--model.init_args.words", "[red, cross]", "--model.init_args.pairs", "[[scarlet, red]]",
                          "--model.init_args.log_images", "0", "--data.init_args.limit_test", "6", *WORLD)
    from infodiff_lightning.runs.map_files import load_maps

    assert_complete(folder, 6)
    for r in records_of(folder):
        maps = load_maps(folder / r["maps"])
        measured = {k for k in r if k not in ("id", "caption", "maps", "draws") and not k.endswith("_stderr")}
        assert set(maps) == measured and "mi" in maps
        assert all(m.shape == (8, 8) for m in maps.values())  # 16x16 pixels -> 8x8 VAE latents
        # orthogonal MI and CMI maps sum to the recorded values (float16 rounding of 64 elements)
        for tag in (t for t in maps if not t.startswith("pid/")):
            assert float(maps[tag].double().sum()) == pytest.approx(r[tag], rel=2e-3, abs=1e-3), tag


# ----------------------------------------------------------------------------- attention baselines

def test_the_localization_attention_baselines_run_on_sdxl(sdxl, world):
    folder = analyze_here("localization.yaml", sdxl, world, "localization-sdxl", "--model.init_args.n_draws", "4",
                          "--model.init_args.attention_steps", "2", "--data.init_args.root", str(world / "heldout"),
                          "--data.init_args.selection_root", str(world / "threshold"), *WORLD)
    overall = summary_of(folder)["localization/all"]
    for method in ("attention", "attention_x_cmi"):
        assert finite(overall[method]["miou"], overall[method]["stderr"]), method


def test_the_intervention_attention_baseline_runs_on_sdxl(sdxl, out):
    summary = intervention(sdxl, out, "intervention-sdxl", attention_steps=2)
    assert summary["sampler"] == "DDIM"  # SDXL's scheduler is a DDPM-type table
    baseline = summary["all_words"]["attention"]
    for level in ("image_level", "pixel_level"):
        assert finite(baseline[level]["r"], baseline[level]["low"], baseline[level]["high"]), level


def test_attention_steps_for_a_model_without_cross_attention_is_refused_in_one_line_naming_it():
    from types import SimpleNamespace

    from infodiff_lightning.modules.text_to_image_job import TextToImageJob

    # the check every job with attention_steps makes; analyze.py prints its message as the one error line
    class JointAttentionModel:  # a text denoiser with no cross_attention method
        tokenizer = None

    job = SimpleNamespace(denoiser=JointAttentionModel())
    with pytest.raises(ValueError) as refused:
        TextToImageJob.check_attention(job, 10)
    message = str(refused.value)
    assert "\n" not in message and "JointAttentionModel" in message and "attention_steps: 0" in message
