"""Reading a UNet's cross-attention: the recorder computes each layer as the model's own
processor does, gives per-element distributions over the text tokens, and leaves the
model as it found it."""
import pytest
import torch

from infodiff_lightning.analyses.attention_maps import attention_times_information, word_attention
from infodiff_lightning.denoisers import PixelTextDenoiser
from infodiff_lightning.denoisers.cross_attention import recorded_cross_attention
from tiny_models import save_pixel_text


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    return PixelTextDenoiser.from_pretrained(save_pixel_text(tmp_path_factory.mktemp("xattn") / "model"))


def inputs(n: int = 3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.tensor([-2.0, 0.0, 3.0][:n], dtype=torch.float64)


def test_recording_changes_neither_the_prediction_nor_the_processors(denoiser):
    x, alpha = inputs()
    captions = ["a red square", "a blue circle on the left", ""]
    before = {k: type(v) for k, v in denoiser.unet.attn_processors.items()}
    plain = denoiser.eps_hat(x, alpha, captions)
    att = denoiser.cross_attention(x, alpha, captions)
    # the recorder is the classic processor (explicit softmax) where the model used the fused
    # one: equal to float32 rounding
    with recorded_cross_attention(denoiser.unet):
        recorded = denoiser.eps_hat(x, alpha, captions)
    assert torch.allclose(recorded, plain, atol=1e-5)
    assert {k: type(v) for k, v in denoiser.unet.attn_processors.items()} == before
    assert att.shape[:2] == (3, denoiser.text.max_length) and att.shape[2:] == (8, 8)


def test_each_element_spreads_one_unit_of_attention_over_the_tokens_per_layer(denoiser):
    # softmax over the tokens: summed over tokens, each layer's map is 1 everywhere (and a
    # bilinear resize of a constant is that constant), so the sum over layers is the
    # number of cross-attention layers at every element.
    x, alpha = inputs()
    att = denoiser.cross_attention(x, alpha, ["a red square", "a blue circle", "a green cross"])
    with recorded_cross_attention(denoiser.unet) as recorder:
        denoiser.eps_hat(x, alpha, ["a red square"] * 3)
    n_layers = len(recorder.probs)
    assert n_layers >= 1
    assert torch.allclose(att.sum(1), torch.full((3, 8, 8), float(n_layers)), atol=1e-4)


def test_a_word_map_is_the_attention_to_its_tokens_and_zero_where_it_is_absent(denoiser):
    x, _ = inputs(2)
    maps = word_attention(denoiser, x, [0, 1], ["a red square", "a blue circle"], ["red"], steps=2)
    red, present = maps["red"]
    assert present.tolist() == [True, False]
    assert float(red[0].min()) > 0 and float(red[1].abs().max()) == 0
    # the word's share of a softmax is at most 1 per layer and element: at most
    # 2 noise levels x the number of layers
    with recorded_cross_attention(denoiser.unet) as recorder:
        denoiser.eps_hat(x[:1], torch.zeros(1, dtype=torch.float64), ["a red square"])
    assert float(red[0].max()) <= 2 * len(recorder.probs) + 1e-5


def test_attention_times_information_is_the_product_of_maps_scaled_to_their_maxima():
    a = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]])
    i = torch.tensor([[[-1.0, 0.5], [1.0, 1.0]]])  # negative information counts as 0
    expected = torch.tensor([[[0.0, 0.25], [0.0, 1.0]]], dtype=torch.float64)  # [.25, .5; 0, 1] x [0, .5; 1, 1]
    assert torch.allclose(attention_times_information(a, i), expected)
    with pytest.raises(ValueError, match="maps of shapes"):
        attention_times_information(a, i[:, :1])
