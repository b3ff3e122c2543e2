"""The cross-attention baseline on a UNet whose attention is set by hand (issue #30).

The tiny conditional UNet of tiny_models.build_cond_unet (cross-attention at 8x8 in the
down and up blocks, 3 layers, and at 4x4 in the mid block, 1 layer; 8 heads each) is
rewired so that every layer's attention is known:

- every residual block, transformer and resampler passes its input through unchanged
  (their last convolution zero, shortcuts and resamplers copying channels), so every
  feature channel everywhere is x's channel 0, downsampled or upsampled;
- in each cross-attention layer the query of the first ``planted`` heads is
  +-``strength`` times a fixed vector, its sign that of x's channel 0 there (the group
  and layer norms before the query keep only the sign), and the other heads' query is 0;
- the text encoder gives the word's token a one-hot embedding and every other token 0,
  and the key projection maps that one-hot onto the queries' vector.

So in a planted head the word's token scores +strength where x's channel 0 is positive
(the left half) and -strength elsewhere, every other token 0: with strength 30 the word
takes all the attention on the left and none on the right; an unplanted head spreads
its attention evenly over the 16 tokens. x's channel 0 is +-50, far above the noise
of any level the baseline averages, so its sign is the planted one at every level.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from infodiff_lightning.analyses.attention_maps import attention_logsnrs, daam_normalised, word_attention
from infodiff_lightning.analyses.localization import THRESHOLDS, iou, map_to_mask
from infodiff_lightning.denoisers import PixelTextDenoiser
from infodiff_lightning.denoisers.cross_attention import recorded_cross_attention, summed_attention
from tiny_models import HIDDEN, MAX_TOKENS, build_cond_unet, build_scheduler, build_tokenizer

HEADS = 8
WORD = "red"
LEFT = torch.zeros(8, 8, dtype=torch.bool)
LEFT[:, :4] = True


class FlagEncoder(torch.nn.Module):
    """A text encoder whose output is the one-hot e_0 at the word's token, 0 elsewhere."""

    def __init__(self, token_id: int):
        super().__init__()
        self.token_id = token_id
        self.config = SimpleNamespace(hidden_size=HIDDEN, use_attention_mask=False)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, ids, attention_mask=None, output_hidden_states=False):
        out = torch.zeros(*ids.shape, HIDDEN)
        out[..., 0] = (ids == self.token_id).float()
        return (out,)


def _pass_through(unet) -> None:
    """Every block returns its input: x's channel 0 in every channel, at every scale."""
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        unet.conv_in.bias.zero_()
        unet.conv_in.weight[:, 0, 1, 1] = 1.0
        for name, m in unet.named_modules():
            kind = type(m).__name__
            if kind == "ResnetBlock2D":
                m.conv2.weight.zero_()
                m.conv2.bias.zero_()
                if m.conv_shortcut is not None:  # channels all equal: their mean is any one of them
                    m.conv_shortcut.weight.fill_(1.0 / m.conv_shortcut.in_channels)
                    m.conv_shortcut.bias.zero_()
            elif kind in ("Downsample2D", "Upsample2D"):  # the centre tap, channel to itself
                m.conv.weight.zero_()
                m.conv.bias.zero_()
                for c in range(m.conv.out_channels):
                    m.conv.weight[c, c, 1, 1] = 1.0
            elif kind == "Transformer2DModel":
                m.proj_out.weight.zero_()
                m.proj_out.bias.zero_()


def _plant(unet, planted: int, strength: float) -> None:
    """In each cross-attention layer: heads < ``planted`` score the flagged token
    +-strength by the sign of x's channel 0; the others score every token 0."""
    with torch.no_grad():
        for name, m in unet.named_modules():
            if type(m).__name__ != "Transformer2DModel":
                continue
            block = m.transformer_blocks[0]
            c = m.proj_in.out_channels
            u = torch.tensor([1.0, -1.0]).repeat(c // 2)  # mean 0, std 1: what the layer norm gives back
            m.proj_in.weight.zero_()
            m.proj_in.weight[:, :, 0, 0] = u[:, None] / c  # +-u, by the sign of the (equal) channels
            m.proj_in.bias.zero_()
            block.attn1.to_out[0].weight.zero_()  # self-attention adds nothing
            block.attn1.to_out[0].bias.zero_()
            attn = block.attn2
            head_dim = c // attn.heads
            direction = torch.zeros(c)
            for h in range(planted):
                direction[h * head_dim] = strength / attn.scale  # score = scale * q.k = +-strength
            attn.to_q.weight.copy_(direction[:, None] * u[None, :] / c)
            attn.to_k.weight.zero_()
            for h in range(attn.heads):
                attn.to_k.weight[h * head_dim, 0] = 1.0


def planted_denoiser(planted: int = HEADS, strength: float = 30.0) -> PixelTextDenoiser:
    tok = build_tokenizer()
    unet = build_cond_unet(in_channels=3)
    _pass_through(unet)
    _plant(unet, planted, strength)
    encoder = FlagEncoder(tok.convert_tokens_to_ids(f"{WORD}</w>"))
    return PixelTextDenoiser(unet, encoder, tok, build_scheduler("ddpm"), autocast_dtype=None)


def planted_input(n: int = 1) -> torch.Tensor:
    x = torch.zeros(n, 3, 8, 8)
    x[:, 0] = torch.where(LEFT, 50.0, -50.0)
    return x


def per_layer(planted_share: float, region: torch.Tensor) -> torch.Tensor:
    """A layer's head-averaged attention to the word: 1 in the region for the planted heads,
    1/16 everywhere for the others (16 tokens, all scoring 0)."""
    return planted_share * region.double() + (1 - planted_share) / MAX_TOKENS


def expected_map(planted_share: float) -> torch.Tensor:
    """The sum over the 4 layers: three 8x8 layers (the left half) and the 4x4 mid layer,
    whose left half bilinearly doubled covers columns 0-2 fully, 3 by 3/4 and 4 by 1/4."""
    fine = per_layer(planted_share, LEFT)
    coarse = per_layer(planted_share, LEFT[::2, ::2])
    return 3 * fine + F.interpolate(coarse[None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]


@pytest.fixture(scope="module")
def sharp():
    return planted_denoiser()


@pytest.fixture(scope="module")
def half_heads():
    return planted_denoiser(planted=HEADS // 2)


def test_the_model_has_four_cross_attention_layers_and_keeps_its_input(sharp):
    # the expectation below counts 3 layers at 8x8 and 1 at 4x4
    with recorded_cross_attention(sharp.unet) as rec:
        sharp.model_output(planted_input(), sharp.timesteps(torch.zeros(1, dtype=torch.float64)), [f"a {WORD} cat"])
    assert [p.shape[1] for p in rec.probs] == [64, 16, 64, 64]


def test_the_word_map_is_the_planted_attention(sharp):
    x, alpha = planted_input(2), torch.tensor([-2.0, 2.0], dtype=torch.float64)
    att = sharp.cross_attention(x, alpha, [f"a {WORD} cat", f"a {WORD} cat"])
    token = 2  # <bos> a red: the word's token
    assert torch.allclose(att[:, token].double(), expected_map(1.0).expand(2, 8, 8), atol=1e-4)
    # every element's attention sums to one unit per layer over the tokens
    assert torch.allclose(att.sum(1), torch.full((2, 8, 8), 4.0), atol=1e-4)


def test_heads_are_averaged(half_heads):
    # half the heads planted: 1/2 + 1/32 on the left, 1/32 on the right, per layer
    att = half_heads.cross_attention(planted_input(), torch.zeros(1, dtype=torch.float64), [f"a {WORD} cat"])
    assert torch.allclose(att[0, 2].double(), expected_map(0.5), atol=1e-4)


def test_word_attention_sums_the_noise_levels(half_heads):
    steps = 3
    maps, present = word_attention(half_heads, planted_input(2), [0, 1], [f"a {WORD} cat", "a blue cat"], [WORD],
                                   steps=steps)[WORD]
    assert present.tolist() == [True, False]
    assert len(attention_logsnrs(half_heads, steps)) == steps
    assert torch.allclose(maps[0].double(), steps * expected_map(0.5), atol=1e-3)
    assert float(maps[1].abs().max()) == 0.0


def test_the_thresholded_map_is_the_planted_region(half_heads):
    maps, _ = word_attention(half_heads, planted_input(), [0], [f"a {WORD} cat"], [WORD], steps=2)[WORD]
    scaled = daam_normalised(maps)
    # columns 3 and 4 (the mid layer's bilinear edge) sit at 15/16 and 1/16 of the range:
    # every threshold from 0.1 to 0.9 gives exactly the left half
    for tau in THRESHOLDS[1:18]:
        assert float(iou(map_to_mask(scaled, tau), LEFT[None])[0]) == 1.0, tau


def _wrong_aggregations(denoiser, x, alpha, caption):
    """The word's map (token 2) aggregated in ways the module must not: heads summed,
    softmax read over the grid instead of the tokens, the grid transposed."""
    with recorded_cross_attention(denoiser.unet) as rec:
        denoiser.model_output(x, denoiser.timesteps(alpha), [caption])
    probs = list(rec.probs)
    right = summed_attention(rec, (8, 8))[0, 2].double()
    summed_heads = HEADS * right
    rec.probs = [p / p.sum(1, keepdim=True) for p in probs]  # each token's map sums to 1 over the grid
    wrong_axis = summed_attention(rec, (8, 8))[0, 2].double()
    rec.probs = [p.reshape(1, int(p.shape[1] ** 0.5), -1, p.shape[2]).transpose(1, 2).reshape(p.shape) for p in probs]
    transposed = summed_attention(rec, (8, 8))[0, 2].double()
    return right, {"heads summed": summed_heads, "softmax over the grid": wrong_axis, "transposed": transposed}


def test_a_wrong_aggregation_misses_the_planted_map(half_heads):
    # the checks above would catch each of these: the values (heads summed, softmax axis) or
    # the region (transposed: the top half, IoU 1/3 with the left half)
    right, wrong = _wrong_aggregations(half_heads, planted_input(), torch.zeros(1, dtype=torch.float64),
                                       f"a {WORD} cat")
    assert torch.allclose(right, expected_map(0.5), atol=1e-4)
    for name, m in wrong.items():
        assert not torch.allclose(m, expected_map(0.5), atol=1e-2), name
    mask = map_to_mask(daam_normalised(wrong["transposed"][None]), 0.5)
    assert abs(float(iou(mask, LEFT[None])[0]) - 1 / 3) < 1e-9


def test_daam_scaling_removes_the_softmax_floor():
    # Weak planted contrast (strength 0.5, half the heads): the word gets about 1/16 of
    # every element's attention everywhere and a little more on the left. Scaled to its
    # maximum alone the floor is 0.63 of the peak (a planted head gives the word
    # e^0.5 / (e^0.5 + 15) on the left and e^-0.5 / (e^-0.5 + 15) on the right, an unplanted one
    # 1/16), so every threshold up to 0.6 keeps the whole image (IoU 0.5), as the world
    # model's maps did (docs/attention_baseline.md); DAAM's min-max scaling gives the left
    # half at each of them.
    weak = planted_denoiser(planted=HEADS // 2, strength=0.5)
    maps, _ = word_attention(weak, planted_input(), [0], [f"a {WORD} cat"], [WORD], steps=1)[WORD]
    assert 0.62 < float(maps.min() / maps.max()) < 0.64
    for tau in THRESHOLDS[1:12]:
        assert float(iou(map_to_mask(maps, tau), LEFT[None])[0]) == 0.5, tau
        assert float(iou(map_to_mask(daam_normalised(maps), tau), LEFT[None])[0]) == 1.0, tau


def test_daam_normalised_spans_zero_to_one_and_a_flat_map_is_zero():
    m = torch.tensor([[[2.0, 3.0], [4.0, 6.0]], [[5.0, 5.0], [5.0, 5.0]]])
    out = daam_normalised(m)
    assert out[0].tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert float(out[1].abs().max()) == 0.0
