"""2-process DDP on a dataset whose size is not divisible by the world size.

Seven items on two ranks: the default DistributedSampler would pad rank 1 with a copy of
item 0 (4 + 4 = 8 evaluations, item 0 twice). The analysis jobs use Lightning's
UnrepeatedDistributedSampler instead: rank 0 gets items 0, 2, 4, 6 and rank 1 gets
1, 3, 5, so each item is counted exactly once and the all-reduced summary is the
1-process summary. With batch size 3 the ranks also run unequal numbers of test steps
(rank 0: [0, 2, 4] and [6]; rank 1: [1, 3, 5]), so a per-step collective would hang.

The 2-process runs are `analyze.py` in a subprocess (Lightning re-launches sys.argv for
rank 1); the 1-process reference runs the same CLI entry point in this process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from job_helpers import records, untouched_global_state

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, BATCH = 7, 3
N_DRAWS = 8
WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]


#: The held-out split of the captioned shapes at 16x16: 7 items (ids 32..38), batches of 3.
SHAPES_DATA = ["--data", "infodiff_lightning.data.CaptionedShapesData", "--data.init_args.image_size", "16",
               "--data.init_args.n_train", "32", "--data.init_args.n_val", str(N_ITEMS),
               "--data.init_args.batch_size", str(BATCH)]


def analyze(tmp: Path, name: str, devices: int, *args: str) -> Path:
    """Run the analysis job on 1 process (in this process) or 2 (DDP, gloo, in a subprocess)."""
    common = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp),
              "--trainer.logger.init_args.name", name]
    if devices == 1:
        import analyze as job

        with untouched_global_state():
            assert job.main([*args, *common]) == 0
    else:  # through the sync counter (tests/ddp_sync_counter.py), which counts and changes nothing
        counts = tmp / f"{name}_syncs"
        counts.mkdir()
        cmd = [sys.executable, str(ROOT / "tests" / "ddp_sync_counter.py"), *args, *common,
               "--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "SYNC_COUNT_DIR": str(counts)})
        assert proc.returncode == 0, proc.stderr[-4000:]
    [folder] = (tmp / name).glob("run-*")  # the run folder is named by the run's identity
    return folder


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def logged_scalars(run: Path) -> dict[str, float]:
    """The info/ scalars the job wrote to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("info/")}


def all_reduces_besides_the_data_length_check(rank: dict) -> list:
    """The all_reduce calls of a rank other than Lightning's one check that every rank's
    loader has a length (evaluation_loop.setup_data -> has_len_all_ranks)."""
    return [c for c in rank["all_reduce_callers"] if not any("has_len_all_ranks" in frame for frame in c)]


def sync_counts(run: Path) -> list[dict]:
    """Per rank: the metric synchronisations and all_reduce calls of a 2-process run."""
    folder = run.parents[1] / f"{run.parents[0].name}_syncs"
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


# ---- the ground-truth job (configs/analyze/gaussian.yaml) ---------------------------------

GAUSSIAN = ["--config", str(ROOT / "configs/analyze/gaussian.yaml"), "--model.n_samples", str(N_ITEMS),
            "--model.batch_size", str(BATCH), "--model.n_draws", str(N_DRAWS)]


@pytest.fixture(scope="module")
def gaussian_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gaussian")
    one, two = analyze(tmp, "one", 1, *GAUSSIAN), analyze(tmp, "two", 2, *GAUSSIAN)
    return summary(one)["estimators"], summary(two)["estimators"]


@pytest.mark.slow
def test_ground_truth_job_counts_each_of_7_samples_once_on_2_ranks(gaussian_runs):
    # 7, not 8: no padding duplicate. Each sample costs n_draws (alpha, eps) draws times
    # 2 conditions (null and y), so 7 * 8 * 2 = 112 denoiser evaluations, not 128.
    _, two = gaussian_runs
    for est, row in two.items():
        assert row["samples"] == N_ITEMS, est
        assert row["denoiser_evals"] == N_ITEMS * N_DRAWS * 2, est


@pytest.mark.slow
def test_ground_truth_job_on_2_ranks_gives_the_1_process_summary(gaussian_runs):
    # Samples and draws are keyed by sample id, and the metrics reduce per-sample values in
    # id order, so the float64 additions happen in the same order on 1 and 2 processes.
    one, two = gaussian_runs
    assert two == one  # the same bits: per-sample values are reduced in id order
    assert all(row["samples"] == N_ITEMS for row in one.values())


@pytest.mark.slow
def test_ground_truth_job_synchronises_each_estimator_metric_once(tmp_path_factory, gaussian_runs):
    # Two estimators (orthogonal, standard) and the job's sample counts: three metrics, one
    # compute() each, and no all_reduce for logging the already-reduced values.
    folder = next(tmp_path_factory.getbasetemp().glob("gaussian*/two_syncs"))
    for r in (0, 1):
        rank = json.loads((folder / f"rank{r}.json").read_text())
        assert sorted(rank["metric_syncs"]) == ["PointwiseInformation"] * 2 + ["SampleCounts"]
        assert all_reduces_besides_the_data_length_check(rank) == []


# ---- the caption job (configs/analyze/captions.yaml) on a tiny model ----------------------

@pytest.fixture(scope="module")
def caption_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captions")
    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp / "model")
    args = ["--config", str(ROOT / "configs/analyze/captions.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", "4", "--model.init_args.words", "[red, bottom]",
            "--model.init_args.pairs", "[[green, square]]", "--model.init_args.maps", "false",
            "--data.init_args.n_train", "32", "--data.init_args.n_val", str(N_ITEMS),
            "--data.init_args.batch_size", str(BATCH)]
    return analyze(tmp, "one", 1, *args), analyze(tmp, "two", 2, *args)


@pytest.mark.slow
def test_caption_job_writes_each_of_7_images_once_across_2_ranks(caption_runs):
    # The held-out split is ids 32..38 (it follows n_train = 32 training items); rank 0
    # takes every other one from 32, rank 1 every other one from 33, and nothing twice.
    _, two = caption_runs
    per_rank = [[json.loads(line)["id"] for line in (two / f"per_image.rank{r}.jsonl").read_text().splitlines()]
                for r in (0, 1)]
    assert per_rank == [[32, 34, 36, 38], [33, 35, 37]]
    assert summary(two)["mi"]["images"] == N_ITEMS  # 7, not 8


@pytest.mark.slow
def test_caption_job_on_2_ranks_gives_the_1_process_summary(caption_runs):
    # Each image's draws are keyed by its id and the metrics reduce per-image values in id
    # order: the same bits on 1 and 2 processes, counts included. ('red' is in one of the
    # 7 captions: its stderr is that image's own Monte-Carlo error on both sides.)
    one, two = (summary(run) for run in caption_runs)
    assert records(caption_runs[1]) == records(caption_runs[0])
    assert two == one
    assert one["mi"]["images"] == N_ITEMS and one["cmi/red"]["images"] == 1


@pytest.mark.slow
def test_caption_job_logs_the_1_process_values_on_2_ranks(caption_runs):
    # The logged scalars come from the reduced metrics; TensorBoard stores float32, so the
    # two runs' values agree to float32 rounding.
    one, two = (logged_scalars(run) for run in caption_runs)
    assert set(one) == set(two) and "info/pid/green+square/synergy/value" in one
    for tag in one:
        assert two[tag] == pytest.approx(one[tag], rel=1e-6, abs=1e-12, nan_ok=True), tag


@pytest.mark.slow
def test_caption_job_synchronises_each_metric_once_and_logs_without_a_second_reduction(caption_runs):
    # Tags: mi, cmi/red, cmi/bottom (PointwiseInformation) and pid/green+square
    # (PartialInformation), and the job's sample counts: five metrics, each reduced by one
    # compute() per rank. The
    # logged values are already reduced, so nothing is all-reduced again for logging
    # (self.log(..., sync_dist=True) would cost one all_reduce per logged value).
    for rank in sync_counts(caption_runs[1]):
        assert sorted(rank["metric_syncs"]) == ["PartialInformation"] + ["PointwiseInformation"] * 3 + ["SampleCounts"]
        assert all_reduces_besides_the_data_length_check(rank) == []


# ---- the PID study (configs/analyze/pid_study.yaml) on the same tiny model -----------------

@pytest.fixture(scope="module")
def pid_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pid_study")
    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp / "model")
    args = ["--config", str(ROOT / "configs/analyze/pid_study.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", "4", "--model.init_args.pairs", "[[green, square], [square, bottom]]",
            "--model.init_args.log_images", "0", "--model.init_args.microbatch", "64",
            *SHAPES_DATA]
    return analyze(tmp, "one", 1, *args), analyze(tmp, "two", 2, *args)


@pytest.mark.slow
def test_pid_study_on_2_ranks_gives_the_1_process_summary_and_reduces_each_pair_once(pid_runs):
    # Per-image terms keyed by image id, reduced in id order: the same bits on 2 processes;
    # one PartialInformation per pair and the sample counts, each synchronised once.
    one, two = (summary(run) for run in pid_runs)
    assert two == one and one["samples"]["total"] == N_ITEMS
    for rank in sync_counts(pid_runs[1]):
        assert sorted(rank["metric_syncs"]) == ["PartialInformation"] * 2 + ["SampleCounts"]


# ---- ranking, localization and intervention on the tiny model -------------------------------

@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    from infodiff_lightning.data.world_export import export_world

    tmp = tmp_path_factory.mktemp("world_jobs")
    export_world(tmp / "heldout", "heldout", n=8)
    export_world(tmp / "ranking_files", "heldout", n=16)  # enough attribute swaps for 7 rows
    export_world(tmp / "threshold", "threshold", n=4)
    # the world's captions hold words outside WORDS, spelled in many pieces: a 77-token
    # window (CLIP's) keeps every localized word inside it (a word beyond would be a failure)
    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS, max_tokens=77)), tmp / "model")
    return tmp, model


def one_and_two(tmp: Path, name: str, *args: str) -> tuple[dict, dict]:
    """The summaries of the job on 1 and on 2 processes, after checking that their
    per-sample records are the same bits (each image is measured on its own draws, in
    denoiser calls of one fixed size, so the images beside it change nothing)."""
    folder = tmp / name
    folder.mkdir()
    one, two = analyze(folder, "one", 1, *args), analyze(folder, "two", 2, *args)
    assert records(two) == records(one)
    return summary(one), summary(two)


@pytest.mark.slow
def test_ranking_job_on_2_ranks_gives_the_1_process_summary(world_files):
    tmp, model = world_files
    one, two = one_and_two(tmp, "ranking", "--config", str(ROOT / "configs/analyze/ranking.yaml"),
                           "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "2",
                           "--data.init_args.root", str(tmp / "ranking_files"), "--data.init_args.files",
                           "[vg_attribution.json]", "--data.init_args.limit", str(N_ITEMS),
                           "--data.init_args.image_size", "16", "--data.init_args.batch_size", str(BATCH))
    assert two == one and one["samples"]["total"] == N_ITEMS


@pytest.mark.slow
def test_localization_job_on_2_ranks_gives_the_1_process_summary(world_files):
    # The thresholds are chosen on the selection rows after the reduction: every rank
    # chooses the same ones, for the CMI map and for both attention baselines.
    tmp, model = world_files
    one, two = one_and_two(tmp, "localization", "--config", str(ROOT / "configs/analyze/localization.yaml"),
                           "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "2",
                           "--model.init_args.attention_steps", "2", "--data.init_args.root", str(tmp / "heldout"),
                           "--data.init_args.selection_root", str(tmp / "threshold"), "--data.init_args.image_size",
                           "16", "--data.init_args.batch_size", str(BATCH))
    assert two == one and "attention" in one["localization/all"]


@pytest.mark.slow
def test_intervention_job_on_2_ranks_gives_the_1_process_summary(world_files):
    # Each image is regenerated, and its attention read, on its own: the same bits on any rank.
    tmp, model = world_files
    one, two = one_and_two(tmp, "intervention", "--config", str(ROOT / "configs/analyze/intervention.yaml"),
                           "--model.init_args.pretrained", str(model), "--model.init_args.words", "[red, the]",
                           "--model.init_args.n_draws", "2", "--model.init_args.steps", "2",
                           "--model.init_args.attention_steps", "2", "--model.init_args.n_boot", "200",
                           "--model.init_args.log_images", "0", *SHAPES_DATA)
    assert two == one and one["samples"]["total"] == N_ITEMS


@pytest.mark.slow
def test_map_export_on_2_ranks_writes_each_image_s_map_file_once_with_the_1_process_maps(tmp_path):
    # Each rank writes the map files of the images it measures, beside its own records: 7
    # files in all, none twice, each holding the maps of the 1-process run (draws are keyed
    # by image id; the ranks batch other images together, which moves only float rounding,
    # far below float16's 2^-11).
    from infodiff_lightning.runs.map_files import load_maps

    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp_path / "model")
    args = ["--config", str(ROOT / "configs/analyze/maps.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", "4", "--model.init_args.words", "[red, bottom]",
            "--model.init_args.pairs", "[[green, square]]", "--model.init_args.log_images", "0",
            *SHAPES_DATA]
    one, two = analyze(tmp_path, "one", 1, *args), analyze(tmp_path, "two", 2, *args)
    records = [json.loads(line) for r in (0, 1) for line in (two / f"per_image.rank{r}.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == list(range(32, 32 + N_ITEMS))
    assert sorted(p.name for p in (two / "maps").iterdir()) == sorted(f"{r['id']}.npz" for r in records)
    for r in records:
        mine, reference = load_maps(two / r["maps"]), load_maps(one / r["maps"])
        assert set(mine) == set(reference) and "mi" in mine
        for tag in reference:
            assert torch.allclose(mine[tag], reference[tag], rtol=2 ** -10, atol=1e-6), (r["id"], tag)
