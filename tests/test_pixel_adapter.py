"""Pixel-space adapters: PixelTextDenoiser (text UNet, no VAE) and ClassConditionalDenoiser
(UNet2DModel with class embeddings), each saved with save_pretrained and loaded back
through from_pretrained. Images are 3x8x8, the schedule is SD's 1000-step
scaled-linear one (DDPM scheduler).
"""
import shutil

import pytest
import torch

from infodiff_lightning import informations, pointwise_mi, sample_draws, timestep_from_logsnr
from infodiff_lightning.conditions import remove_word
from infodiff_lightning.denoisers import ClassConditionalDenoiser, PixelTextDenoiser, PromptEncoder
from infodiff_lightning.estimators import default_sampler
from tiny_models import (MAX_TOKENS, build_cond_unet, build_scheduler, build_text_encoder,
                         build_tokenizer, save_class_conditional, save_pixel_text)

PROMPTS = ["a red cat on the mat", "a blue dog"]
NULL_CLASS = 4  # the tiny class model has 5 class embeddings; the last one plays "no label"


@pytest.fixture(scope="module")
def pix_dir(tmp_path_factory):
    return save_pixel_text(tmp_path_factory.mktemp("tiny_pixel"))


@pytest.fixture(scope="module")
def pden(pix_dir):
    return PixelTextDenoiser.from_pretrained(pix_dir)


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory):
    return save_class_conditional(tmp_path_factory.mktemp("tiny_class"), num_classes=5)


@pytest.fixture(scope="module")
def cden(cls_dir):
    return ClassConditionalDenoiser.from_pretrained(cls_dir, null_class=NULL_CLASS)


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


ALPHA = torch.tensor([-1.5, 2.5], dtype=torch.float64)


# ---------------------------------------------------------------- text-conditioned, pixel space

def test_pixel_text_folder_loads_through_from_pretrained(pden):
    assert type(pden.unet).__name__ == "UNet2DConditionModel" and not hasattr(pden, "vae")
    assert type(pden.scheduler).__name__ == "DDPMScheduler" and pden.prediction_type == "epsilon"
    assert pden.alpha_range == pytest.approx((-5.364, 7.069), abs=1e-3)


def test_pixel_text_adapter_uses_the_shared_prompt_encoder(pden):
    assert isinstance(pden.text, PromptEncoder)
    assert pden.null_conditions(2) == ["", ""]


def test_pixel_eps_hat_equals_a_direct_unet_call(pden, x):
    t = timestep_from_logsnr(ALPHA, pden.scheduler.alphas_cumprod).float()
    ids = pden.tokenizer(PROMPTS, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        direct = pden.unet(x, t, encoder_hidden_states=pden.text_encoder(ids)[0]).sample
    torch.testing.assert_close(pden.eps_hat(x, ALPHA, PROMPTS), direct, rtol=0, atol=1e-6)


def test_direct_construction_from_modules_equals_loading(pden, x):
    tok = build_tokenizer()  # the same seeds as the saved folder, so the same weights
    built = PixelTextDenoiser(build_cond_unet(in_channels=3), build_text_encoder(tok), tok, build_scheduler("ddpm"))
    torch.testing.assert_close(built.eps_hat(x, ALPHA, PROMPTS), pden.eps_hat(x, ALPHA, PROMPTS), rtol=0, atol=1e-6)


def test_pixel_estimators_give_maps_at_image_resolution(pden, x):
    est = pointwise_mi(pden, x, PROMPTS, n_draws=4, generator=0, maps=True)
    assert est.map.shape == (2, 8, 8) and bool((est.value > 0).all())
    torch.testing.assert_close(est.map.sum((1, 2)), est.value, rtol=1e-5, atol=0)
    masked = [remove_word(p, "red" if i == 0 else "blue", method="mask", tokenizer=pden.tokenizer)
              for i, p in enumerate(PROMPTS)]
    cmi = informations(pden, x, [masked, PROMPTS], [(0, 1)], n_draws=4, generator=0)[0]
    assert bool(torch.isfinite(cmi.value).all()) and bool((cmi.value > 0).all())


def test_pixel_text_folder_without_text_encoder_is_a_clear_error(pix_dir, tmp_path):
    broken = shutil.copytree(pix_dir, tmp_path / "pix", ignore=shutil.ignore_patterns("text_encoder"))
    with pytest.raises(FileNotFoundError, match="has no text_encoder/ subfolder"):
        PixelTextDenoiser.from_pretrained(broken)


# ---------------------------------------------------------------- class-conditional

def test_class_conditional_eps_hat_equals_a_direct_unet_call_with_class_labels(cden, x):
    labels = torch.tensor([1, 3])
    t = timestep_from_logsnr(ALPHA, cden.scheduler.alphas_cumprod).float()
    with torch.no_grad():
        direct = cden.unet(x, t, class_labels=labels).sample
    torch.testing.assert_close(cden.eps_hat(x, ALPHA, labels), direct, rtol=0, atol=1e-6)


def test_null_conditions_are_the_configured_null_class(cden):
    assert torch.equal(cden.null_conditions(3), torch.tensor([NULL_CLASS] * 3))


def test_null_conditions_without_a_null_class_is_an_error(cden):
    no_null = ClassConditionalDenoiser(cden.unet, cden.scheduler)
    with pytest.raises(ValueError, match="pass null_class="):
        no_null.null_conditions(2)
    with pytest.raises(ValueError, match="not a class id"):
        ClassConditionalDenoiser(cden.unet, cden.scheduler, null_class=5)  # ids are 0..4


def test_class_conditions_must_be_integer_ids_in_range(cden, x):
    with pytest.raises(ValueError, match="integer tensor"):
        cden.eps_hat(x, ALPHA, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"0\.\.4"):
        cden.eps_hat(x, ALPHA, torch.tensor([1, 7]))


def test_unet_without_class_embeddings_is_refused(cden):
    from diffusers import UNet2DModel

    plain = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=8)
    with pytest.raises(ValueError, match="num_class_embeds"):
        ClassConditionalDenoiser(plain, cden.scheduler, null_class=0)


def test_class_conditional_mi_end_to_end(cden, x):
    labels = torch.tensor([0, 2])
    draws = sample_draws(2, 4, (3, 8, 8), default_sampler(cden), torch.Generator().manual_seed(1))
    est = pointwise_mi(cden, x, labels, draws=draws, maps=True)
    assert est.map.shape == (2, 8, 8) and bool((est.value > 0).all())
    small_batches = pointwise_mi(cden, x, labels, draws=draws, microbatch=2)
    torch.testing.assert_close(small_batches.value, est.value, rtol=1e-5, atol=1e-6)
    # the same class in both columns: exactly zero orthogonal information
    same = informations(cden, x, [labels, labels.clone()], [(0, 1)], draws=draws)[0]
    assert torch.equal(same.value, torch.zeros(2))


def test_class_conditional_folder_loads_with_its_scheduler(cls_dir):
    den = ClassConditionalDenoiser.from_pretrained(cls_dir, null_class=0)
    assert type(den.unet).__name__ == "UNet2DModel" and den.num_classes == 5 and den.null_class == 0


def test_missing_class_conditional_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClassConditionalDenoiser.from_pretrained(tmp_path / "nothing_here", null_class=0)



def test_lora_adapter_saved_by_the_unet_loads_through_from_pretrained(pix_dir, pden, x, tmp_path):
    from peft import LoraConfig

    tuned = PixelTextDenoiser.from_pretrained(pix_dir)
    tuned.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian",
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # gaussian init leaves lora_B = 0 (a no-op): make the adapter do something
        for name, p in tuned.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    tuned.unet.save_lora_adapter(tmp_path / "unet_lora")
    loaded = PixelTextDenoiser.from_pretrained(pix_dir, lora=tmp_path / "unet_lora")
    want = tuned.eps_hat(x, ALPHA, PROMPTS)
    torch.testing.assert_close(loaded.eps_hat(x, ALPHA, PROMPTS), want, rtol=0, atol=1e-6)
    assert not torch.allclose(pden.eps_hat(x, ALPHA, PROMPTS), want, atol=1e-4)  # the adapter changed the model
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pden.load_lora(tmp_path / "no_adapter")
