"""The cross-attention baseline of MM-DiT models (SD3, Flux): joint attention read as
image queries' attention to text keys (denoisers/joint_attention.py), and SD3Denoiser /
FluxDenoiser as AttentionDenoisers.

Tiny pipelines (tiny_sd3.py, tiny_flux.py): 16x16 images -> 4x8x8 latents -> 16 image
tokens on a 4x4 patch grid, 2 heads of 8 dims. SD3 is the SD3.5-like variant with T5 (RMS
norms on q and k, an image-only attn2 in its first block, 2 joint blocks, CLIP window 16,
T5 256); Flux has one double- and one single-stream block (rotary axes 2 + 2 + 4), CLIP
window 16 and 16 T5 tokens.

Equality with an independent computation is checked to 1e-5 absolute on probabilities
(float32 throughout; the two computations group the same sums differently).
"""
import sys

import pytest
import torch

from infodiff_lightning.analyses.attention_maps import word_attention
from infodiff_lightning.conditions import transfer_spans, word_spans
from infodiff_lightning.denoisers.base import AttentionDenoiser
from infodiff_lightning.denoisers.flux import FluxDenoiser
from infodiff_lightning.denoisers.joint_attention import (IMAGE_FIRST, TEXT_FIRST, position_transfer,
                                                          read_joint_attention, recorded_joint_attention)
from infodiff_lightning.denoisers.sd3 import SD3Denoiser
from tiny_flux import T5_TOKENS, build_flux_components, save_flux_pipeline
from tiny_sd3 import build_sd3_components, save_sd3_pipeline

PROMPT = "a red cat on the mat"
PROMPTS = ["a red cat on the mat", "a photo of a blue sofa"]
FAMILIES = ("sd3", "flux")
LAYOUT = {"sd3": IMAGE_FIRST, "flux": TEXT_FIRST}


@pytest.fixture(scope="module")
def dens(tmp_path_factory):
    sd3 = SD3Denoiser.from_pretrained(save_sd3_pipeline(tmp_path_factory.mktemp("sd3"), with_t5=True))
    flux = FluxDenoiser.from_pretrained(save_flux_pipeline(tmp_path_factory.mktemp("flux")),
                                        max_sequence_length=T5_TOKENS)
    return {"sd3": sd3, "flux": flux}


def inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.tensor([-1.0, 2.0])[:n]


# ----------------------------------------------------------------------------- recording is transparent

@pytest.mark.parametrize("family", FAMILIES)
def test_recording_leaves_eps_hat_unchanged(dens, family):
    # the recorder computes its probabilities on the side and then runs the model's own
    # processor on the same inputs, so the output is the same to the bit
    den = dens[family]
    x, a = inputs()
    plain = den.eps_hat(x, a, PROMPTS)
    with recorded_joint_attention(den.transformer, LAYOUT[family]) as rec:
        recorded = den.eps_hat(x, a, PROMPTS)
    assert torch.equal(plain, recorded)
    # one record per joint block: SD3's 2 blocks (not the image-only attn2); Flux's one
    # double-stream block (not the single-stream block)
    assert len(rec.probs) == len(den.transformer.transformer_blocks) == {"sd3": 2, "flux": 1}[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_processors_are_restored_after_reading_and_after_a_failure(dens, family):
    den = dens[family]
    before = den.transformer.attn_processors
    x, a = inputs()
    den.cross_attention(x, a, PROMPTS)
    assert all(den.transformer.attn_processors[k] is v for k, v in before.items())
    with pytest.raises(RuntimeError, match="boom"):
        with recorded_joint_attention(den.transformer, LAYOUT[family]):
            raise RuntimeError("boom")
    after = den.transformer.attn_processors
    assert after.keys() == before.keys() and all(after[k] is v for k, v in before.items())


# ----------------------------------------------------------------------------- against a computation by hand

def rms(x, norm):
    """RMSNorm by its formula (norm: the module, for its eps and weight)."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    return y if norm.weight is None else y * norm.weight


def rotate(x, cos, sin):
    """Flux's rotary embedding on (B, S, H, d): each pair (x_2i, x_2i+1) turned by the angle of cos, sin (S, d)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    return x * cos[None, :, None] + turned * sin[None, :, None]


@torch.no_grad()
def attention_by_hand(attn, hidden, context, layout, rope=None):
    """(B, N_img, N_txt): softmax over all keys of all queries, image rows x text columns, heads averaged."""
    def proj(linear, x, norm):
        y = torch.nn.functional.linear(x, linear.weight, linear.bias).unflatten(-1, (attn.heads, -1))
        return y if norm is None else rms(y, norm)

    q_img, k_img = proj(attn.to_q, hidden, attn.norm_q), proj(attn.to_k, hidden, attn.norm_k)
    q_txt, k_txt = proj(attn.add_q_proj, context, attn.norm_added_q), proj(attn.add_k_proj, context, attn.norm_added_k)
    n_img, n_txt = hidden.shape[1], context.shape[1]
    if layout == IMAGE_FIRST:
        q, k = torch.cat([q_img, q_txt], 1), torch.cat([k_img, k_txt], 1)
        rows, cols = slice(0, n_img), slice(n_img, None)
    else:
        q, k = rotate(torch.cat([q_txt, q_img], 1), *rope), rotate(torch.cat([k_txt, k_img], 1), *rope)
        rows, cols = slice(n_txt, None), slice(0, n_txt)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    return scores.softmax(-1)[:, :, rows, cols].mean(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_probabilities_equal_a_computation_by_hand(dens, family):
    den = dens[family]
    attn = den.transformer.transformer_blocks[0].attn
    seen = {}

    def capture(module, args, kwargs):
        seen.update(kwargs)

    handle = attn.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        x, a = inputs()
        with recorded_joint_attention(den.transformer, LAYOUT[family]) as rec:
            den.eps_hat(x, a, PROMPTS)
    finally:
        handle.remove()
    expected = attention_by_hand(attn, seen["hidden_states"], seen["encoder_hidden_states"], LAYOUT[family],
                                 seen.get("image_rotary_emb"))
    n_txt = {"sd3": 16 + 256, "flux": T5_TOKENS}[family]  # SD3: CLIP window + T5; Flux: T5
    assert rec.probs[0].shape == expected.shape == (2, 16, n_txt)
    torch.testing.assert_close(rec.probs[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_share_of_each_image_query_lies_in_0_1(dens, family):
    # softmax over image AND text keys: the text part of a row is a share of 1, and the
    # image keys keep some of it (random weights attend everywhere), so it is below 1;
    # a softmax over the text keys alone would make every row sum to exactly 1
    den = dens[family]
    x, a = inputs()
    with recorded_joint_attention(den.transformer, LAYOUT[family]) as rec:
        den.eps_hat(x, a, PROMPTS)
    for p in rec.probs:
        rows = p.sum(-1)
        assert p.min() >= 0 and rows.max() < 1 - 1e-3 and rows.min() > 1e-3
    # the maps per latent element summed over text positions: at most one share per block
    maps = read_joint_attention(den, x, a, PROMPTS, LAYOUT[family], 2)
    assert maps.shape == (2, rec.probs[0].shape[-1], 8, 8)
    assert maps.sum(1).max() <= len(rec.probs)


# ----------------------------------------------------------------------------- text positions

def test_sd3_position_is_its_clip_position_plus_its_t5_tokens(dens):
    den = dens["sd3"]
    x, a = inputs()
    maps = read_joint_attention(den, x, a, PROMPTS, IMAGE_FIRST, 2)  # (B, 16 + 256, H, W)
    got = den.cross_attention(x, a, PROMPTS)
    assert got.shape == (2, 16, 8, 8)  # CLIP-L's window
    (p0, p1), = word_spans(PROMPT, "red", den.tokenizer)
    (q0, q1), = transfer_spans(PROMPT, [(p0, p1)], den.tokenizer, den.tokenizer_3)
    assert (p1 - p0, q1 - q0) == (1, 1)  # "red" is one CLIP-L token and one T5 token "▁red"
    torch.testing.assert_close(got[0, p0], maps[0, p0] + maps[0, 16 + q0], atol=1e-6, rtol=0)
    # the start token has no characters, hence no T5 share: its own column only
    torch.testing.assert_close(got[0, 0], maps[0, 0], atol=0, rtol=0)


def test_position_transfer_gives_each_word_exactly_its_t5_tokens(dens):
    den = dens["flux"]
    prompt = "a red catamaran, on the mat"  # CLIP: cat|amaran ; T5: ▁cat a m a r a n (spelled)
    fold = position_transfer(prompt, den.tokenizer, 16, den.tokenizer_2, T5_TOKENS)
    for word in ("a", "red", "catamaran", "on", "the", "mat"):
        for span in word_spans(prompt, word, den.tokenizer):
            (q0, q1), = transfer_spans(prompt, [span], den.tokenizer, den.tokenizer_2)
            expected = torch.zeros(T5_TOKENS)
            expected[q0:q1] = 1.0
            # summing the word's CLIP rows gives weight 1 on its T5 tokens and 0 elsewhere
            torch.testing.assert_close(fold[span[0]:span[1]].sum(0), expected, atol=1e-6, rtol=0)
    assert fold[0].sum() == 0  # CLIP's start token covers no characters
    n_t5 = len(den.tokenizer_2(prompt).input_ids)  # with T5's end token "</s>"
    assert fold[:, n_t5 - 1:].sum() == 0  # T5's end token and padding are read by no CLIP position


# ----------------------------------------------------------------------------- a model whose attention is known

def one_block_denoiser(family):
    """The tiny model with a single joint block (Flux: its one double-stream block; the
    single-stream block is not read)."""
    if family == "flux":
        return FluxDenoiser(**build_flux_components(), max_sequence_length=T5_TOKENS)
    from diffusers import SD3Transformer2DModel

    parts = build_sd3_components(with_t5=True)
    config = {**parts["transformer"].config, "num_layers": 1, "dual_attention_layers": ()}
    parts["transformer"] = SD3Transformer2DModel.from_config(config).eval()
    return SD3Denoiser(**parts)


def set_known_attention(attn, g_q=2.0, g_k=5.0):
    """q/k weights of one joint attention that, for inputs s * e_0 (image, s = +-1) and
    e_0 (one text token; other text tokens 0), give every head, in its dims u = 0 and
    v = 1 (rotary axis 0 for Flux, whose ids are all 0 there, so the rotation is the
    identity on them):
      q_img = sqrt(d/2) g_q (s u + v),  k_token = 2 sqrt(d) g_k u,  k_img = sqrt(d) g_k v,
      other text keys 0,
    so the scores (q.k / sqrt(d), d = 8) are  token: 4 s g_q g_k = +-40, image keys: 2 g_q g_k = 20,
    other text keys: 0. Left (s = +1) queries give the token all but ~e^-20 of their
    attention; right (s = -1) queries give the image keys all but ~e^-20."""
    d = attn.to_q.weight.shape[0] // attn.heads
    u, v = [h * d for h in range(attn.heads)], [h * d + 1 for h in range(attn.heads)]
    with torch.no_grad():
        for linear in (attn.to_q, attn.to_k, attn.add_k_proj):
            linear.weight.zero_()
            linear.bias.zero_()
        attn.to_q.weight[u, 0] = 1.0  # q_u = s
        attn.to_q.bias[v] = 1.0  # q_v = 1
        attn.to_k.bias[v] = 1.0  # every image key on v
        attn.add_k_proj.weight[u, 0] = 1.0  # the chosen text token's key on u
        attn.norm_q.weight.fill_(g_q)
        attn.norm_k.weight.fill_(g_k)
        attn.norm_added_k.weight.fill_(2 * g_k)


@pytest.mark.parametrize("family", FAMILIES)
def test_known_attention_is_read_on_the_right_token_and_the_right_half(family):
    den = one_block_denoiser(family)
    attn = den.transformer.transformer_blocks[0].attn
    set_known_attention(attn)
    (p0, _), = word_spans(PROMPT, "red", den.tokenizer)
    second = den.tokenizer_3 if family == "sd3" else den.tokenizer_2
    (q0, _), = transfer_spans(PROMPT, [(p0, p0 + 1)], den.tokenizer, second)
    token = p0 if family == "sd3" else q0  # the text position of "red" in the transformer's sequence

    def fix_inputs(module, args, kwargs):
        # the attention's inputs, fixed: image token (row r, column c) of the 4x4 grid is
        # +e_0 in the left two columns and -e_0 in the right two; text is e_0 on "red"
        hidden, context = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        side = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(4)  # row-major over the grid
        kwargs["hidden_states"] = torch.zeros_like(hidden)
        kwargs["hidden_states"][..., 0] = side
        kwargs["encoder_hidden_states"] = torch.zeros_like(context)
        kwargs["encoder_hidden_states"][:, token, 0] = 1.0
        return args, kwargs

    handle = attn.register_forward_pre_hook(fix_inputs, with_kwargs=True)
    try:
        x, a = inputs(1)
        maps = den.cross_attention(x, a, [PROMPT])[0]  # (16 CLIP positions, 8, 8)
    finally:
        handle.remove()
    red = maps[p0]
    # left half (latent columns 0-3 = token columns 0-1): all the attention on "red";
    # right half: none (e^-20 per key)
    torch.testing.assert_close(red[:, :4], torch.ones(8, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(red[:, 4:], torch.zeros(8, 4), atol=1e-6, rtol=0)
    others = torch.cat([maps[:p0], maps[p0 + 1:]])
    assert others.abs().max() < 1e-6  # no other position is attended anywhere


# ----------------------------------------------------------------------------- the protocol and word maps

@pytest.mark.parametrize("family", FAMILIES)
def test_word_attention_gives_latent_resolution_maps(dens, family):
    den = dens[family]
    assert isinstance(den, AttentionDenoiser)
    x, _ = inputs()
    out = word_attention(den, x, [0, 1], PROMPTS, ["red", "sofa"], steps=2)
    for word, in_caption in (("red", [True, False]), ("sofa", [False, True])):
        maps, present = out[word]
        assert maps.shape == (2, 8, 8) and present.tolist() == in_caption  # latent H x W, one map per image
        # present: a positive share at each of the 2 noise levels, below 1 per level and
        # block (the word is one of many keys); absent: zero by definition
        blocks = len(den.transformer.transformer_blocks)
        assert (maps[present] > 0).all() and (maps[present] < 2 * blocks).all()
        assert (maps[~present] == 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_mismatched_batch_is_a_clear_error(dens, family):
    x, a = inputs()
    with pytest.raises(ValueError, match="needs 2 log-SNRs and 2 conditions"):
        dens[family].cross_attention(x, a, PROMPTS[:1])
