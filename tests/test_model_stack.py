"""One model stack: the fine-tuner trains on exactly what the estimators measure.

The fine-tuner holds the estimators' adapter (loaded from the folder by the same
``load_text_to_image`` the analysis jobs use), so its training latents, its noise
schedule, its text embeddings and its prediction type are the adapter's. Models are
tiny, saved to disk and loaded back by the path users take; nothing is downloaded.
"""
import pytest
import torch

from infodiff_lightning.denoisers import LatentDiffusionDenoiser, load_text_to_image
from infodiff_lightning.denoisers.prediction import PREDICTION_TYPES, eps_from_prediction, prediction_target
from infodiff_lightning.logsnr import logsnr_from_alphas_cumprod, noise_channel
from infodiff_lightning.models.tiny import save_components
from infodiff_lightning.modules import DiffusionFineTuner
from tiny_models import build_sd_components, save_pixel_text

SHIFT, SCALE = 0.3, 0.5


def shifted_vae():
    """The tiny VAE of tiny_models with a non-zero shift_factor (as SD3 / Flux VAEs have)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(2)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16, shift_factor=SHIFT,
                         scaling_factor=SCALE).eval()


@pytest.fixture(scope="module")
def latent_folder(tmp_path_factory):
    parts = build_sd_components()
    parts["vae"] = shifted_vae()
    return save_components(parts, tmp_path_factory.mktemp("sd") / "model")


@pytest.fixture()
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1


def test_training_latents_are_the_adapters_encode_with_the_vae_shift(latent_folder, images):
    tuner = DiffusionFineTuner(pretrained=str(latent_folder))
    adapter = LatentDiffusionDenoiser.from_pretrained(latent_folder)
    x_train, x_measure = tuner.clean_inputs(images), adapter.encode(images)
    assert torch.equal(x_train, x_measure)
    # and by hand: (posterior mean - shift) * scale; a trainer that ignored the shift would
    # be off by SHIFT * SCALE = 0.15 in every latent element.
    with torch.no_grad():
        mean = adapter.vae.encode(images).latent_dist.mean
    assert torch.allclose(x_train, (mean - SHIFT) * SCALE, atol=1e-6)
    assert not torch.allclose(x_train, mean * SCALE, atol=0.1)


@pytest.fixture(scope="module")
def ddim_folder(tmp_path_factory):
    from diffusers import DDIMScheduler

    folder = save_pixel_text(tmp_path_factory.mktemp("pixel") / "model")
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False).save_pretrained(folder / "scheduler")
    return folder


def test_the_scheduler_class_saved_in_the_folder_is_the_one_both_use(ddim_folder):
    from diffusers import DDIMScheduler

    tuner = DiffusionFineTuner(pretrained=str(ddim_folder))
    adapter = load_text_to_image(ddim_folder)
    assert type(tuner.adapter.scheduler) is DDIMScheduler and type(adapter.scheduler) is DDIMScheduler
    assert torch.equal(tuner.adapter.scheduler.alphas_cumprod, adapter.scheduler.alphas_cumprod)


def test_the_noisy_training_input_is_the_estimators_channel_at_the_timesteps_log_snr(ddim_folder):
    # x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps is eq. (1) at alpha = log(abar_t / (1 - abar_t)):
    # the UNet is trained on the inputs the estimators feed it.
    tuner = DiffusionFineTuner(pretrained=str(ddim_folder), caption_dropout=0.0)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen = []
    hook = tuner.backbone.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        torch.manual_seed(5)
        with torch.no_grad():
            tuner.loss(images, ["a cat", "a dog", "a red sofa"])
    finally:
        hook.remove()
    x_t, t = seen[0]
    x0 = tuner.clean_inputs(images)
    torch.manual_seed(5)
    eps = torch.randn_like(x0)  # the loss's first random draw
    alpha = logsnr_from_alphas_cumprod(tuner.adapter.scheduler.alphas_cumprod.double())[t]
    assert torch.allclose(x_t, noise_channel(x0.double(), alpha, eps.double()).float(), atol=1e-5)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_the_training_target_is_what_eps_from_prediction_inverts(kind):
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64), torch.randn(4, 3, 5, 5, generator=g,
                                                                                    dtype=torch.float64)
    alpha = torch.tensor([-4.0, -1.0, 0.5, 3.0], dtype=torch.float64)
    abar = torch.sigmoid(alpha)
    x_t = noise_channel(x0, alpha, eps)
    target = prediction_target(x0, eps, abar, kind)
    assert torch.allclose(eps_from_prediction(target, x_t, alpha, kind), eps, atol=1e-10)


def test_training_the_text_encoder_sends_gradients_through_the_shared_prompt_encoder(ddim_folder):
    tuner = DiffusionFineTuner(pretrained=str(ddim_folder), train_text_encoder=True, caption_dropout=0.0)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    torch.manual_seed(0)
    tuner.loss(images, ["a cat on the mat", "a red dog"]).backward()
    grads = [p.grad for p in tuner.adapter.text_encoder.parameters() if p.requires_grad]
    assert grads and any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_the_monitor_gets_the_adapter_the_fine_tuner_trains(ddim_folder):
    tuner = DiffusionFineTuner(pretrained=str(ddim_folder))
    den = tuner.denoiser
    assert den.backbone is tuner.backbone and den.text_encoder in list(tuner.others)
