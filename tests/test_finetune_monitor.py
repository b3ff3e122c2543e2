"""Fine-tuning with the InformationMonitor: CLI fit, TensorBoard, DDP, resume, LoRA, bad config."""
import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from infodiff_lightning.adaptive import Precision
from infodiff_lightning.callbacks import InformationMonitor
from infodiff_lightning.data import CaptionedShapesData
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.integrate import Piecewise
from infodiff_lightning.measurement import CaptionMetrics, measure_captions
from infodiff_lightning.metrics import InformationMap
from infodiff_lightning.measure import reference_range
from infodiff_lightning.proposal import PROPOSAL_FILE, save_proposal
from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from infodiff_lightning.modules import DiffusionFineTuner

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]


def small_config(tmp: Path, name: str, **monitor) -> Path:
    """Override of configs/train/tiny_shapes.yaml: tiny data, a cheap monitor every step.

    The fixed cadence (max_time_share null): these tests read a point at every step, and a
    measurement costs more than a tiny training step, so a share limit would skip some."""
    mon = {"words": ["red", "bottom"], "pairs": [["green", "square"]], "probe_size": 4, "every_n_steps": 1, "n_draws": 4, "mmse_points": 3,
           "mmse_eps": 1, "microbatch": 64, "max_time_share": None, **monitor}
    cfg = {
        "trainer": {"max_steps": 2, "val_check_interval": None, "limit_val_batches": 0, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "default_root_dir": str(tmp), "accelerator": "cpu",
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp), "name": name}},
                    "callbacks": [{"class_path": "infodiff_lightning.callbacks.InformationMonitor", "init_args": mon},
                                  {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True, "every_n_train_steps": 2}}]},
        "data": {"init_args": {"n_train": 32, "n_val": 8, "batch_size": 8}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(tmp: Path, name: str, *extra: str, **monitor) -> Path:
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/train/tiny_shapes.yaml"),
           "--config", str(small_config(tmp, name, **monitor)), *extra]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / name


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    return fit(tmp, "run", "--model.init_args.learning_rate", "0.0", at_fit_start=True) / "version_0"


def test_two_step_fit_logs_information_scalars_at_each_step(two_step_run):
    for tag in ("info/mi/value", "info/mi/stderr", "info/cmi/red/value", "info/cmi/bottom/stderr",
                "info/pid/green+square/redundancy/value", "info/pid/green+square/synergy/stderr",
                "info/monitor/time_share", "info/monitor/ema"):
        assert sorted(scalars(two_step_run, tag)) == [0, 1, 2], tag  # at_fit_start adds step 0


def test_monitor_writes_each_measurement_to_jsonl_beside_the_events(two_step_run):
    records = [json.loads(line) for line in (two_step_run / "monitor.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    logged = scalars(two_step_run, "info/cmi/red/value")
    assert [r["summary"]["cmi/red"]["mean"] for r in records] == pytest.approx([logged[s] for s in (0, 1, 2)])


def test_two_step_fit_logs_heat_maps_and_mmse_figures(two_step_run):
    acc = EventAccumulator(str(two_step_run), size_guidance={"images": 0})
    acc.Reload()
    images = acc.Tags()["images"]
    assert "info/maps/red" in images and "info/maps/bottom" in images
    assert "info/mmse" in images  # add_figure is stored as an image summary


def test_monitor_says_it_measured_the_ema_weights(two_step_run):
    assert set(scalars(two_step_run, "info/monitor/ema").values()) == {1.0}  # the config keeps an EMA


def test_fit_saves_resolved_config_and_diffusers_export(two_step_run):
    assert "InformationMonitor" in (two_step_run / "config.yaml").read_text()
    assert (two_step_run / "diffusers" / "unet" / "config.json").exists()


def test_fixed_draws_give_identical_points_when_the_model_does_not_change(two_step_run):
    # learning rate 0: the weights never move, and the draws are fixed for the run, so
    # the two points of every curve must be equal (no sampling noise between points).
    mi = scalars(two_step_run, "info/mi/value")
    assert mi[0] == mi[1] == mi[2] and mi[1] > 0


def test_two_process_ddp_logs_the_single_process_values(two_step_run, tmp_path):
    # With a share limit, so step 1's skip decision is rank 0's broadcast (a rank that
    # decided alone could skip a collective the other makes and hang); step 2, the last,
    # is measured either way and compared.
    ddp = fit(tmp_path, "ddp", "--model.init_args.learning_rate", "0.0", "--trainer.devices", "2",
              "--trainer.strategy", "ddp", max_time_share=0.05) / "version_0"
    for tag in ("info/mi/value", "info/mi/stderr", "info/cmi/red/value", "info/cmi/bottom/value",
                "info/pid/green+square/redundancy/value", "info/pid/green+square/synergy/value"):
        one, two = scalars(two_step_run, tag), scalars(ddp, tag)
        assert two[2] == pytest.approx(one[2], rel=1e-5), tag


def test_resume_continues_steps_and_cadence_without_repeats(tmp_path):
    first = fit(tmp_path, "resume", every_n_steps=2) / "version_0"
    ckpt = first / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == 2
    second = fit(tmp_path, "resume", "--trainer.max_steps", "4", "--ckpt_path", str(ckpt), every_n_steps=2) / "version_1"
    assert sorted(scalars(second, "info/mi/value")) == [4]  # step 2 not measured again
    final = torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 4
    monitor_state = next(v for k, v in final["callbacks"].items() if "InformationMonitor" in k)
    assert monitor_state["history"] == [2, 4]


# ---- LoRA --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    comps = build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS))
    return save_components(comps, tmp_path_factory.mktemp("base") / "tiny")


def quick_fit(module, root, steps=2, callbacks=()):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=root,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=list(callbacks))
    dm = CaptionedShapesData(n_train=16, n_val=8, batch_size=8)
    trainer.fit(module, datamodule=dm)
    return trainer


def test_lora_changes_only_adapter_parameters(base_folder, tmp_path):
    module = DiffusionFineTuner(pretrained=str(base_folder), lora_rank=4, learning_rate=1e-2, caption_dropout=0.0)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    quick_fit(module, tmp_path)
    after = module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert all(not p.requires_grad for n, p in module.named_parameters() if "lora_" not in n)


def test_saved_lora_weights_reproduce_the_fine_tuned_eps_hat(base_folder, tmp_path):
    from infodiff_lightning.denoisers import PixelTextDenoiser

    module = DiffusionFineTuner(pretrained=str(base_folder), lora_rank=4, learning_rate=1e-2, caption_dropout=0.0)
    quick_fit(module, tmp_path)
    module.save_pretrained(tmp_path / "out")
    loaded = PixelTextDenoiser.from_pretrained(str(base_folder), lora=str(tmp_path / "out" / "unet_lora"))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    alpha = torch.tensor([0.5, -1.0], dtype=torch.float64)
    prompts = ["a red square on the left", "a blue cross on the top"]
    module.eval()
    with torch.no_grad():
        want = module.denoiser.eps_hat(x, alpha, prompts)
        got = loaded.eps_hat(x, alpha, prompts)
        base = PixelTextDenoiser.from_pretrained(str(base_folder)).eps_hat(x, alpha, prompts)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(base, want, atol=1e-4)  # the adapter did change the model


# ---- the monitor's numbers, without a Trainer -----------------------------------------------

class _Recorder:
    """A logger stand-in that keeps what was logged."""

    def __init__(self):
        self.logged = {}

    def log_metrics(self, scalars, step):
        self.logged.update(scalars)


class _OneProcess:
    """The trainer attributes the monitor reads, for a single process at step 3."""

    global_rank, world_size, global_step, is_global_zero = 0, 1, 3, True

    def __init__(self):
        self.loggers = [_Recorder()]


@pytest.fixture(scope="module")
def scratch_module():
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS))
    module.eval()
    return module


@pytest.fixture(scope="module")
def probe():
    return CaptionedShapesData(n_train=16, n_val=8, batch_size=8).probe_items(4)


def test_mmse_figure_curves_are_the_same_on_one_or_two_ranks(scratch_module, probe):
    # The figure's eps are keyed by probe id, so each image's curve cannot depend on which
    # rank measures it (rank r takes probe[r::2]) nor on what else is in its batch: the
    # two halves must reproduce the all-at-once curves image for image (to float rounding
    # of differently sized batches; eps drawn per rank instead differ by ~15% here).
    monitor = InformationMonitor(words=["blue"], probe_size=4, mmse_points=3, mmse_eps=2)
    denoiser = scratch_module.denoiser
    alphas = torch.linspace(-3.0, 3.0, 3, dtype=torch.float64)
    x = denoiser.encode(torch.stack([it["image"] for it in probe]))
    with torch.no_grad():
        whole = monitor.mmse_per_image(denoiser, x, probe, alphas)
        rank0 = monitor.mmse_per_image(denoiser, x[0::2], probe[0::2], alphas)
        rank1 = monitor.mmse_per_image(denoiser, x[1::2], probe[1::2], alphas)
    assert whole.shape == (4, 2, 3)  # (image, [null, caption], alpha)
    assert torch.allclose(rank0, whole[0::2], rtol=1e-6, atol=0)
    assert torch.allclose(rank1, whole[1::2], rtol=1e-6, atol=0)



def test_mmse_figure_is_the_mean_over_the_first_mmse_images_probe_images(scratch_module, probe):
    # mmse_images=2 of a 4-image probe: the logged curves are the mean of images 0 and 1
    # only, also when the probe is split over two ranks (rank 0 holds images 0 and 2, rank 1
    # images 1 and 3, so each rank contributes one image and the summed states hold two).
    monitor = InformationMonitor(words=["blue"], probe_size=4, mmse_points=3, mmse_eps=1, mmse_images=2,
                                 maps=False, n_draws=2)
    monitor._probe = probe
    denoiser = scratch_module.denoiser
    alphas = torch.linspace(-3.0, 3.0, 3, dtype=torch.float64)
    x = denoiser.encode(torch.stack([it["image"] for it in probe]))
    with torch.no_grad():
        per_image = monitor.mmse_per_image(denoiser, x, probe, alphas)
        totals = []
        for rank in (0, 1):
            curve = InformationMap((2, 3))
            monitor._measure_local(denoiser, probe[rank::2], CaptionMetrics(monitor.spec), curve, alphas)
            totals.append((curve.total, curve.count))
    total, count = totals[0][0] + totals[1][0], totals[0][1] + totals[1][1]
    assert float(count) == 2
    per_image = per_image.double()
    assert torch.allclose(total / count, per_image[:2].mean(0), rtol=1e-6, atol=0)
    assert not torch.allclose(total / count, per_image.mean(0), rtol=1e-3, atol=0)  # images 2, 3 left out


def test_mi_and_each_word_are_measured_on_their_first_probe_images_only(scratch_module):
    # 8 probe images; yellow is in images 1, 2 and 6, right in 1, 2, 3 and 6. mi_images=3:
    # the MI over images 0-2; word_images=2: each word over its first two images that hold
    # it (yellow: 1, 2; right: 1, 2). Split over two ranks as the monitor splits it
    # (probe[r::2]), the two halves together measure exactly those images, and their numbers
    # are those of measuring the images alone.
    probe = CaptionedShapesData(n_train=16, n_val=8, batch_size=8).probe_items(8)
    monitor = InformationMonitor(words=["yellow", "right"], probe_size=8, mmse_points=0, maps=False, n_draws=2,
                                 mi_images=3, word_images=2)
    monitor._probe = probe
    monitor._where = monitor.measured_on(probe, scratch_module.denoiser.tokenizer)
    assert monitor._where == {"mi": {16, 17, 18}, "cmi/yellow": {17, 18}, "cmi/right": {17, 18}}
    values = {}
    with torch.no_grad():
        for rank in (0, 1):
            metrics = CaptionMetrics(monitor.spec)
            monitor._measure_local(scratch_module.denoiser, probe[rank::2], metrics, None, None)
            for tag, metric in metrics.metrics.items():  # each image's value under its id
                if metric.ids:
                    ids, vals = torch.cat(metric.ids).long().tolist(), torch.cat(metric.values).tolist()
                    values.setdefault(tag, {}).update(zip(ids, vals))
        alone = measure_captions(scratch_module.denoiser, torch.stack([it["image"] for it in probe[:3]]),
                                 [16, 17, 18], [it["caption"] for it in probe[:3]], monitor.spec)
    assert sorted(values["mi"]) == [16, 17, 18] and sorted(values["cmi/yellow"]) == [17, 18]
    assert [values["mi"][i] for i in (16, 17, 18)] == alone.mi.value.double().tolist()
    assert [values["cmi/yellow"][i] for i in (17, 18)] == alone.cmi["yellow"].value[1:].double().tolist()


def test_mi_images_or_word_images_below_one_is_refused():
    for option in ("mi_images", "word_images"):
        with pytest.raises(ValueError, match=f"{option} must be >= 1"):
            InformationMonitor(words=["blue"], **{option: 0})
    with pytest.raises(ValueError, match="word_images.blue must be >= 1"):
        InformationMonitor(words=["blue"], word_images={"blue": 0})


def test_word_images_per_word_caps_the_words_named_and_no_other(scratch_module):
    probe = CaptionedShapesData(n_train=16, n_val=8, batch_size=8).probe_items(8)
    monitor = InformationMonitor(words=["yellow", "right"], probe_size=8, word_images={"right": 1})
    # right: its first image only; yellow and the MI are not restricted (no entry: every image)
    assert monitor.measured_on(probe, scratch_module.denoiser.tokenizer) == {"cmi/right": {17}}
    with pytest.raises(ValueError, match="word_images names 'blue', which is not among the words tracked"):
        InformationMonitor(words=["yellow"], word_images={"blue": 2})


def test_mmse_images_below_one_is_refused():
    with pytest.raises(ValueError, match="mmse_images must be >= 1"):
        InformationMonitor(words=["blue"], mmse_images=0)

def test_single_probe_image_logs_its_own_stderr_never_zero(scratch_module, probe):
    # One probe image ("a blue square on the bottom"): with one image there is no spread
    # over images, so MI, CMI and the PID terms report that image's own Monte-Carlo error
    # (positive and finite: 4 draws of a random model never agree exactly). The unique
    # terms may be exactly determined (the same source smaller in every resample), so they
    # are only required to be finite.
    monitor = InformationMonitor(words=["blue"], pairs=[("blue", "square")], probe_size=1, n_draws=4,
                                 mmse_points=0, maps=False, use_ema=False, microbatch=64)
    monitor._probe = probe[:1]
    trainer = _OneProcess()
    monitor.measure(trainer, scratch_module)
    logged = trainer.loggers[0].logged
    for tag in ("info/mi/stderr", "info/cmi/blue/stderr", "info/pid/blue+square/redundancy/stderr",
                "info/pid/blue+square/synergy/stderr"):
        assert 0 < logged[tag] < float("inf"), tag
    for term in ("unique1", "unique2"):
        assert math.isfinite(logged[f"info/pid/blue+square/{term}/stderr"]), term


# ---- options and bad configuration -------------------------------------------------------

def test_ema_weights_differ_from_trained_weights_and_are_restored(tmp_path):
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS), ema_decay=0.5, learning_rate=1e-2,
                                min_snr_gamma=5.0, gradient_checkpointing=True)
    quick_fit(module, tmp_path)
    p = next(p for n, p in module.named_parameters() if p.requires_grad)
    raw = p.detach().clone()
    with module.ema_weights() as on:
        assert on and not torch.equal(p, raw)
    assert torch.equal(p, raw)


@pytest.mark.parametrize("monitor, message", [
    (dict(words=["purple"]), "the word 'purple' occurs in none"),
    (dict(words=["red"], every_n_steps=0), "every_n_steps must be >= 1"),
    (dict(words=["red"], max_time_share=0.0), "max_time_share must be in \\(0, 1\\]"),
])
def test_bad_monitor_configuration_fails_before_training(monitor, message, tmp_path):
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        quick_fit(module, tmp_path, callbacks=[InformationMonitor(probe_size=4, **monitor)])
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_monitor_mistake_in_train_py_is_one_line_and_leaves_no_run_folder(tmp_path):
    # A word no probe caption contains: exit status 2, one "error:" line naming the option,
    # no traceback, and no version_0 folder that would push the next run to version_1.
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/train/tiny_shapes.yaml"),
           "--config", str(small_config(tmp_path, "bad", words=["purple"]))]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and "words: the word 'purple' occurs in none" in last
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "bad").glob("version_*"))


def test_probe_images_of_the_wrong_size_fail_before_training():
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS))  # a 16 x 16 model
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[InformationMonitor(words=["a"], probe_size=4)])
    with pytest.raises(ValueError, match="probe item 16 \\(image \\(3, 32, 32\\)\\) cannot be measured with this "
                                         "model: .*images must be \\(N, 3, 16, 16\\)"):
        trainer.fit(module, datamodule=CaptionedShapesData(n_train=16, n_val=8, image_size=32, batch_size=8))
    assert trainer.global_step == 0


def test_min_snr_weights_never_exceed_one_for_epsilon_prediction():
    # w(t) = min(snr, gamma) / snr: 1 where snr <= gamma, smaller elsewhere. With a huge
    # gamma the loss is the plain one; with gamma = 1 it is smaller on the same draws.
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS))
    batch = CaptionedShapesData(n_train=8, n_val=8, batch_size=8).train_set
    images = torch.stack([batch[i]["image"] for i in range(8)])
    captions = [batch[i]["caption"] for i in range(8)]

    def loss(gamma):
        module.hparams.min_snr_gamma = gamma
        torch.manual_seed(0)
        with torch.no_grad():
            return float(module.loss(images, captions))

    plain, huge, one = loss(None), loss(1e9), loss(1.0)
    assert huge == pytest.approx(plain, rel=1e-6)
    assert one < plain


def test_text_encoder_trains_only_when_asked(tmp_path):
    frozen = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS), learning_rate=1e-2)
    trained = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS), learning_rate=1e-2, train_text_encoder=True)
    changed = {}
    for name, module in (("frozen", frozen), ("trained", trained)):
        before = {k: v.clone() for k, v in module.adapter.text_encoder.state_dict().items()}
        quick_fit(module, tmp_path)
        changed[name] = any(not torch.equal(before[k], v) for k, v in module.adapter.text_encoder.state_dict().items())
    assert changed == {"frozen": False, "trained": True}


def test_exporting_the_last_checkpoint_gives_the_model_saved_at_the_end_of_fit(two_step_run, tmp_path):
    from safetensors.torch import load_file

    from infodiff_lightning.export import main as export

    assert export(["--ckpt", str(two_step_run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "out")]) == 0
    for part in ("unet", "text_encoder"):
        saved = load_file(next((two_step_run / "diffusers" / part).glob("*.safetensors")))
        again = load_file(next((tmp_path / "out" / part).glob("*.safetensors")))
        assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved), part


def test_training_curves_are_written_as_a_figure_and_the_logged_numbers(two_step_run, tmp_path):
    from infodiff_lightning.curves import main as curves

    assert curves(["--run", str(two_step_run), "--out", str(tmp_path / "curves")]) == 0
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    logged = scalars(two_step_run, "info/cmi/red/value")
    assert f"info/cmi/red/value,2,{logged[2]:.6g}" in rows
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_a_second_training_stage_is_drawn_after_the_first_on_one_step_axis():
    from infodiff_lightning.curves import chain_stages

    first = {"train/loss": [(1, 0.5), (2, 0.4)]}
    restarted = {"train/loss": [(1, 0.3), (2, 0.2)]}  # a new run from the first one's weights
    resumed = {"train/loss": [(5, 0.1)]}  # --ckpt_path keeps counting steps
    assert chain_stages([first, restarted, resumed])["train/loss"] == [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.2),
                                                                       (5, 0.1)]


# ---- cadence by wall-time share, on a fake clock --------------------------------------------
# A stand-in measurement and training steps that take fixed times on a fake clock: the
# decisions are the monitor's own code, deterministic, and read from exact numbers.

class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _StepRecorder:
    """A logger stand-in that keeps each step's logged scalars."""

    def __init__(self):
        self.by_step = {}

    def log_metrics(self, scalars, step):
        self.by_step[step] = dict(scalars)


class _BroadcastFrom:
    """A strategy stand-in: broadcast returns ``rank0_answers`` in turn when given (another
    rank's view of rank zero's decision), else the caller's own value (one process); it
    counts the calls, the collectives every rank must make."""

    def __init__(self, rank0_answers=None):
        self.answers, self.calls = rank0_answers, 0

    def broadcast(self, obj, src=0):
        self.calls += 1
        return obj if self.answers is None else self.answers.pop(0)


class _Trainer:
    """The trainer attributes the monitor's cadence reads."""

    global_rank, world_size, is_global_zero = 0, 1, True

    def __init__(self, max_steps, strategy=None):
        self.global_step, self.max_steps = 0, max_steps
        self.strategy = strategy or _BroadcastFrom()
        self.loggers = [_StepRecorder()]


class _TimedMonitor(InformationMonitor):
    """The monitor with a fake clock and a measurement that takes ``measure_seconds`` on it."""

    def __init__(self, measure_seconds: float, **options):
        super().__init__(words=["red"], **options)
        self.clock, self.measure_seconds = _FakeClock(), measure_seconds

    def _check_probe_is_measurable(self, pl_module):
        pass  # no model here; its time would be 0 on the fake clock anyway

    def _measure_probe(self, trainer, pl_module):
        self.clock.now += self.measure_seconds
        return {}, None, {}, None, False


def timed_fit(monitor, steps, step_seconds=1.0, trainer=None, stop_by_max_steps=True):
    """Run the monitor's hooks over ``steps`` training steps of ``step_seconds`` each
    (Lightning's order: fit start, then after each optimizer step, then train end);
    returns the trainer. ``stop_by_max_steps=False``: the run ends at ``steps`` by another
    limit (max_epochs, early stopping), so max_steps does not say which step is last."""
    trainer = trainer or _Trainer(max_steps=steps if stop_by_max_steps else -1)
    monitor.on_fit_start(trainer, None)
    for step in range(1, steps + 1):
        monitor.clock.now += step_seconds
        trainer.global_step = step
        monitor.on_train_batch_end(trainer, None, None, None, step - 1)
    monitor.on_train_end(trainer, None)
    return trainer


def test_a_scheduled_measurement_is_skipped_when_it_would_lift_the_share_above_the_limit():
    # 1 s per measurement, 1 s per step, due every 10 steps, limit 5%. After step 0
    # (1 s of 1 s) a measurement at step s is taken when (M + 1) / (wall + 1) <= 0.05:
    # step 10: 2/12, 20: 2/22, 30: 2/32 all above; step 40: 2/42 = 0.048 taken; then
    # 50: 3/53 above, 60: 3/63 taken; 70: 4/74 above, 80: 4/84 taken; 90: 5/95 above;
    # 100 is the final one, 5 s of 105 s.
    monitor = _TimedMonitor(1.0, every_n_steps=10, at_fit_start=True, max_time_share=0.05)
    trainer = timed_fit(monitor, 100)
    assert monitor.history == [0, 40, 60, 80, 100]
    assert monitor.skipped == [10, 20, 30, 50, 70, 90]
    assert trainer.loggers[0].by_step[100]["info/monitor/time_share"] == pytest.approx(5 / 105)


def test_first_and_final_measurements_are_taken_even_when_they_exceed_the_share():
    # A 10 s measurement against 1 s steps: every measurement in between would take the
    # monitor far above 5% (20/30 at step 10), yet the run's change from step 0 to its end
    # is measured, and the logged share says what it cost: 20 s of 120 s.
    monitor = _TimedMonitor(10.0, every_n_steps=10, at_fit_start=True, max_time_share=0.05)
    trainer = timed_fit(monitor, 100)
    assert monitor.history == [0, 100]
    assert trainer.loggers[0].by_step[100]["info/monitor/time_share"] == pytest.approx(20 / 120)


def test_without_at_fit_start_the_first_scheduled_measurement_is_the_one_always_taken():
    # No step 0: the first due measurement (step 10) has no cost to predict from and is the
    # run's "before"; at 10 s each, step 20 onwards would exceed 5% until the final one.
    monitor = _TimedMonitor(10.0, every_n_steps=10, max_time_share=0.05)
    timed_fit(monitor, 100)
    assert monitor.history == [10, 100]


@pytest.mark.parametrize("stop_by_max_steps", [True, False], ids=["max_steps", "other_limit"])
def test_a_final_measurement_is_taken_at_a_last_step_off_the_cadence(stop_by_max_steps):
    # 95 steps, due every 10: step 95 is not on the cadence. By max_steps it is measured at
    # the step (before the last checkpoint is written); a run stopped otherwise is measured
    # at train end. Either way once.
    monitor = _TimedMonitor(10.0, every_n_steps=10, at_fit_start=True, max_time_share=0.05)
    timed_fit(monitor, 95, stop_by_max_steps=stop_by_max_steps)
    assert monitor.history == [0, 95]


def test_max_time_share_null_keeps_the_fixed_cadence():
    # The 10 s measurement that the 5% limit skips at every step in between is taken at
    # every 10th step, and 95 steps end at 90 with no added final measurement: today's cadence.
    monitor = _TimedMonitor(10.0, every_n_steps=10, at_fit_start=True, max_time_share=None)
    timed_fit(monitor, 95)
    assert monitor.history == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert monitor.skipped == []


def test_under_ddp_every_rank_takes_rank_zeros_skip_decision():
    # Rank 1's own clock says its measurements are cheap (0.001 s: it would measure at every
    # due step), but rank 0, whose answer is broadcast, skips steps 10 and 30 and takes 20.
    # Rank 1 must follow, and ask at every due step that is not first or final (3 of them),
    # so both ranks make the same collectives.
    strategy = _BroadcastFrom(rank0_answers=[False, True, False])
    trainer = _Trainer(max_steps=40, strategy=strategy)
    trainer.global_rank, trainer.is_global_zero = 1, False
    monitor = _TimedMonitor(0.001, every_n_steps=10, at_fit_start=True, max_time_share=0.05)
    timed_fit(monitor, 40, trainer=trainer)
    assert monitor.history == [0, 20, 40]
    assert strategy.calls == 3


def test_a_resumed_run_keeps_counting_the_share_over_the_whole_run():
    # 50 steps (10 s measured at steps 0 and 50 against 50 s of training: 20 of 70 s), then
    # a resume that trains 50 more and measures at 100: the share is 30 s of 130 s, not the
    # 10 s of 60 s of the second session alone, nor 30 s of 60 s.
    first = _TimedMonitor(10.0, every_n_steps=50, at_fit_start=True, max_time_share=0.05)
    timed_fit(first, 50)
    second = _TimedMonitor(10.0, every_n_steps=50, at_fit_start=True, max_time_share=0.05)
    second.load_state_dict(first.state_dict())
    trainer = _Trainer(max_steps=100)
    trainer.global_step = 50
    second.on_fit_start(trainer, None)  # step 50 is in the history: not measured again
    for step in range(51, 101):
        second.clock.now += 1.0
        trainer.global_step = step
        second.on_train_batch_end(trainer, None, None, None, step - 1)
    assert second.history == [0, 50, 100]
    assert trainer.loggers[0].by_step[100]["info/monitor/time_share"] == pytest.approx(30 / 130)


def test_a_real_fit_off_the_cadence_ends_with_a_final_measurement(tmp_path):
    # 2 steps, due every 100: at the default share the run is still measured at step 0 and
    # at its last step, so its change is known whatever the cadence (the cheapest monitor:
    # the measurements' values do not matter here, only when they are taken).
    module = DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS))
    monitor = InformationMonitor(words=["a"], probe_size=1, every_n_steps=100, at_fit_start=True, n_draws=2,
                                 mmse_points=0, maps=False, microbatch=64)
    quick_fit(module, tmp_path, steps=2, callbacks=[monitor])
    assert monitor.max_time_share == 0.05  # the default
    assert monitor.history == [0, 2]


def test_a_target_makes_the_monitor_draw_in_rounds_up_to_its_maximum():
    # rounds of n_draws (8) per probe image until each quantity is within 20% of its value,
    # at most 64 draws: the monitor's measurement is the jobs' (MeasurementSpec.precision)
    monitor = InformationMonitor(words=["blue"], n_draws=8, target_relative=0.2, max_draws=64)
    assert monitor.spec.precision == Precision(None, 0.2, 8, 8, 64)
    assert InformationMonitor(words=["blue"]).spec.precision is None  # no target: a fixed count


def test_a_target_that_cannot_be_met_is_refused_naming_the_option():
    with pytest.raises(ValueError, match="InformationMonitor: target_stderr / target_relative / max_draws"):
        InformationMonitor(words=["blue"], n_draws=32, target_stderr=0.1, max_draws=16)


def test_a_fine_tuned_export_keeps_the_pretrained_models_log_snr_proposal(tmp_path):
    # the jobs that analyse the fine-tuned model then draw where the base model's
    # information is, as the monitor did while it trained
    base = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp_path / "base")
    lo, hi = reference_range(load_text_to_image(base))
    save_proposal(Piecewise((lo, 0.0, hi), (0.3, 0.7)), base / PROPOSAL_FILE)
    module = DiffusionFineTuner(pretrained=str(base))
    out = module.save_pretrained(tmp_path / "tuned")
    assert load_text_to_image(out).alpha_proposal.mass == pytest.approx((0.3, 0.7))
