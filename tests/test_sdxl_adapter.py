"""SDXLDenoiser: a tiny SDXL pipeline, saved with StableDiffusionXLPipeline.save_pretrained
and loaded through the adapter's from_pretrained, encodes prompts as the pipeline's own
encode_prompt does and predicts what a direct UNet call with the pipeline's added
conditions predicts.

Tiny pipeline (tiny_sdxl.py): 16x16 RGB images -> VAE latents 4x8x8; text_encoder/ 32-dim
and text_encoder_2/ 24-dim (16-dim pooled), so the UNet attends to 56 features per token;
tokenizer_2/ pads with "!" and spells "red" in three pieces; Euler on SD's scaled-linear
table, so the trained log-SNR range is [-5.36, 7.07].
"""
import shutil

import pytest
import torch

from infodiff_lightning import (conditional_mi, informations, noise_channel, pointwise_mi, sample_draws,
                                timestep_from_logsnr)
from infodiff_lightning.conditions import remove_word, word_spans
from infodiff_lightning.denoisers import AttentionDenoiser
from infodiff_lightning.denoisers.cross_attention import recorded_cross_attention
from infodiff_lightning.denoisers.sdxl import SDXLDenoiser
from infodiff_lightning.estimators import default_sampler
from tiny_sdxl import HIDDEN_2, POOLED, save_sdxl_pipeline, sdxl_pipeline
from tiny_models import HIDDEN, MAX_TOKENS, build_sd_components

PROMPTS = ["a red cat on the mat", "a photo of a blue sofa"]
WORDS = ["red", "blue"]  # one word per image, for CMI
# The pipeline's default add_time_ids when it generates 16x16 images (original = target =
# (16, 16), crop (0, 0)); the adapter's for 8x8 latents of a VAE that downsamples by 2.
TIME_IDS_16 = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]])
ALPHAS = torch.tensor([-4.5, -1.0, 0.5, 3.0, 6.5], dtype=torch.float64)  # across the trained range


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return save_sdxl_pipeline(tmp_path_factory.mktemp("tiny_sdxl") / "model")


@pytest.fixture(scope="module")
def den(sdxl_dir):
    return SDXLDenoiser.from_pretrained(sdxl_dir)


@pytest.fixture(scope="module")
def pipe(den):
    """The diffusers pipeline around the adapter's own loaded modules: the ground truth."""
    return sdxl_pipeline(den.components())


@pytest.fixture(scope="module")
def z(den):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return den.encode(images)


def fresh(den, **kw):
    """A new adapter around the same loaded modules (empty caches)."""
    c = den.components()
    return SDXLDenoiser(c["unet"], c["vae"], c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                        c["tokenizer_2"], c["scheduler"], **kw)


def relative_error(got, expected) -> float:
    return float((got - expected).norm() / expected.norm())


def pipeline_encoding(pipe, prompt):
    """(prompt_embeds (1, L, D), pooled (1, P)) of the pipeline's encode_prompt; for ""
    its unconditional branch (the negative embeddings of a prompt-less guidance call)."""
    with torch.no_grad():
        if prompt == "":
            _, negative, _, negative_pooled = pipe.encode_prompt("a cat", device="cpu",
                                                                 do_classifier_free_guidance=True)
            return negative, negative_pooled
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


def masked_ids(tokenizer, prompt, word):
    """The tokenizer's padded ids with the word's own tokens (found by this tokenizer) set
    to its pad id."""
    ids = tokenizer(prompt, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    for start, end in word_spans(prompt, word, tokenizer):
        ids[0, start:end] = tokenizer.pad_token_id
    return ids


def masked_encoding(pipe, prompt, word):
    """The pipeline's encoding recipe (penultimate states concatenated, text_embeds pooled)
    run by hand on token ids with the word masked in each tokenizer independently."""
    with torch.no_grad():
        out_1 = pipe.text_encoder(masked_ids(pipe.tokenizer, prompt, word), output_hidden_states=True)
        out_2 = pipe.text_encoder_2(masked_ids(pipe.tokenizer_2, prompt, word), output_hidden_states=True)
    return torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], -1), out_2.text_embeds


def direct_eps(den, x, alpha, embeds, pooled, time_ids=TIME_IDS_16):
    """The UNet called as the pipeline calls it, at the timestep of each log-SNR."""
    n = x.shape[0]
    t = timestep_from_logsnr(alpha, den.scheduler.alphas_cumprod).float()
    added = {"text_embeds": pooled.expand(n, -1), "time_ids": time_ids.expand(n, -1)}
    with torch.no_grad():
        return den.unet(x, t, encoder_hidden_states=embeds.expand(n, -1, -1), added_cond_kwargs=added).sample


def noisy_inputs(n=len(ALPHAS), seed=1):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loading

def test_saved_pipeline_loads_through_from_pretrained(den, sdxl_dir):
    assert (sdxl_dir / "model_index.json").is_file()  # the full StableDiffusionXLPipeline layout
    assert type(den.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert type(den.scheduler).__name__ == "EulerDiscreteScheduler" and den.prediction_type == "epsilon"
    assert den.alpha_range == pytest.approx((-5.364, 7.069), abs=1e-3)  # SD's scaled-linear table
    assert den.tokenizer is den.components()["tokenizer"] and den.tokenizer is not den.tokenizer_2
    assert isinstance(den, AttentionDenoiser)


def test_components_are_every_folder_of_the_pipeline(den, sdxl_dir):
    folders = {p.name for p in sdxl_dir.iterdir() if p.is_dir()}
    assert set(den.components()) == folders == {"vae", "text_encoder", "text_encoder_2", "tokenizer",
                                                 "tokenizer_2", "unet", "scheduler"}


def test_folder_without_text_encoder_2_is_a_clear_error(sdxl_dir, tmp_path):
    broken = shutil.copytree(sdxl_dir, tmp_path / "sdxl", ignore=shutil.ignore_patterns("text_encoder_2"))
    with pytest.raises(FileNotFoundError, match="has no text_encoder_2/ subfolder"):
        SDXLDenoiser.from_pretrained(broken)


def test_a_unet_without_added_conditions_is_refused():
    sd = build_sd_components()  # an SD 1.x-style UNet: no addition_embed_type
    with pytest.raises(ValueError, match="addition_embed_type='text_time'"):
        SDXLDenoiser(sd["unet"], sd["vae"], sd["text_encoder"], sd["text_encoder"], sd["tokenizer"], sd["tokenizer"],
                     sd["scheduler"])


def test_force_zeros_for_empty_prompt_is_read_from_model_index(den, tmp_path):
    assert den.force_zeros_for_empty_prompt  # saved as True
    off = SDXLDenoiser.from_pretrained(save_sdxl_pipeline(tmp_path / "off", force_zeros_for_empty_prompt=False))
    assert not off.force_zeros_for_empty_prompt
    (tmp_path / "off" / "model_index.json").unlink()  # no pipeline config: SDXL's default, True
    assert SDXLDenoiser.from_pretrained(tmp_path / "off").force_zeros_for_empty_prompt


# ---------------------------------------------------------------- prompt encoding

def test_prompt_encoding_equals_the_pipelines_encode_prompt(den, pipe):
    embeds, pooled = den.prompt_features(PROMPTS)
    assert embeds.shape == (2, MAX_TOKENS, HIDDEN + HIDDEN_2) and pooled.shape == (2, POOLED)
    with torch.no_grad():
        expected, _, expected_pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)
    # the adapter encodes one prompt per call, the pipeline both at once: float32 rounding only
    assert relative_error(embeds, expected) < 1e-4 and relative_error(pooled, expected_pooled) < 1e-4


def test_empty_prompt_is_zeros_when_the_pipeline_forces_zeros(den, pipe):
    embeds, pooled = den.prompt_features(["", PROMPTS[0]])
    negative, negative_pooled = pipeline_encoding(pipe, "")
    assert torch.equal(negative, torch.zeros_like(negative))  # the pipeline's own unconditional branch
    assert torch.equal(embeds[:1], negative) and torch.equal(pooled[:1], negative_pooled)
    assert float(embeds[1].abs().sum()) > 0  # only the "" row


def test_empty_prompt_is_the_encoding_of_empty_text_without_force_zeros(den):
    off = fresh(den, force_zeros_for_empty_prompt=False)
    pipe_off = sdxl_pipeline(den.components(), force_zeros_for_empty_prompt=False)
    embeds, pooled = off.prompt_features([""])
    negative, negative_pooled = pipeline_encoding(pipe_off, "")
    assert float(negative.abs().sum()) > 0  # encoded text this time, not zeros
    assert relative_error(embeds, negative) < 1e-4 and relative_error(pooled, negative_pooled) < 1e-4


def test_a_masked_word_is_masked_in_both_tokenizers(den):
    d = fresh(den)
    seen = {}
    hooks = [enc.register_forward_pre_hook(lambda m, args, kw, name=name: seen.__setitem__(name, args[0]),
                                           with_kwargs=True)
             for name, enc in (("1", d.text_encoder), ("2", d.text_encoder_2))]
    try:
        d.prompt_features([remove_word(PROMPTS[0], "red", method="mask", tokenizer=d.tokenizer)])
    finally:
        for h in hooks:
            h.remove()
    tokens_1 = d.tokenizer.convert_ids_to_tokens(seen["1"][0].tolist())
    tokens_2 = d.tokenizer_2.convert_ids_to_tokens(seen["2"][0].tolist())
    # "red" is one token for the first tokenizer and three ("r", "e", "d</w>") for the
    # second; each becomes that tokenizer's pad token, and every other token stays put.
    end = "<|endoftext|>"
    assert tokens_1[:8] == ["<|startoftext|>", "a</w>", end, "cat</w>", "on</w>", "the</w>", "mat</w>", end]
    assert tokens_2[:10] == ["<|startoftext|>", "a</w>", "!", "!", "!", "cat</w>", "on</w>", "the</w>", "mat</w>", end]


# ---------------------------------------------------------------- eps_hat

def context(method, tokenizer):
    """PROMPTS[0] without "red", by one removal method."""
    return remove_word(PROMPTS[0], "red", method=method, tokenizer=tokenizer)


@pytest.mark.parametrize("case", ["prompt", "null", "delete", "placeholder", "mask"])
def test_eps_hat_equals_a_direct_unet_call_with_the_pipelines_conditioning(den, pipe, case):
    if case == "mask":  # the pipeline cannot mask: its recipe on hand-masked token ids
        condition = context("mask", den.tokenizer)
        embeds, pooled = masked_encoding(pipe, PROMPTS[0], "red")
    else:
        condition = {"prompt": PROMPTS[0], "null": den.null_conditions(1)[0]}[case] if case in ("prompt", "null") \
            else context(case, den.tokenizer)
        embeds, pooled = pipeline_encoding(pipe, condition)
    x = noisy_inputs()
    got = den.eps_hat(x, ALPHAS, [condition] * len(ALPHAS))
    # one draw per log-SNR; float32 rounding of batched vs single encodings only
    assert relative_error(got, direct_eps(den, x, ALPHAS, embeds, pooled)) < 1e-4


def test_size_options_reach_the_unets_time_ids(den, pipe):
    # a 1024x768 original, cropped at (8, 4), asked about as a 16x16 target
    sized = fresh(den, original_size=(1024, 768), crops_coords_top_left=(8, 4))
    x = noisy_inputs()
    embeds, pooled = pipeline_encoding(pipe, PROMPTS[1])
    expected = direct_eps(den, x, ALPHAS, embeds, pooled, torch.tensor([[1024.0, 768.0, 8.0, 4.0, 16.0, 16.0]]))
    got = sized.eps_hat(x, ALPHAS, [PROMPTS[1]] * len(ALPHAS))
    assert relative_error(got, expected) < 1e-4
    assert relative_error(den.eps_hat(x, ALPHAS, [PROMPTS[1]] * len(ALPHAS)), expected) > 1e-3  # the ids matter


def test_training_output_equals_inference_and_reaches_the_text_encoders(den):
    d = fresh(den)
    x = noisy_inputs(2)
    alpha = ALPHAS[:2]
    captions = [PROMPTS[0], ""]
    t = d.timesteps(alpha)
    out = d.model_output(x, t, captions, train=True)
    assert relative_error(out.detach(), d.eps_hat(x, alpha, captions)) < 1e-4  # epsilon: output = eps_hat
    out.square().sum().backward()
    # the token embeddings of both encoders get a gradient (the penultimate states and,
    # for the second encoder, the pooled text_embeds depend on them)
    grads = [enc.get_input_embeddings().weight.grad for enc in d.text_encoders()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    for m in d.modules():
        m.zero_grad(set_to_none=True)


def test_cross_attention_reads_the_sdxl_unet_without_changing_its_prediction(den):
    x = noisy_inputs(2)
    alpha = ALPHAS[1:3]
    att = den.cross_attention(x, alpha, PROMPTS)
    with recorded_cross_attention(den.unet) as recorder:
        recorded = den.eps_hat(x, alpha, PROMPTS)
    assert relative_error(recorded, den.eps_hat(x, alpha, PROMPTS)) < 1e-5  # classic vs fused attention
    # one softmax over the 16 token positions per layer: each element's maps sum to the layer count
    assert att.shape == (2, MAX_TOKENS, 8, 8)
    assert torch.allclose(att.sum(1), torch.full((2, 8, 8), float(len(recorder.probs))), atol=1e-4)


# ---------------------------------------------------------------- estimators end to end

def test_pointwise_mi_runs_end_to_end_with_maps_at_latent_resolution(den, z):
    assert z.shape == (2, 4, 8, 8)
    est = pointwise_mi(den, z, PROMPTS, n_draws=4, generator=0, maps=True)
    assert est.map.shape == (2, 8, 8)  # summed over the 4 latent channels
    assert bool((est.value > 0).all())  # orthogonal MI is non-negative; a prompt differs from zeros
    torch.testing.assert_close(est.map.sum((1, 2)), est.value, rtol=1e-5, atol=0)  # the map adds up


@pytest.mark.parametrize("method", ["delete", "placeholder", "mask"])
def test_conditional_mi_of_a_word_runs_end_to_end_for_each_removal_method(den, z, method):
    contexts = [remove_word(p, w, method=method, tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    est = conditional_mi(den, z, PROMPTS, contexts, n_draws=3, generator=1, maps=True)
    assert est.map.shape == (2, 8, 8)
    assert bool((est.value > 0).all())  # the context differs from the prompt for the model
    torch.testing.assert_close(est.map.sum((1, 2)), est.value, rtol=1e-5, atol=0)


def test_identical_conditions_give_exactly_zero_orthogonal_mi(den, z):
    # Both columns hit one cached embedding and the same noisy inputs: the gap is exactly 0.
    est = informations(den, z, [PROMPTS, list(PROMPTS)], [(0, 1)], n_draws=4, generator=0)[0]
    assert torch.equal(est.value, torch.zeros(2))
    assert torch.equal(conditional_mi(den, z, PROMPTS, PROMPTS, n_draws=4, generator=0).value, torch.zeros(2))


def test_cmi_terms_are_the_orthogonal_gap_draw_by_draw(den, z):
    contexts = [remove_word(p, w, tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    draws = sample_draws(2, 3, (4, 8, 8), default_sampler(den), torch.Generator().manual_seed(6))
    est = conditional_mi(den, z, PROMPTS, contexts, draws=draws, return_terms=True)
    for n in range(2):  # 1/2 w ||eps_hat(x_a | c) - eps_hat(x_a | w, c)||^2
        x_a = noise_channel(z[n].expand(3, -1, -1, -1), draws.alpha[n], draws.eps[n])
        gap = den.eps_hat(x_a, draws.alpha[n], [contexts[n]] * 3) - den.eps_hat(x_a, draws.alpha[n], [PROMPTS[n]] * 3)
        torch.testing.assert_close(est.terms[n], 0.5 * draws.weight[n].float() * gap.pow(2).sum((1, 2, 3)),
                                   rtol=1e-5, atol=1e-6)
