"""Prompt intervention core: DDIM over the denoiser protocol, image change, correlations."""
import math

import pytest
import torch

from infodiff_lightning.denoisers import CorrelatedGaussian, PixelTextDenoiser
from infodiff_lightning.analyses.intervention import bootstrap_pearson, image_change, pearson
from infodiff_lightning.analyses.regeneration import ddim_sample, logsnr_grid
from infodiff_lightning.logsnr import logsnr_from_alphas_cumprod
from tiny_models import build_cond_unet, build_scheduler, build_text_encoder, build_tokenizer


def test_ddim_in_logsnr_is_diffusers_ddim_scheduler(one_thread):
    # The same tiny UNet, prompts and noise: diffusers' DDIMScheduler loop (eta 0, final
    # abar 1) and ddim_sample on the log-SNRs of that scheduler's timesteps give one image.
    from diffusers import DDIMScheduler

    tok = build_tokenizer()
    den = PixelTextDenoiser(build_cond_unet(in_channels=3), build_text_encoder(tok), tok, build_scheduler("ddpm"))
    ddim = DDIMScheduler.from_config(den.scheduler.config, set_alpha_to_one=True, clip_sample=False)
    ddim.set_timesteps(8)
    prompts = ["a red square", "a blue circle"]
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    with torch.no_grad():
        emb = den.text_embeddings(prompts)
        for t in ddim.timesteps:
            eps = den.unet(x, t, encoder_hidden_states=emb).sample
            x = ddim.step(eps, t, x).prev_sample
    alphas = logsnr_from_alphas_cumprod(den.scheduler.alphas_cumprod)[ddim.timesteps.long()]
    ours = ddim_sample(den, noise, prompts, alphas)
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_ddim_clips_x0_as_the_models_scheduler_says(one_thread):
    # a pixel model whose scheduler sets clip_sample (the bundled models do): diffusers'
    # DDIMScheduler clips x0_hat to [-1, 1] at each step (eps kept); regenerate does the same
    from diffusers import DDIMScheduler

    from infodiff_lightning.analyses.regeneration import regenerate, regeneration_grid

    tok = build_tokenizer()
    den = PixelTextDenoiser(build_cond_unet(in_channels=3), build_text_encoder(tok), tok, build_scheduler("ddpm"))
    den.scheduler.register_to_config(clip_sample=True, clip_sample_range=1.0)
    ddim = DDIMScheduler.from_config(den.scheduler.config, set_alpha_to_one=True)
    ddim.set_timesteps(8)
    prompts = ["a red square", "a blue circle"]
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3  # x0_hat far outside [-1, 1]
    x = noise.clone()
    with torch.no_grad():
        emb = den.text_embeddings(prompts)
        for t in ddim.timesteps:
            x = ddim.step(den.unet(x, t, encoder_hidden_states=emb).sample, t, x).prev_sample
    ours = regenerate(den, noise, prompts, regeneration_grid(den, 8))
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)
    unclipped = ddim_sample(den, noise, prompts, regeneration_grid(den, 8))
    assert not torch.allclose(unclipped, x, atol=1e-2)  # clipping mattered here


def test_ddim_with_the_exact_denoiser_of_a_point_mass_lands_on_it():
    # For X = mu almost surely (a Gaussian of vanishing variance) the exact eps_hat makes
    # x0_hat = mu from the first step on, whatever the noise: DDIM returns mu.
    system = CorrelatedGaussian(dim=2, correlation=0.0, mean=3.0, scale=1e-4, rotate=False)
    noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = ddim_sample(system, noise, system.null_conditions(4), logsnr_grid(-10.0, 10.0, 20))
    torch.testing.assert_close(out, torch.full_like(out, 3.0), atol=1e-3, rtol=0)


def test_image_change_is_mean_squared_per_image_and_channel_summed_per_pixel():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[1, :, 0, 0] = 2.0  # image 1: one pixel changed by 2 in each of 3 channels
    per_image, per_pixel = image_change(a, b)
    assert per_image.tolist() == [0.0, pytest.approx(3 * 4 / 48)]
    assert per_pixel[1, 0, 0] == 12.0 and per_pixel.sum() == 12.0


def test_a_planted_monotone_relation_correlates_and_an_independent_one_does_not():
    g = torch.Generator().manual_seed(0)
    info = torch.rand(300, generator=g, dtype=torch.float64)
    change = info**2 + 0.05 * torch.randn(300, generator=g, dtype=torch.float64)  # monotone in info, plus noise
    unrelated = torch.randn(300, generator=g, dtype=torch.float64)
    strong = bootstrap_pearson(info, change, n_boot=500)
    null = bootstrap_pearson(info, unrelated, n_boot=500)
    assert strong.r > 0.9 and strong.low > 0.85
    assert null.low < 0 < null.high and abs(null.r) < 0.15  # 0 lies inside the interval
    assert strong.n == 300 and strong.level == 0.95


def test_pixel_level_correlation_averages_within_images_and_resamples_images():
    # Within each image the change is a noisy copy of the map (r about 0.7); across images
    # the offsets differ wildly, which a pooled correlation would mix in but the
    # within-image average ignores.
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(10, 64, generator=g, dtype=torch.float64)
    change = maps + 100 * torch.arange(10, dtype=torch.float64)[:, None] \
        + 0.3 * torch.randn(10, 64, generator=g, dtype=torch.float64)
    groups = torch.arange(10).repeat_interleave(64)
    c = bootstrap_pearson(maps.flatten(), change.flatten(), n_boot=500, groups=groups)
    per_image = pearson(maps, change)
    assert c.r == pytest.approx(float(per_image.mean()))
    assert c.n == 10 and c.low <= c.r <= c.high
    assert 0.5 < c.r < 0.9


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="alphas must increase"):
        ddim_sample(CorrelatedGaussian(dim=1), torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="need at least 3 pairs"):
        bootstrap_pearson([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="shapes differ"):
        image_change(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))
    assert math.isnan(float(pearson(torch.ones(5), torch.arange(5.0))))  # a constant side has no correlation
