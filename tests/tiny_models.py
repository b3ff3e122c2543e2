"""Tiny diffusers models built from configs, offline, for the adapter tests.

Everything is made from configs with seeded random weights and saved with
save_pretrained, so the tests load it back through the same from_pretrained path a
user takes with a real checkpoint. No hub access.

The CLIP BPE tokenizer is built from a hand-written vocabulary and merge list
(transformers 5.x needs ``CLIPTokenizer(vocab=..., merges=...)``;
``vocab_file=`` silently builds a 3-token vocabulary). Every letter is a token, so any
word can be spelled; the words in WORDS are single tokens, and "catamaran" is two
pieces, "cat" + "amaran</w>", to exercise multi-piece words.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from infodiff_lightning.models.tiny import build_clip_tokenizer

WORDS = ["a", "cat", "dog", "on", "the", "mat", "red", "blue", "photo", "of", "and", "sofa", "something"]
MULTI_PIECE = {"catamaran": ["cat", "amaran</w>"]}
MAX_TOKENS = 16  # the text encoder's window (77 for real CLIP)
HIDDEN = 32  # text hidden size = UNet cross_attention_dim


def build_tokenizer(max_length: int = MAX_TOKENS):
    """The library's offline CLIP BPE builder, with one multi-piece word."""
    return build_clip_tokenizer(WORDS, max_length, MULTI_PIECE)


def build_text_encoder(tokenizer, seed: int = 0, max_tokens: int = MAX_TOKENS):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=max_tokens,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval()


def build_cond_unet(in_channels: int, sample_size: int = 8, seed: int = 1):
    """UNet2DConditionModel, block_out_channels (32, 64), cross-attention on 32-dim text."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=HIDDEN, attention_head_dim=8,
        norm_num_groups=8).eval()


def build_vae(seed: int = 2):
    """AutoencoderKL with 4 latent channels and downsampling 2: 16x16 images -> 4x8x8 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16).eval()


def build_scheduler(kind: str = "ddpm", prediction_type: str = "epsilon"):
    """SD's scaled-linear schedule with 1000 steps (PNDM as in SD 1.x, or DDPM)."""
    from diffusers import DDPMScheduler, PNDMScheduler

    kw = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
              prediction_type=prediction_type, steps_offset=1)
    if kind == "pndm":
        return PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **kw)
    return DDPMScheduler(clip_sample=False, **kw)


def build_sd_components(prediction_type: str = "epsilon") -> dict:
    tok = build_tokenizer()
    return {"vae": build_vae(), "text_encoder": build_text_encoder(tok), "tokenizer": tok,
            "unet": build_cond_unet(in_channels=4), "scheduler": build_scheduler("pndm", prediction_type)}


def save_sd_pipeline(folder: str | Path, prediction_type: str = "epsilon") -> Path:
    """A tiny Stable Diffusion pipeline saved with StableDiffusionPipeline.save_pretrained."""
    from diffusers import StableDiffusionPipeline

    c = build_sd_components(prediction_type)
    pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return Path(folder)


def save_pixel_text(folder: str | Path, prediction_type: str = "epsilon", max_tokens: int = MAX_TOKENS) -> Path:
    """unet/ (3 channels, 8x8), text_encoder/, tokenizer/, scheduler/ (DDPM): no vae/.
    ``max_tokens``: the text encoder's window (raise it for captions of words outside the
    tiny vocabulary, which the tokenizer spells in many pieces)."""
    folder = Path(folder)
    tok = build_tokenizer(max_tokens)
    parts = {"unet": build_cond_unet(in_channels=3), "text_encoder": build_text_encoder(tok, max_tokens=max_tokens),
             "tokenizer": tok,
             "scheduler": build_scheduler("ddpm", prediction_type)}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    return folder


def build_class_unet(num_classes: int = 5, seed: int = 3):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_classes, norm_num_groups=8).eval()


def save_class_conditional(folder: str | Path, num_classes: int = 5) -> Path:
    folder = Path(folder)
    build_class_unet(num_classes).save_pretrained(folder / "unet")
    build_scheduler("ddpm").save_pretrained(folder / "scheduler")
    return folder


def set_prediction_type(folder: str | Path, prediction_type: str) -> None:
    """Rewrite scheduler/scheduler_config.json, as a user's hand-edited checkpoint would be."""
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["prediction_type"] = prediction_type
    path.write_text(json.dumps(config))
