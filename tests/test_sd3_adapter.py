"""SD3Denoiser: a tiny Stable Diffusion 3 pipeline, saved with save_pretrained and loaded
through the adapter's public from_pretrained, behaves as the design says.

Tiny pipelines (tiny_sd3.py): 16x16 images -> latents 4x8x8; CLIP-L (16-dim) and CLIP-G
(24-dim) over a 16-token window; joint attention 48 wide. Two variants: "clip_only"
(text_encoder_3 = tokenizer_3 = None, an SD3 transformer) and "with_t5" (a 48-dim T5,
an SD3.5-style transformer with dual attention and RMS query/key norms), plus
"t5_skipped": the T5 folder loaded with text_encoder_3=False. The scheduler has
T = 1000 training timesteps, so the trained flow times are s in [1/T, 1 - 1/T], i.e.
alpha in [-2 logit(1 - 1/T), -2 logit(1/T)] = [-13.8, 13.8].

The ground truth for the prompt encoding is the pipeline's own ``encode_prompt``; for
eps_hat, a direct transformer call at x_s = k(alpha) x_alpha and timestep 1000 s(alpha)
converted by eps = x_s + (1 - s) v (flow.py).
"""
import json
import shutil

import pytest
import torch

from infodiff_lightning import conditional_mi, informations, pointwise_mi
from infodiff_lightning.conditions import Condition, remove_word
from infodiff_lightning.denoisers.sd3 import SD3Denoiser
from infodiff_lightning.flow import flow_logsnr_range, flow_scale, flow_time
from tiny_models import MAX_TOKENS
from tiny_sd3 import CLIP_G_MISSING, JOINT_DIM, build_sd3_transformer, save_sd3_pipeline

PROMPT = "a red catamaran on the mat"
PROMPTS = ["a red cat on the mat", "a photo of a blue sofa"]
WORDS = ["red", "blue"]  # one word per image, for CMI
T5_LENGTH = 256  # the pipeline's default max_sequence_length
VARIANTS = ("clip_only", "with_t5", "t5_skipped")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {"clip_only": save_sd3_pipeline(tmp_path_factory.mktemp("sd3_clip")),
            "with_t5": save_sd3_pipeline(tmp_path_factory.mktemp("sd3_t5"), with_t5=True)}


@pytest.fixture(scope="module")
def dens(folders):
    return {"clip_only": SD3Denoiser.from_pretrained(folders["clip_only"]),
            "with_t5": SD3Denoiser.from_pretrained(folders["with_t5"]),
            "t5_skipped": SD3Denoiser.from_pretrained(folders["with_t5"], text_encoder_3=False)}


@pytest.fixture(scope="module")
def den(dens):
    return dens["with_t5"]


@pytest.fixture(scope="module")
def z(den):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return den.encode(images)


def pipeline_of(den):
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**den.components())


def pipeline_encoding(den, prompts):
    """(prompt_embeds, pooled_prompt_embeds) of the pipeline's own encode_prompt."""
    with torch.no_grad():
        seq, _, pooled, _ = pipeline_of(den).encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                                            max_sequence_length=T5_LENGTH)
    return seq, pooled


def token_ids(tokenizer, prompt, length):
    return tokenizer(prompt, padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt").input_ids[0]


def word_positions(tokenizer, ids, word):
    """Positions of the word's own token ids (tokenized alone) inside ``ids``."""
    piece = tokenizer(word, add_special_tokens=False).input_ids
    for i in range(len(ids) - len(piece) + 1):
        if ids[i:i + len(piece)].tolist() == piece:
            return list(range(i, i + len(piece)))
    raise AssertionError(f"{word!r} not found in {ids.tolist()}")


def hand_encoding(den, prompt, masked_word=None):
    """The pipeline's encoding written out from the components, with ``masked_word``'s
    token ids set to each tokenizer's pad id (the pipeline cannot mask a word)."""
    parts, pooled = [], []
    encoders = [(den.tokenizer, den.text_encoder, MAX_TOKENS), (den.tokenizer_2, den.text_encoder_2, MAX_TOKENS)]
    if den.text_encoder_3 is not None:
        encoders.append((den.tokenizer_3, den.text_encoder_3, T5_LENGTH))
    for i, (tok, enc, length) in enumerate(encoders):
        ids = token_ids(tok, prompt, length)
        end = int((ids == enc.config.eos_token_id).int().argmax())  # where the unmasked prompt ends
        if masked_word is not None:
            ids[word_positions(tok, ids, masked_word)] = tok.pad_token_id
        with torch.no_grad():
            out = enc(ids[None], output_hidden_states=True)
            parts.append(out.hidden_states[-2] if i < 2 else out.last_hidden_state)
            if i < 2:  # CLIP pools at the prompt's end token, which a pad id equal to it must not move
                pooled.append(enc.text_projection(out.last_hidden_state[:, end]))
    clip = torch.cat(parts[:2], -1)
    clip = torch.nn.functional.pad(clip, (0, JOINT_DIM - clip.shape[-1]))
    t5 = parts[2] if len(parts) == 3 else torch.zeros(1, T5_LENGTH, JOINT_DIM)
    return torch.cat([clip, t5], 1), torch.cat(pooled, -1)


def direct_eps(den, x, alpha, seq, pooled):
    """x_s + (1 - s) v with v the transformer's velocity at x_s = k(alpha) x, t = 1000 s."""
    s = flow_time(alpha).reshape(-1, 1, 1, 1)
    x_s = flow_scale(alpha).reshape(-1, 1, 1, 1).float() * x
    with torch.no_grad():
        v = den.transformer(hidden_states=x_s, timestep=(1000 * flow_time(alpha)).float(), encoder_hidden_states=seq,
                            pooled_projections=pooled, return_dict=False)[0]
    return (x_s + (1 - s) * v).float()


def assert_relative(got, expected, tol=1e-4):
    err = float((got - expected).norm() / expected.norm())
    assert err < tol, f"relative error {err:.2e}"


# ---------------------------------------------------------------- loading

def test_saved_pipelines_load_through_from_pretrained(dens, folders):
    for folder in folders.values():
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == "StableDiffusion3Pipeline" and index["transformer"][1] == "SD3Transformer2DModel"
    assert dens["clip_only"].text_encoder_3 is None and dens["clip_only"].t5 is None
    assert type(dens["with_t5"].text_encoder_3).__name__ == "T5EncoderModel"
    assert type(dens["with_t5"].tokenizer_3).__name__ == "T5Tokenizer"  # the class model_index.json names
    # text_encoder_3=False leaves T5 out although the folder has it
    assert dens["t5_skipped"].text_encoder_3 is None and dens["t5_skipped"].tokenizer_3 is None


def test_alpha_range_is_the_flow_range_of_a_thousand_timesteps(den):
    # s in [1/1000, 1 - 1/1000]: alpha = -2 logit(s) in [-2 log(999), 2 log(999)] = [-13.8135, 13.8135]
    assert den.prediction_type == "flow_velocity"
    assert den.alpha_range == flow_logsnr_range(1000)
    assert den.alpha_range == pytest.approx((-13.8135, 13.8135), abs=1e-4)


def test_folder_without_transformer_is_a_clear_error(folders, tmp_path):
    broken = shutil.copytree(folders["clip_only"], tmp_path / "sd3", ignore=shutil.ignore_patterns("transformer"))
    with pytest.raises(FileNotFoundError, match="has no transformer/ subfolder"):
        SD3Denoiser.from_pretrained(broken)


def test_folder_with_another_transformer_is_a_clear_error(folders, tmp_path):
    odd = shutil.copytree(folders["clip_only"], tmp_path / "sd3")
    config = odd / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "FluxTransformer2DModel"}))
    with pytest.raises(ValueError, match="holds a FluxTransformer2DModel, not a SD3Transformer2DModel"):
        SD3Denoiser.from_pretrained(odd)


def test_a_ddpm_scheduler_is_refused(folders, tmp_path):
    from diffusers import DDPMScheduler

    odd = shutil.copytree(folders["clip_only"], tmp_path / "sd3")
    shutil.rmtree(odd / "scheduler")
    DDPMScheduler().save_pretrained(odd / "scheduler")
    with pytest.raises(ValueError, match="must be a FlowMatch"):
        SD3Denoiser.from_pretrained(odd)


def test_components_name_every_pipeline_folder(dens, folders):
    for name in ("clip_only", "with_t5"):
        folder_names = {p.name for p in folders[name].iterdir() if p.is_dir()}
        given = {k for k, v in dens[name].components().items() if v is not None}
        assert given == folder_names
    assert set(dens["clip_only"].components()) == set(dens["with_t5"].components())  # T5 slots kept as None


def test_lora_targets_name_the_joint_attention_projections_of_both_streams():
    names = {n for n, m in build_sd3_transformer(sd35=True).named_modules() if isinstance(m, torch.nn.Linear)}
    for target in SD3Denoiser.lora_targets:
        assert any(n.endswith("attn." + target) for n in names), target


# ---------------------------------------------------------------- prompt encoding

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prompt", [PROMPT, ""])
def test_prompt_encoding_equals_the_pipelines_encode_prompt(dens, variant, prompt):
    den = dens[variant]
    seq, pooled = den.prompt_embeddings([prompt])
    ref_seq, ref_pooled = pipeline_encoding(den, [prompt])
    # 16 CLIP positions, then 256 T5 positions (zeros without T5), 48 wide
    assert seq.shape == ref_seq.shape == (1, MAX_TOKENS + T5_LENGTH, JOINT_DIM)
    assert pooled.shape == ref_pooled.shape == (1, 16 + 24)
    torch.testing.assert_close(seq, ref_seq, rtol=1e-5, atol=1e-6)  # same float32 ops, one prompt per call
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-5, atol=1e-6)
    if variant != "with_t5":
        assert torch.equal(seq[:, MAX_TOKENS:], torch.zeros(1, T5_LENGTH, JOINT_DIM))


@pytest.mark.parametrize("variant", VARIANTS)
def test_null_condition_is_the_pipelines_unconditional_branch(dens, variant):
    den = dens[variant]
    with torch.no_grad():
        _, neg_seq, _, neg_pooled = pipeline_of(den).encode_prompt(PROMPT, None, None, do_classifier_free_guidance=True,
                                                                   max_sequence_length=T5_LENGTH)
    seq, pooled = den.prompt_embeddings(den.null_conditions(1))
    torch.testing.assert_close(seq, neg_seq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, neg_pooled, rtol=1e-5, atol=1e-6)
    assert float(pooled.abs().sum()) > 0  # "" is encoded, not zeroed


def test_mask_condition_masks_the_same_word_in_clip_l_clip_g_and_t5(den):
    assert "red" in CLIP_G_MISSING  # one CLIP-L token, three letters in CLIP-G, one "▁red" piece in T5
    for word, n_clip_g in (("red", 3), ("catamaran", 2)):
        cond = remove_word(PROMPT, word, method="mask", tokenizer=den.tokenizer)
        assert isinstance(cond, Condition) and cond.prompt == PROMPT
        for enc, tok in ((den.clip_l, den.tokenizer), (den.clip_g, den.tokenizer_2), (den.t5, den.tokenizer_3)):
            plain, _ = enc.token_ids([Condition(PROMPT)])
            masked, _ = enc.token_ids([cond])
            where = word_positions(tok, plain[0], word)
            if tok is den.tokenizer_2:
                assert len(where) == n_clip_g
            expected = plain[0].clone()
            expected[where] = tok.pad_token_id  # CLIP-L: <|endoftext|>, CLIP-G: "!", T5: <pad> = 0
            assert torch.equal(masked[0], expected), (word, type(tok).__name__)
    assert den.tokenizer_2.pad_token == "!" and den.tokenizer_3.pad_token_id == 0


# ---------------------------------------------------------------- eps_hat

ALPHAS = torch.tensor([-12.0, -3.0, 0.5, 4.0, 13.0], dtype=torch.float64)  # across the trained range


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["prompt", "null", "delete", "placeholder"])
def test_eps_hat_equals_the_converted_velocity_of_a_direct_transformer_call(dens, variant, kind):
    den = dens[variant]
    cond = {"prompt": PROMPT, "null": "", "delete": remove_word(PROMPT, "red", tokenizer=den.tokenizer),
            "placeholder": remove_word(PROMPT, "red", method="placeholder", tokenizer=den.tokenizer)}[kind]
    n = len(ALPHAS)
    x = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    seq, pooled = pipeline_encoding(den, [cond] * n)
    # same float32 transformer on the same inputs; the scale k and 1000 s pass through float64 once
    assert_relative(den.eps_hat(x, ALPHAS, [cond] * n), direct_eps(den, x, ALPHAS, seq, pooled))


@pytest.mark.parametrize("variant", VARIANTS)
def test_eps_hat_of_a_masked_word_equals_a_direct_call_on_hand_masked_tokens(dens, variant):
    den = dens[variant]
    hand_seq, hand_pooled = hand_encoding(den, PROMPT)
    ref_seq, ref_pooled = pipeline_encoding(den, [PROMPT])
    torch.testing.assert_close(hand_seq, ref_seq, rtol=1e-5, atol=1e-6)  # the hand encoding is the pipeline's
    torch.testing.assert_close(hand_pooled, ref_pooled, rtol=1e-5, atol=1e-6)
    n = len(ALPHAS)
    cond = remove_word(PROMPT, "red", method="mask", tokenizer=den.tokenizer)
    seq, pooled = hand_encoding(den, PROMPT, masked_word="red")
    x = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = direct_eps(den, x, ALPHAS, seq.expand(n, -1, -1), pooled.expand(n, -1))
    assert_relative(den.eps_hat(x, ALPHAS, [cond] * n), expected)
    assert (den.eps_hat(x, ALPHAS, [PROMPT] * n) - expected).norm() > 1e-3 * expected.norm()  # masking changes it


def test_alpha_outside_the_trained_range_is_refused(den):
    # 14 > 2 log(999) = 13.81: s = sigma(-7) < 1/1000, closer to the clean image than any trained time
    with pytest.raises(ValueError, match=r"outside the trained range \[-13.8135, 13.8135\]"):
        den.eps_hat(torch.zeros(2, 4, 8, 8), torch.tensor([0.0, 14.0], dtype=torch.float64), PROMPTS)


def test_training_output_has_gradients_and_equals_the_cached_output(den):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([250.0, 750.0])
    with torch.no_grad():
        cached = den.model_output(x, t, PROMPTS)
    trained = den.model_output(x, t, PROMPTS, train=True)
    try:
        trained.square().sum().backward()
        grads = [den.text_encoder.text_model.embeddings.token_embedding.weight.grad,
                 den.text_encoder_3.shared.weight.grad]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)  # through CLIP-L and T5
    finally:
        for m in den.modules():
            m.zero_grad(set_to_none=True)
    torch.testing.assert_close(trained.detach(), cached, rtol=1e-5, atol=1e-6)  # same encoding, uncached


# ---------------------------------------------------------------- images -> latents

def test_encode_gives_the_shifted_and_scaled_vae_posterior_mean(den):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        mean = torch.cat([den.vae.encode(images[i:i + 1]).latent_dist.mean for i in range(2)])
    # SD3's VAE: x = (mean - 0.0609) * 1.5305
    assert (den.latents.shift_factor, den.latents.scaling_factor) == (0.0609, 1.5305)
    torch.testing.assert_close(den.encode(images), (mean - 0.0609) * 1.5305, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- estimators end to end

@pytest.mark.parametrize("variant", ["clip_only", "with_t5"])
def test_pointwise_mi_runs_end_to_end_with_maps_at_latent_resolution(dens, variant, z):
    est = pointwise_mi(dens[variant], z, PROMPTS, n_draws=4, generator=0, maps=True)
    assert est.map.shape == (2, 8, 8)  # 8x8 latents, summed over the 4 channels
    assert bool((est.value > 0).all())  # orthogonal MI is non-negative; a prompt differs from ""
    torch.testing.assert_close(est.map.sum((1, 2)), est.value, rtol=1e-5, atol=0)  # the map adds up


@pytest.mark.parametrize("method", ["delete", "placeholder", "mask"])
def test_conditional_mi_of_a_word_runs_end_to_end_for_each_removal_method(den, z, method):
    context = [remove_word(p, w, method=method, tokenizer=den.tokenizer) for p, w in zip(PROMPTS, WORDS)]
    est = conditional_mi(den, z, PROMPTS, context, n_draws=3, generator=1, maps=True)
    assert est.map.shape == (2, 8, 8)
    assert bool((est.value > 0).all())  # each context differs from its full prompt


def test_identical_conditions_give_exactly_zero_orthogonal_mi(den, z):
    # Both columns hit one cached embedding and the same noisy inputs: the gap is exactly 0.
    est = informations(den, z, [PROMPTS, list(PROMPTS)], [(0, 1)], n_draws=4, generator=0)[0]
    assert torch.equal(est.value, torch.zeros(2))
    assert torch.equal(conditional_mi(den, z, PROMPTS, PROMPTS, n_draws=4, generator=0).value, torch.zeros(2))
