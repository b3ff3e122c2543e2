"""A tiny SDXL pipeline built from configs, offline, for the SDXL adapter tests.

The StableDiffusionXLPipeline layout with seeded random weights: 16x16 RGB images ->
VAE latents 4x8x8 (tiny_models.build_vae), two CLIP text encoders with 16-token
windows, a (32, 64) UNet with SDXL's added conditions (addition_embed_type="text_time")
and an EulerDiscreteScheduler on SD's scaled-linear 1000-step table, epsilon.

The two encoders differ on purpose, so that nothing can pass by confusing them:
text_encoder/ is tiny_models' 32-dim CLIPTextModel; text_encoder_2/ is a 24-dim
CLIPTextModelWithProjection (16-dim text_embeds). tokenizer_2/ pads with "!" as SDXL's
second tokenizer does, and lacks the word "red", which it spells in three pieces
("r", "e", "d</w>"): a word masked for the first tokenizer must move to other positions
(and ids) for the second.
"""
from __future__ import annotations

from pathlib import Path

import torch

from infodiff_lightning.models.tiny import build_clip_tokenizer
from tiny_models import HIDDEN, MAX_TOKENS, MULTI_PIECE, WORDS, build_text_encoder, build_tokenizer, build_vae

HIDDEN_2 = 24  # text_encoder_2's hidden size; the UNet attends to HIDDEN + HIDDEN_2 features per token
POOLED = 16  # text_encoder_2's projection: SDXL's pooled "text_embeds"
TIME_EMBED = 8  # addition_time_embed_dim: each of the 6 time ids becomes 8 sinusoidal features
SPELLED_OUT = "red"  # a single token for the first tokenizer, three pieces for the second


def build_tokenizer_2(max_length: int = MAX_TOKENS):
    """CLIP BPE tokenizer without the word "red", padding with "!" (SDXL's tokenizer_2 pad)."""
    tok = build_clip_tokenizer([w for w in WORDS if w != SPELLED_OUT], max_length, MULTI_PIECE)
    tok.pad_token = "!"
    return tok


def build_text_encoder_2(tokenizer, seed: int = 4, max_tokens: int = MAX_TOKENS):
    """CLIPTextModelWithProjection: 2 layers, 24-dim hidden states, 16-dim text_embeds."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN_2, intermediate_size=2 * HIDDEN_2,
                            projection_dim=POOLED, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=max_tokens, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(config).eval()


def build_sdxl_unet(seed: int = 5):
    """UNet2DConditionModel with SDXL's added conditions: the time-embedding adds a
    projection of (pooled text_embeds, 6 time ids x TIME_EMBED sinusoidal features)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=HIDDEN + HIDDEN_2, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + POOLED).eval()


def build_euler_scheduler(prediction_type: str = "epsilon"):
    """SDXL's scheduler: Euler on SD's scaled-linear 1000-step table (a DDPM-type table)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, prediction_type=prediction_type, steps_offset=1,
                                  timestep_spacing="leading")


def build_sdxl_components() -> dict:
    """Every folder of the pipeline by name (what StableDiffusionXLPipeline takes)."""
    tok, tok_2 = build_tokenizer(), build_tokenizer_2()
    return {"vae": build_vae(), "text_encoder": build_text_encoder(tok), "text_encoder_2": build_text_encoder_2(tok_2),
            "tokenizer": tok, "tokenizer_2": tok_2, "unet": build_sdxl_unet(), "scheduler": build_euler_scheduler()}


def sdxl_pipeline(components: dict, force_zeros_for_empty_prompt: bool = True):
    """StableDiffusionXLPipeline around ``components`` (no watermarker: an extra package)."""
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
                                     add_watermarker=False)


def save_sdxl_pipeline(folder: str | Path, force_zeros_for_empty_prompt: bool = True) -> Path:
    """A tiny SDXL pipeline saved with StableDiffusionXLPipeline.save_pretrained (so
    model_index.json records force_zeros_for_empty_prompt)."""
    sdxl_pipeline(build_sdxl_components(), force_zeros_for_empty_prompt).save_pretrained(folder)
    return Path(folder)
