"""Fine-tuning a flow-matching model: the fine-tuner draws its noisy inputs and targets
from the adapter's flow parametrisation (flow.py), and the monitor measures it while it trains.

The model: the tiny pixel-space text UNet of the other fine-tuning tests with a
FlowMatchEulerDiscreteScheduler (shift 3, as SD3): the loader reads the flow
parametrisation from the scheduler, whatever the backbone.
"""
import math

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from infodiff_lightning.callbacks import InformationMonitor
from infodiff_lightning.data import CaptionedShapesData
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.denoisers.parametrisation import FlowParametrisation
from infodiff_lightning.flow import flow_channel
from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from infodiff_lightning.modules import DiffusionFineTuner

WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]
CAPTIONS = ["a red square on the left", "a blue cross on the top", "a green circle on the right"]


@pytest.fixture(scope="module")
def flow_folder(tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler

    comps = build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS))
    comps["scheduler"] = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return save_components(comps, tmp_path_factory.mktemp("flow") / "tiny_flow")


@pytest.fixture()
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def backbone_call(tuner, images, captions, seed=5):
    """(input, timestep, output) of the backbone in one loss evaluation, and the loss."""
    seen = []
    hooks = [tuner.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) or
                                                      seen.append(args[1].clone())),
             tuner.backbone.register_forward_hook(lambda m, args, out: seen.append(out[0].clone()))]
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            loss = tuner.loss(images, captions)
    finally:
        for h in hooks:
            h.remove()
    return seen[0], seen[1], seen[2], loss


def test_a_flow_scheduler_folder_loads_as_a_flow_model(flow_folder):
    den = load_text_to_image(flow_folder)
    assert isinstance(den.parametrisation, FlowParametrisation) and den.prediction_type == "flow_velocity"
    assert den.alpha_range == pytest.approx((-2 * math.log(999), 2 * math.log(999)))


def test_the_training_input_is_the_flow_path_at_timestep_1000_s(flow_folder, images):
    # x_s = (1 - s) x0 + s eps with the loss's first random draw as eps
    tuner = DiffusionFineTuner(pretrained=str(flow_folder), caption_dropout=0.0)
    x_in, t, _, _ = backbone_call(tuner, images, CAPTIONS)
    x0 = tuner.clean_inputs(images)
    torch.manual_seed(5)
    eps = torch.randn_like(x0)
    assert torch.allclose(x_in, flow_channel(x0, t.double() / 1000, eps), atol=1e-5)
    assert bool(((t > 0) & (t < 1000)).all())


def test_the_flow_loss_is_the_squared_error_of_the_velocity_eps_minus_x0(flow_folder, images):
    tuner = DiffusionFineTuner(pretrained=str(flow_folder), caption_dropout=0.0)
    _, _, out, loss = backbone_call(tuner, images, CAPTIONS)
    x0 = tuner.clean_inputs(images)
    torch.manual_seed(5)
    eps = torch.randn_like(x0)
    assert float(loss) == pytest.approx(float(((out - (eps - x0)) ** 2).mean()), rel=1e-5)


def test_the_logit_normal_density_concentrates_flow_times_as_asked(flow_folder, images):
    # logit_mean 3, logit_std 0.01: every s is sigma(3) = 0.953 to within 1%, so t = 953
    tuner = DiffusionFineTuner(pretrained=str(flow_folder), flow_time_density="logit_normal", logit_mean=3.0,
                               logit_std=0.01)
    _, t, _, _ = backbone_call(tuner, images, CAPTIONS)
    assert torch.allclose(t.double(), torch.full_like(t.double(), 1000 * torch.sigmoid(torch.tensor(3.0)).item()),
                          rtol=0.01)


def test_min_snr_weighting_is_refused_for_a_flow_model(flow_folder):
    with pytest.raises(ValueError, match="min_snr_gamma applies to DDPM-type models"):
        DiffusionFineTuner(pretrained=str(flow_folder), min_snr_gamma=5.0)


def test_a_flow_time_density_is_refused_for_a_ddpm_model(tmp_path):
    folder = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp_path / "ddpm")
    with pytest.raises(ValueError, match="flow_time_density applies to flow-matching models"):
        DiffusionFineTuner(pretrained=str(folder), flow_time_density="uniform")


def test_lora_fine_tuning_a_flow_model_with_the_monitor_logs_information_and_exports(flow_folder, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    module = DiffusionFineTuner(pretrained=str(flow_folder), lora_rank=4, learning_rate=1e-2, caption_dropout=0.0,
                                export_dir=str(tmp_path / "export"))
    monitor = InformationMonitor(words=["yellow"], probe_size=4, every_n_steps=1, n_draws=4, mmse_points=3, mmse_eps=1,
                                 max_time_share=None)
    logger = TensorBoardLogger(str(tmp_path), name="flow")
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=1, callbacks=[monitor])
    trainer.fit(module, datamodule=CaptionedShapesData(n_train=16, n_val=8, batch_size=8))
    acc = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    for tag in ("info/mi/value", "info/cmi/yellow/value"):
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    # the exported adapter loads over its base and is measured like any model
    den = load_text_to_image(flow_folder, lora=tmp_path / "export" / "unet_lora")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    eps = den.eps_hat(x, torch.tensor([0.0, 2.0], dtype=torch.float64), CAPTIONS[:2])
    assert eps.shape == x.shape and bool(torch.isfinite(eps).all())
