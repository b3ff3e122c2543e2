"""LatentDiffusionDenoiser: a tiny Stable Diffusion pipeline, saved with save_pretrained and
loaded through the adapter's public from_pretrained, behaves as the design says.

Tiny pipeline (tiny_models.py): 16x16 RGB images -> VAE latents 4x8x8, a (32, 64) UNet
with cross-attention on a 2-layer, 32-dim CLIP text encoder, SD's scaled-linear
1000-step schedule (PNDM scheduler, as in SD 1.x), so the trained log-SNR range is
[logsnr(t=999), logsnr(t=0)] = [-5.36, 7.07].
"""
import shutil
from types import SimpleNamespace

import pytest
import torch

from infodiff_lightning import (conditional_mi, informations, logsnr_from_timestep, noise_channel, pointwise_mi,
                                sample_draws, timestep_from_logsnr, trained_logsnr_range)
from infodiff_lightning.conditions import remove_word
from infodiff_lightning.denoisers import LatentDiffusionDenoiser
from infodiff_lightning.logsnr import interpolate_timesteps
from infodiff_lightning.denoisers.prediction import eps_from_prediction
from infodiff_lightning.estimators import default_sampler
from infodiff_lightning.logsnr import logsnr_from_alphas_cumprod
from tiny_models import MAX_TOKENS, save_sd_pipeline, set_prediction_type

PROMPTS = ["a red cat on the mat", "a photo of a blue sofa"]
WORDS = ["red", "blue"]  # one word per image, for CMI


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return save_sd_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def den(sd_dir):
    return LatentDiffusionDenoiser.from_pretrained(sd_dir)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def z(den, images):
    return den.encode_images(images)


def fresh(den, **kw):
    """A new adapter around the same loaded modules (empty caches)."""
    return LatentDiffusionDenoiser(den.unet, den.vae, den.text_encoder, den.tokenizer, den.scheduler, **kw)


def direct_text_embedding(den, prompts):
    ids = den.tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        return den.text_encoder(ids)[0]


# ---------------------------------------------------------------- loading

def test_saved_pipeline_loads_through_from_pretrained(den, sd_dir):
    assert (sd_dir / "model_index.json").is_file()  # the full StableDiffusionPipeline layout
    assert type(den.unet).__name__ == "UNet2DConditionModel" and type(den.vae).__name__ == "AutoencoderKL"
    assert type(den.scheduler).__name__ == "PNDMScheduler" and den.prediction_type == "epsilon"
    assert den.alpha_range == trained_logsnr_range(den.scheduler.alphas_cumprod)
    assert den.alpha_range == pytest.approx((-5.364, 7.069), abs=1e-3)  # SD's scaled-linear schedule


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LatentDiffusionDenoiser.from_pretrained(tmp_path / "no_such_model")


def test_folder_without_unet_is_a_clear_error(sd_dir, tmp_path):
    broken = shutil.copytree(sd_dir, tmp_path / "sd", ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(FileNotFoundError, match="has no unet/ subfolder"):
        LatentDiffusionDenoiser.from_pretrained(broken)


def test_unsupported_prediction_type_is_a_clear_error(sd_dir, tmp_path, den):
    odd = shutil.copytree(sd_dir, tmp_path / "sd")
    set_prediction_type(odd, "flow_prediction")
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow_prediction'"):
        LatentDiffusionDenoiser.from_pretrained(odd)
    with pytest.raises(ValueError, match="unsupported prediction_type 'x0'"):
        fresh(den, prediction_type="x0")


def test_unet_needing_added_conditions_is_refused(den):
    class SDXLLike(torch.nn.Module):
        config = SimpleNamespace(in_channels=4, cross_attention_dim=32, addition_embed_type="text_time")

    with pytest.raises(ValueError, match="SDXL"):
        LatentDiffusionDenoiser(SDXLLike(), den.vae, den.text_encoder, den.tokenizer, den.scheduler)


# ---------------------------------------------------------------- eps_hat

def test_alpha_maps_to_a_fractional_timestep_by_interpolation(den):
    alpha = torch.tensor([-2.3, 0.7, 4.1], dtype=torch.float64)
    t = den.timesteps(alpha)
    assert t.dtype == torch.float32 and not torch.equal(t, t.round())  # not rounded to a training step
    assert torch.allclose(logsnr_from_timestep(t.double(), den.scheduler.alphas_cumprod), alpha, atol=1e-4)


def test_device_side_interpolation_equals_linear_interpolation_of_the_table(den):
    # The branch eps_hat takes for alphas on an accelerator (no host sync), run on CPU,
    # against numpy's independent piecewise-linear interpolation of t over logsnr(t).
    import numpy as np

    alpha = torch.linspace(*den.alpha_range, 101, dtype=torch.float64)
    table = logsnr_from_alphas_cumprod(den.scheduler.alphas_cumprod).flip(0)
    n = table.numel()
    expected = (n - 1) - np.interp(alpha.numpy(), table.numpy(), np.arange(n, dtype=np.float64))
    assert np.allclose(interpolate_timesteps(alpha, table).numpy(), expected, atol=1e-9)


def test_eps_hat_equals_a_direct_unet_call_at_the_interpolated_timestep(den):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    alpha = torch.tensor([-2.3, 4.1], dtype=torch.float64)
    t = timestep_from_logsnr(alpha, den.scheduler.alphas_cumprod)
    with torch.no_grad():
        direct = den.unet(x, t.float(), encoder_hidden_states=direct_text_embedding(den, PROMPTS)).sample
    torch.testing.assert_close(den.eps_hat(x, alpha, PROMPTS), direct, rtol=0, atol=1e-6)


def test_alpha_outside_the_trained_range_is_refused(den):
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="outside the trained range"):
        den.eps_hat(x, torch.tensor([0.0, 8.0], dtype=torch.float64), PROMPTS)


def test_v_prediction_checkpoint_output_is_converted_to_eps(sd_dir, tmp_path):
    v_dir = shutil.copytree(sd_dir, tmp_path / "sd_v")
    set_prediction_type(v_dir, "v_prediction")
    den_v = LatentDiffusionDenoiser.from_pretrained(v_dir)
    assert den_v.prediction_type == "v_prediction"
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    alpha = torch.tensor([-1.0, 3.0], dtype=torch.float64)
    t = timestep_from_logsnr(alpha, den_v.scheduler.alphas_cumprod).float()
    with torch.no_grad():
        v = den_v.unet(x, t, encoder_hidden_states=direct_text_embedding(den_v, PROMPTS)).sample
    a = alpha.float()[:, None, None, None]
    # eps = sqrt(abar) v + sqrt(1 - abar) x_t with abar = sigma(alpha)
    expected = torch.sigmoid(a).sqrt() * v + torch.sigmoid(-a).sqrt() * x
    torch.testing.assert_close(den_v.eps_hat(x, alpha, PROMPTS), expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- prediction types

def analytic_case():
    """x0, eps and alphas in float64: x_t = noise_channel(x0, alpha, eps) has known eps."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.linspace(-1, 1, 3 * 4 * 8 * 8, dtype=torch.float64).reshape(3, 4, 8, 8)
    eps = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    alpha = torch.tensor([-4.0, 0.0, 5.0], dtype=torch.float64)
    return x0, eps, alpha, noise_channel(x0, alpha, eps)


def model_output(kind, x0, eps, alpha):
    a = alpha.reshape(-1, 1, 1, 1)
    sa, s1 = torch.sigmoid(a).sqrt(), torch.sigmoid(-a).sqrt()
    return {"epsilon": eps, "v_prediction": sa * eps - s1 * x0, "sample": x0}[kind]


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_each_prediction_type_converts_exactly_to_eps(kind):
    x0, eps, alpha, xt = analytic_case()
    got = eps_from_prediction(model_output(kind, x0, eps, alpha), xt, alpha, kind)
    torch.testing.assert_close(got, eps, rtol=0, atol=1e-12)  # float64 round-off only


class OracleUNet(torch.nn.Module):
    """Predicts, for known clean latents x0, the exact target of its prediction type at
    the timestep it is called with (it never sees alpha)."""

    config = SimpleNamespace(in_channels=4, cross_attention_dim=32)

    def __init__(self, x0, alphas_cumprod, kind):
        super().__init__()
        self.x0, self.abar, self.kind = x0, alphas_cumprod, kind
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the adapter a device and dtype

    def forward(self, x_t, t, encoder_hidden_states, return_dict=False):
        alpha = logsnr_from_timestep(t.double(), self.abar)
        a = alpha.reshape(-1, 1, 1, 1)
        eps = (x_t.double() - torch.sigmoid(a).sqrt() * self.x0) / torch.sigmoid(-a).sqrt()
        return (model_output(self.kind, self.x0, eps, alpha).float(),)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_adapter_recovers_the_true_eps_from_an_oracle_of_each_prediction_type(den, kind):
    x0, eps, alpha, xt = analytic_case()
    oracle = OracleUNet(x0, den.scheduler.alphas_cumprod, kind)
    adapter = LatentDiffusionDenoiser(oracle, den.vae, den.text_encoder, den.tokenizer, den.scheduler,
                                      prediction_type=kind)
    got = adapter.eps_hat(xt.float(), alpha, ["a cat"] * 3)
    # Not 1e-12: x_t travels in float32 and the timestep as a float32 (t ~ 100s carries
    # ~1e-5 steps of rounding, i.e. ~1e-6 in alpha), amplified by exp(alpha/2) < 13 for "sample".
    torch.testing.assert_close(got.double(), eps, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- images -> latents

def test_encode_images_returns_the_scaled_vae_posterior_mean(den, images, z):
    with torch.no_grad():
        mean = den.vae.encode(images).latent_dist.mean
    assert den.latents.scaling_factor == den.vae.config.scaling_factor == 0.18215
    torch.testing.assert_close(z, mean * 0.18215, rtol=0, atol=1e-6)
    assert z.shape == (2, 4, 8, 8)
    assert torch.equal(den.encode_images(images), z)  # the mean, not a sample: deterministic


def test_encode_images_caches_latents_by_image_id(den, images):
    d = fresh(den)
    first = d.encode_images(images, ids=["img0", "img1"])
    again = d.encode_images(-images, ids=["img0", "img1"])  # other pixels, same ids: served from the cache
    assert torch.equal(first, again)
    d.clear_cache()
    assert not torch.equal(d.encode_images(-images, ids=["img0", "img1"]), first)


def test_encode_images_refuses_pixels_outside_minus_one_one(den, images):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        den.encode_images((images + 1) * 127.5)


# ---------------------------------------------------------------- estimators end to end

def test_pointwise_mi_runs_end_to_end_with_maps_at_latent_resolution(den, z):
    est = pointwise_mi(den, z, PROMPTS, n_draws=4, generator=0, maps=True)
    assert est.map.shape == (2, 8, 8)  # summed over the 4 latent channels
    assert bool((est.value > 0).all())  # orthogonal MI is non-negative; a prompt differs from ""
    torch.testing.assert_close(est.map.sum((1, 2)), est.value, rtol=1e-5, atol=0)  # the map adds up
    std = informations(den, z, [den.null_conditions(2), PROMPTS], [(0, 1)], estimator="standard", n_draws=4,
                       generator=0, maps=True)[0]
    assert bool(torch.isfinite(std.value).all())
    torch.testing.assert_close(std.map.sum((1, 2)), std.value, rtol=1e-4, atol=1e-5)


def test_estimates_do_not_depend_on_the_microbatch_size(den, z):
    draws = sample_draws(2, 4, (4, 8, 8), default_sampler(den), torch.Generator().manual_seed(5))
    ref = pointwise_mi(den, z, PROMPTS, draws=draws, microbatch=4096, return_terms=True)
    for mb in (1, 3):
        other = pointwise_mi(den, z, PROMPTS, draws=draws, microbatch=mb, return_terms=True)
        # Same draws; only the batch composition of the UNet calls differs (float32 kernels).
        torch.testing.assert_close(other.terms, ref.terms, rtol=1e-5, atol=1e-6)
    same_seed = pointwise_mi(den, z, PROMPTS, n_draws=4, generator=5, microbatch=2)
    torch.testing.assert_close(same_seed.value, ref.value, rtol=1e-5, atol=1e-6)  # an int seed = those draws


def test_identical_conditions_give_exactly_zero_orthogonal_mi(den, z):
    # Both columns hit one cached embedding and the same noisy inputs: the gap is exactly 0.
    est = informations(den, z, [PROMPTS, list(PROMPTS)], [(0, 1)], n_draws=4, generator=0)[0]
    assert torch.equal(est.value, torch.zeros(2))
    assert torch.equal(conditional_mi(den, z, PROMPTS, PROMPTS, n_draws=4, generator=0).value, torch.zeros(2))


def test_cmi_of_a_word_equals_the_orthogonal_gap_between_prompt_without_it_and_full_prompt(den, z):
    context = [remove_word(p, w, tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    assert context == ["a cat on the mat", "a photo of a sofa"]
    draws = sample_draws(2, 3, (4, 8, 8), default_sampler(den), torch.Generator().manual_seed(6))
    est = conditional_mi(den, z, PROMPTS, context, draws=draws, return_terms=True)
    for n in range(2):  # 1/2 w ||eps_hat(x_a | c) - eps_hat(x_a | w, c)||^2, draw by draw
        x_a = noise_channel(z[n].expand(3, -1, -1, -1), draws.alpha[n], draws.eps[n])
        gap = den.eps_hat(x_a, draws.alpha[n], [context[n]] * 3) - den.eps_hat(x_a, draws.alpha[n], [PROMPTS[n]] * 3)
        torch.testing.assert_close(est.terms[n], 0.5 * draws.weight[n].float() * gap.pow(2).sum((1, 2, 3)),
                                   rtol=1e-5, atol=1e-6)


def test_masked_word_context_runs_and_is_another_intervention_than_deletion(den, z):
    deleted = [remove_word(p, w, tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    masked = [remove_word(p, w, method="mask", tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    by_delete = conditional_mi(den, z, PROMPTS, deleted, n_draws=3, generator=1)
    by_mask = conditional_mi(den, z, PROMPTS, masked, n_draws=3, generator=1)
    assert bool((by_mask.value > 0).all()) and not torch.allclose(by_mask.value, by_delete.value)


def test_text_is_encoded_once_per_unique_condition_across_the_whole_pass(den, z):
    d = fresh(den)
    pointwise_mi(d, z, PROMPTS, n_draws=4, generator=0, microbatch=2)
    assert len(d.text) == 3  # "", and the two prompts: 16 UNet inputs, 3 text encodings


def test_a_word_beyond_the_text_encoders_window_is_left_out_not_averaged_in_as_zero(den, z):
    # the tiny encoder sees 16 positions; "red" at position 17 is cut off, so removing it
    # changes nothing the model sees: its CMI would read exactly 0 if it counted as present
    from infodiff_lightning.contrasts import caption_contrasts, unmeasurable_word
    from infodiff_lightning.measure import DrawSpec

    long = "a photo of a cat on the mat and a dog on the mat and a sofa and a red cat"
    assert len(den.tokenizer(long)["input_ids"]) > MAX_TOKENS
    res = caption_contrasts(den, z, ["a red cat on the mat", long], ["red"], ids=[0, 1], draws=DrawSpec(4))
    assert res.present["red"].tolist() == [True, False]
    assert float(res.cmi["red"].value[0]) > 0 and float(res.cmi["red"].value[1]) == 0.0
    assert "beyond the text encoder's 16-token window" in unmeasurable_word(long, "red", den.tokenizer)
    assert "is not in its caption" in unmeasurable_word("a blue sofa", "red", den.tokenizer)
