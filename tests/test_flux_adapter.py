"""FluxDenoiser: a tiny Flux pipeline, saved with FluxPipeline.save_pretrained and loaded
through the adapter's public from_pretrained, behaves as the design says.

Tiny pipeline (tiny_flux.py): 16x16 RGB images -> VAE latents 4x8x8 -> 16 packed tokens of
16 features; a Flux transformer with one double- and one single-stream block, guidance
embedding on (Flux-dev-like) or off (Flux-schnell-like); CLIP (pooled, 16 tokens) and T5
(16 tokens here, 512 in the pipeline); FlowMatchEulerDiscreteScheduler with 1000 steps,
so the trained log-SNR range is +-2 log(999) = +-13.81.

"Equal to a direct call" is checked as ||got - expected|| / ||expected|| < 1e-4 (float32
throughout; the adapter encodes each prompt on its own and the reference in a batch,
which moves the last bits).
"""
import inspect
import json
import shutil

import pytest
import torch

from infodiff_lightning import conditional_mi, informations, pointwise_mi
from infodiff_lightning.conditions import Condition, remove_word
from infodiff_lightning.denoisers.base import AttentionDenoiser, TextDenoiser
from infodiff_lightning.denoisers.flux import (DEFAULT_GUIDANCE_SCALE, FluxDenoiser, latent_image_ids, pack_latents,
                                               unpack_latents)
from infodiff_lightning.flow import flow_logsnr_range
from tiny_flux import SCALING, SHIFT, T5_TOKENS, save_flux_pipeline

PROMPT = "a red cat on the mat"
WORD = "red"
PROMPTS = ["a red cat on the mat", "a photo of a blue sofa"]
WORDS = ["red", "blue"]


def rel_err(got, expected):
    return float((got.double() - expected.double()).norm() / expected.double().norm())


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_flux_pipeline(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="module")
def schnell_dir(tmp_path_factory):
    return save_flux_pipeline(tmp_path_factory.mktemp("tiny_schnell"), guidance_embeds=False)


@pytest.fixture(scope="module")
def den(flux_dir):
    return FluxDenoiser.from_pretrained(flux_dir, max_sequence_length=T5_TOKENS)


@pytest.fixture(scope="module")
def pipe(den):
    from diffusers import FluxPipeline

    return FluxPipeline(**den.components())


@pytest.fixture(scope="module")
def z(den):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return den.encode(images)


def fresh(den, **kw):
    """A new adapter around the same loaded modules (empty caches)."""
    kw.setdefault("max_sequence_length", T5_TOKENS)
    return FluxDenoiser(den.transformer, den.vae, den.text_encoder, den.tokenizer, den.text_encoder_2,
                        den.tokenizer_2, den.scheduler, **kw)


# ---------------------------------------------------------------- loading

def test_saved_pipeline_loads_through_from_pretrained(den, flux_dir):
    assert json.loads((flux_dir / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    assert type(den.transformer).__name__ == "FluxTransformer2DModel" and den.backbone is den.transformer
    assert type(den.text_encoder_2).__name__ == "T5EncoderModel" and type(den.scheduler).__name__.startswith("FlowMatch")
    assert den.prediction_type == "flow_velocity" and den.parametrisation.timestep_scale == 1.0  # s, not 1000 s
    assert den.alpha_range == flow_logsnr_range(1000)
    assert den.guidance_scale == DEFAULT_GUIDANCE_SCALE == 3.5  # the pipeline's default for guidance-distilled models
    # joint attention, read as the cross-attention baseline (denoisers/joint_attention.py)
    assert isinstance(den, TextDenoiser) and isinstance(den, AttentionDenoiser)


def test_folder_without_transformer_is_a_clear_error(flux_dir, tmp_path):
    broken = shutil.copytree(flux_dir, tmp_path / "flux", ignore=shutil.ignore_patterns("transformer"))
    with pytest.raises(FileNotFoundError, match="has no transformer/ subfolder"):
        FluxDenoiser.from_pretrained(broken)


def test_folder_with_another_transformer_is_a_clear_error(flux_dir, tmp_path):
    other = shutil.copytree(flux_dir, tmp_path / "flux")
    config_file = other / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config["_class_name"] = "SD3Transformer2DModel"
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="holds a SD3Transformer2DModel, not a FluxTransformer2DModel"):
        FluxDenoiser.from_pretrained(other)


def test_t5_sequence_length_defaults_to_the_pipelines_512_and_refuses_more(den):
    default = FluxDenoiser(den.transformer, den.vae, den.text_encoder, den.tokenizer, den.text_encoder_2,
                           den.tokenizer_2, den.scheduler)
    assert default.text_2.max_length == 512
    assert inspect.signature(FluxDenoiser.from_pretrained).parameters["max_sequence_length"].default == 512
    with pytest.raises(ValueError, match="max_sequence_length must lie in"):
        fresh(den, max_sequence_length=513)


def test_components_are_every_saved_folder_by_name(den, flux_dir, pipe):
    saved = {p.name for p in flux_dir.iterdir() if p.is_dir()}
    assert set(den.components()) == saved
    assert pipe.transformer is den.transformer  # the components rebuild the pipeline itself


# ---------------------------------------------------------------- packing

def test_pack_equals_the_pipelines_pack_latents():
    from diffusers import FluxPipeline

    x = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(1))  # not square: rows and columns differ
    assert torch.equal(pack_latents(x), FluxPipeline._pack_latents(x, 2, 4, 6, 8))
    assert pack_latents(x).shape == (2, 3 * 4, 16)  # (H/2)(W/2) tokens of 4C features


def test_unpack_equals_the_pipelines_unpack_latents_and_inverts_pack():
    from diffusers import FluxPipeline

    tokens = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(2))
    # the pipeline takes the image size in pixels and the VAE's factor (8 for the real VAE)
    assert torch.equal(unpack_latents(tokens, 6, 8), FluxPipeline._unpack_latents(tokens, 48, 64, 8))
    x = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(unpack_latents(pack_latents(x), 6, 8), x)


def test_image_ids_equal_the_pipelines():
    from diffusers import FluxPipeline

    assert torch.equal(latent_image_ids(3, 4), FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32))


def test_odd_latent_size_is_a_clear_error():
    with pytest.raises(ValueError, match="must be even"):
        pack_latents(torch.zeros(1, 4, 7, 8))


# ---------------------------------------------------------------- prompts

def test_prompt_encoding_equals_the_pipelines_encode_prompt(den, pipe):
    column = PROMPTS + [""]
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(column, max_sequence_length=T5_TOKENS)
    got = fresh(den).prompt_embeddings(column)
    assert rel_err(got[0], embeds) < 1e-4 and rel_err(got[1], pooled) < 1e-4
    assert torch.equal(got[2], text_ids)  # (L, 3) zeros
    assert got[0].shape == (3, T5_TOKENS, 32) and got[1].shape == (3, 32)


def test_a_masked_word_is_masked_in_both_clip_and_t5_token_ids(den):
    cond = remove_word(PROMPT, WORD, method="mask", tokenizer=den.tokenizer)
    clip_ids = den.text.token_ids([cond])[0][0]
    t5_ids = den.text_2.token_ids([cond])[0][0]
    clip_plain = den.text.token_ids([Condition(PROMPT)])[0][0]
    t5_plain = den.text_2.token_ids([Condition(PROMPT)])[0][0]
    red_clip = den.tokenizer.convert_tokens_to_ids("red</w>")
    red_t5 = den.tokenizer_2.convert_tokens_to_ids("▁red")
    # exactly the word's one token changes, to each tokenizer's pad id: CLIP position 2
    # (after the start token and "a"), T5 position 1 (no start token)
    assert (clip_ids != clip_plain).nonzero().flatten().tolist() == [2] and int(clip_plain[2]) == red_clip
    assert (t5_ids != t5_plain).nonzero().flatten().tolist() == [1] and int(t5_plain[1]) == red_t5
    assert int(clip_ids[2]) == den.tokenizer.pad_token_id and int(t5_ids[1]) == den.tokenizer_2.pad_token_id == 0


# ---------------------------------------------------------------- eps_hat

def hand_masked_embeddings(den, prompt, word):
    """T5 and pooled CLIP embeddings with ``word``'s token set to the pad id, found by hand."""
    clip = den.tokenizer([prompt], padding="max_length", max_length=den.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    t5 = den.tokenizer_2([prompt], padding="max_length", max_length=T5_TOKENS, return_tensors="pt").input_ids
    end = int((clip[0] == den.text_encoder.config.eos_token_id).int().argmax())  # where the unmasked prompt ends
    clip[clip == den.tokenizer.convert_tokens_to_ids(word + "</w>")] = den.tokenizer.pad_token_id
    t5[t5 == den.tokenizer_2.convert_tokens_to_ids("▁" + word)] = den.tokenizer_2.pad_token_id
    with torch.no_grad():
        # CLIP pools at the prompt's end token; the pad id (= the end id) put on the word must not move it
        pooled = den.text_encoder(clip).last_hidden_state[:, end]
        return den.text_encoder_2(t5)[0], pooled, torch.zeros(T5_TOKENS, 3)


def direct_eps(den, pipe, x_alpha, alpha, condition, guidance):
    """x_s + (1 - s) v with v a direct transformer call on the pipeline's packing of
    x_s = k(alpha) x_alpha at timestep s (eqs. F2-F4 of flow.py)."""
    from diffusers import FluxPipeline

    if isinstance(condition, Condition):
        embeds, pooled, text_ids = hand_masked_embeddings(den, condition.prompt, WORD)
    else:
        with torch.no_grad():
            embeds, pooled, text_ids = pipe.encode_prompt([condition], max_sequence_length=T5_TOKENS)
    b, c, h, w = x_alpha.shape
    s = torch.sigmoid(-alpha / 2)
    x_s = ((1 - s) ** 2 + s ** 2).sqrt().reshape(-1, 1, 1, 1) * x_alpha.double()
    with torch.no_grad():
        v = den.transformer(hidden_states=FluxPipeline._pack_latents(x_s.float(), b, c, h, w), timestep=s.float(),
                            guidance=None if guidance is None else torch.full((b,), guidance),
                            pooled_projections=pooled.expand(b, -1), encoder_hidden_states=embeds.expand(b, -1, -1),
                            txt_ids=text_ids, img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu",
                                                                                           torch.float32),
                            return_dict=False)[0]
    v = FluxPipeline._unpack_latents(v, 2 * h, 2 * w, 2)  # the tiny VAE downsamples by 2
    return x_s + (1 - s).reshape(-1, 1, 1, 1) * v.double()


CONDITIONS = {
    "prompt": PROMPT,
    "empty": "",
    "delete": "a cat on the mat",
    "placeholder": "a something cat on the mat",
    "mask": Condition(PROMPT, ((2, 3),)),  # "red" at CLIP position 2
}


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_eps_hat_equals_a_direct_transformer_call_on_packed_flow_inputs(den, pipe, kind):
    condition = CONDITIONS[kind]
    if kind in ("delete", "placeholder", "mask"):  # the CMI contexts remove_word builds
        assert remove_word(PROMPT, WORD, method=kind, tokenizer=den.tokenizer) == condition
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    alpha = torch.tensor([-6.0, 0.5, 5.0], dtype=torch.float64)  # noisy, middle and clean flow times
    got = den.eps_hat(x, alpha, [condition] * 3)
    assert rel_err(got, direct_eps(den, pipe, x, alpha, condition, DEFAULT_GUIDANCE_SCALE)) < 1e-4


def test_guidance_scale_is_an_input_of_the_transformer(den, pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    alpha = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    strong = fresh(den, guidance_scale=7.0)
    got = strong.eps_hat(x, alpha, [PROMPT] * 2)
    assert rel_err(got, direct_eps(den, pipe, x, alpha, PROMPT, 7.0)) < 1e-4
    # the random guidance embedding moves eps_hat far beyond the 1e-4 equality above
    assert rel_err(got, den.eps_hat(x, alpha, [PROMPT] * 2)) > 1e-3


def test_guidance_distilled_model_without_a_guidance_scale_is_a_clear_error(den):
    with pytest.raises(ValueError, match="guidance distilled .* needs a finite guidance_scale"):
        fresh(den, guidance_scale=None)


def test_guidance_scale_on_a_model_without_guidance_embedding_is_a_clear_error(schnell_dir):
    with pytest.raises(ValueError, match="takes no guidance"):
        FluxDenoiser.from_pretrained(schnell_dir, guidance_scale=3.5, max_sequence_length=T5_TOKENS)


def test_model_without_guidance_embedding_runs_without_guidance(schnell_dir):
    from diffusers import FluxPipeline

    schnell = FluxDenoiser.from_pretrained(schnell_dir, max_sequence_length=T5_TOKENS)
    assert schnell.guidance_scale is None  # "auto" for a Flux-schnell-like model
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    alpha = torch.tensor([-3.0, 1.0], dtype=torch.float64)
    expected = direct_eps(schnell, FluxPipeline(**schnell.components()), x, alpha, PROMPT, None)
    assert rel_err(schnell.eps_hat(x, alpha, [PROMPT] * 2), expected) < 1e-4


def test_model_output_for_training_encodes_with_gradients(den):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0.3, 0.8])
    out = den.model_output(x, t, PROMPTS, train=True)
    out.square().sum().backward()
    # both encoders feed the transformer: T5 through its sequence, CLIP through its pooled output
    for encoder in (den.text_encoder, den.text_encoder_2):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in encoder.parameters())
        encoder.zero_grad(set_to_none=True)
    den.transformer.zero_grad(set_to_none=True)
    with torch.inference_mode():
        cached = den.model_output(x, t, PROMPTS)
    assert rel_err(out.detach(), cached) < 1e-4  # the same numbers, uncached


def test_lora_targets_cover_the_attention_of_both_streams_and_the_single_blocks(flux_dir):
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    transformer = FluxTransformer2DModel.from_pretrained(flux_dir, subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=2, target_modules=list(FluxDenoiser.lora_targets)))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in transformer.named_modules() if n.endswith("lora_A")}
    double = {f"transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
                                                         "add_k_proj", "add_v_proj", "to_add_out")}
    single = {f"single_transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v")}
    assert adapted == double | single  # 8 + 3 projections; no MLP, no output layer


# ---------------------------------------------------------------- images and estimators

def test_encode_gives_the_shifted_and_scaled_vae_mean_at_latent_resolution(den, z):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean = den.vae.encode(images).latent_dist.mean
    torch.testing.assert_close(z, (mean - SHIFT) * SCALING, rtol=0, atol=1e-6)
    assert z.shape == (2, 4, 8, 8)  # unpacked: the estimators' maps stay on the latent grid


def test_pointwise_and_conditional_mi_run_end_to_end_with_maps_at_latent_resolution(den, z):
    mi = pointwise_mi(den, z, PROMPTS, n_draws=3, generator=0, maps=True)
    assert mi.map.shape == (2, 8, 8) and bool((mi.value > 0).all())  # a prompt differs from ""
    torch.testing.assert_close(mi.map.sum((1, 2)), mi.value, rtol=1e-5, atol=0)  # the map adds up
    context = [remove_word(p, w, method="mask", tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    cmi = conditional_mi(den, z, PROMPTS, context, n_draws=3, generator=0, maps=True)
    assert cmi.map.shape == (2, 8, 8) and bool((cmi.value > 0).all())


def test_identical_conditions_give_exactly_zero_orthogonal_mi(den, z):
    # both columns hit one cached embedding and the same noisy inputs: the gap is exactly 0
    est = informations(den, z, [PROMPTS, list(PROMPTS)], [(0, 1)], n_draws=3, generator=0)[0]
    assert torch.equal(est.value, torch.zeros(2))
