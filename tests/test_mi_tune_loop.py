"""The MI-TUNE loop (mi_tune.py) end to end on the bundled world model at a tiny size:
5 selection prompts x 2 candidates, 2 DDIM steps, 2 LoRA steps, 3 evaluation prompts
(about 2 minutes on 2 CPU cores), then a second round of the random arm in the same
folder. What it checks is the plumbing: every stage ran on what the previous one wrote,
the arms got equal sets, the truth arm kept the truest candidate, a second run skips
every finished stage, and round 2 continues round 1's adapter."""
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import mi_tune  # noqa: E402

ARMS = ["mi", "random", "truth"]
SIZES = ["--prompts", "5", "--candidates", "2", "--n_draws", "4", "--train_steps", "2", "--batch_size", "2",
         "--n_probe", "2", "--sampler_steps", "2", "--eval_prompts", "3"]
TINY = [*SIZES, "--eval_candidates", "2", "--arms", *ARMS]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    out = tmp_path_factory.mktemp("mi_tune")
    assert mi_tune.main(["--out", str(out), *TINY]) == 0
    return out


def per_image(run_root: Path) -> list[dict]:
    (run,) = run_root.glob("*/run-*")
    return [json.loads(line) for line in (run / "per_image.rank0.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_every_arm_is_selected_fine_tuned_evaluated_and_scored(loop):
    results = json.loads((loop / "results.json").read_text())["rounds"]["round1"]
    assert set(results["selected_sets"]) == set(ARMS)
    assert {d["images"] for d in results["selected_sets"].values()} == {5}  # one per prompt, every arm alike
    assert set(results["categories"]["aligned"]) == {"base", *ARMS}
    for arm in ARMS:  # each arm's evaluation images came from its own adapter
        adapter = loop / "round1/finetune" / arm / "adapter/unet_lora"
        assert (adapter / "pytorch_lora_weights.safetensors").is_file()
        (config,) = (loop / "round1/eval" / arm).glob("*/run-*/config.yaml")
        assert yaml.safe_load(config.read_text())["model"]["init_args"]["lora"] == str(adapter)
        assert json.loads((loop / f"scores/round1_eval_{arm}.json").read_text())["images"] == 3 * 2
    cost = json.loads((loop / "cost.json").read_text())
    assert cost["round1/generate"]["unet_inputs"] == 2 * 5 * 2 * 2  # (cond + uncond) x images x steps


@pytest.mark.slow
def test_the_truth_arm_keeps_a_candidate_of_the_highest_truth_score_of_its_prompt(loop):
    records = per_image(loop / "round1/select")
    best = {}
    for r in records:
        best[r["prompt"]] = max(best.get(r["prompt"], 0.0), r["truth_score"])
    (sel,) = (loop / "round1/select").glob("*/run-*/selected/truth/selection.jsonl")
    by_id = {r["id"]: r for r in records}
    kept = [json.loads(line) for line in sel.read_text().splitlines()]
    assert [by_id[k["id"]]["truth_score"] for k in kept] == [best[k["prompt"]] for k in kept]


@pytest.mark.slow
def test_the_monitor_tracked_the_alignment_words_of_the_probe(loop):
    (monitor,) = (loop / "round1/finetune/mi/train").glob("finetune/version_*/monitor.jsonl")
    steps = [json.loads(line) for line in monitor.read_text().splitlines()]
    words = {k.split("/")[1] for k in steps[0]["summary"] if k.startswith("cmi/")}
    assert [s["step"] for s in steps] == [0, 2] and words and words <= set(mi_tune.MONITOR_WORDS)


@pytest.mark.slow
def test_a_second_run_skips_every_finished_stage(loop):
    log = loop / "commands.log"
    before = log.read_text()
    assert mi_tune.main(["--out", str(loop), *TINY]) == 0
    assert log.read_text() == before  # no command ran again


@pytest.fixture(scope="module")
def two_rounds(loop):
    # Round 2 of the random arm, continued in the first run's folder: its finished round-1
    # stages are reused (each stage is a process of its own, most of this file's time).
    # One evaluation image per prompt in round 2: the report then has no within-prompt
    # distance (n/a), which once crashed it.
    assert mi_tune.main(["--out", str(loop), *SIZES, "--eval_candidates", "1", "--rounds", "2", "--arms", "random"]) == 0
    return loop, json.loads((loop / "results.json").read_text())["rounds"]


@pytest.mark.slow
def test_a_second_round_generates_with_and_trains_further_the_first_rounds_adapter(two_rounds):
    # MI-TUNE's rounds: round 2 draws its candidates from round 1's adapter, and its
    # fine-tuning starts from that adapter (init_lora) on round 2's own selected set.
    folder, results = two_rounds
    first = folder / "round1/finetune/random/adapter/unet_lora"
    (gen,) = (folder / "round2/candidates/random").glob("*/run-*/config.yaml")
    assert yaml.safe_load(gen.read_text())["model"]["init_args"]["lora"] == str(first)
    (train,) = (folder / "round2/finetune/random/train").glob("finetune/version_*/config.yaml")
    config = yaml.safe_load(train.read_text())
    assert config["model"]["init_args"]["init_lora"] == str(first)
    assert "round2/select/random" in config["data"]["init_args"]["root"]
    assert set(results) == {"round1", "round2"}
