"""Tiny SD3, SDXL and Flux pipelines that can spell the captions of the analysis jobs' data.

The adapter tests' pipelines (tiny_sd3.py, tiny_sdxl.py, tiny_flux.py) know a dozen words
in a 16-token window: the jobs' data (CaptionedShapes, the embedded world) would be
spelled letter by letter and cut off. These builders reuse their transformers, UNets,
VAEs, schedulers and encoders, with tokenizers whose vocabulary is :data:`JOB_WORDS`
(each word one token) and CLIP windows of ``max_tokens`` positions.

As in the adapter tests the tokenizers differ on purpose: the second CLIP tokenizer of
SD3 and SDXL lacks "red" (spelled "r", "e", "d</w>") and pads with "!", and T5 marks
words with "▁", so a removed or masked word has to be found anew in each tokenizer.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

from infodiff_lightning.data.world import WORLD_VOCABULARY
from infodiff_lightning.models.tiny import build_clip_tokenizer
import tiny_flux
import tiny_models
import tiny_sd3
import tiny_sdxl

#: every word of CaptionedShapes' and the embedded world's captions
JOB_WORDS = sorted(set(WORLD_VOCABULARY) | {"left", "right", "top", "bottom"})
#: the CLIP window: the world's longest captions are about 20 words
JOB_TOKENS = 32
SPELLED_OUT = "red"  # one token for the first tokenizer, three for the second CLIP tokenizer


def clip_tokenizer(max_tokens: int = JOB_TOKENS, words=JOB_WORDS, pad: str | None = None):
    tok = build_clip_tokenizer(list(words), max_tokens)
    if pad is not None:
        tok.pad_token = pad
    return tok


def second_clip_tokenizer(max_tokens: int = JOB_TOKENS):
    """SD3's CLIP-G / SDXL's tokenizer_2: without "red", padding with "!"."""
    return clip_tokenizer(max_tokens, [w for w in JOB_WORDS if w != SPELLED_OUT], pad="!")


def t5_tokenizer(max_length: int):
    """A T5 Unigram tokenizer (pad id 0, "</s>" appended) with one "▁word" piece per job word."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in JOB_WORDS]
    vocab += [(c, -5.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def clip_with_projection(tokenizer, hidden: int, projection: int, seed: int, max_tokens: int):
    """CLIPTextModelWithProjection (2 layers) with a window of ``max_tokens`` positions."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            projection_dim=projection, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=max_tokens, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(config).eval()


def save_sd3_for_jobs(folder: str | Path, max_tokens: int = JOB_TOKENS, with_t5: bool = True) -> Path:
    """tiny_sd3's pipeline (SD3.5's transformer with T5, SD3's without) with the job words."""
    from diffusers import StableDiffusion3Pipeline

    tok_l, tok_g = clip_tokenizer(max_tokens), second_clip_tokenizer(max_tokens)
    tok_t5 = t5_tokenizer(tiny_sd3.T5_MAX_LENGTH) if with_t5 else None
    parts = {"transformer": tiny_sd3.build_sd3_transformer(sd35=with_t5), "vae": tiny_sd3.build_sd3_vae(),
             "text_encoder": clip_with_projection(tok_l, tiny_sd3.CLIP_L_HIDDEN, tiny_sd3.CLIP_L_HIDDEN, 10,
                                                  max_tokens),
             "tokenizer": tok_l,
             "text_encoder_2": clip_with_projection(tok_g, tiny_sd3.CLIP_G_HIDDEN, tiny_sd3.CLIP_G_HIDDEN, 11,
                                                    max_tokens),
             "tokenizer_2": tok_g, "text_encoder_3": tiny_sd3.build_t5_encoder(tok_t5) if with_t5 else None,
             "tokenizer_3": tok_t5, "scheduler": tiny_sd3.build_flow_scheduler()}
    StableDiffusion3Pipeline(**parts).save_pretrained(folder)
    return Path(folder)


def save_sdxl_for_jobs(folder: str | Path, max_tokens: int = JOB_TOKENS) -> Path:
    """tiny_sdxl's pipeline (UNet with cross-attention, both CLIP encoders) with the job words."""
    tok, tok_2 = clip_tokenizer(max_tokens), second_clip_tokenizer(max_tokens)
    parts = {"vae": tiny_models.build_vae(), "text_encoder": tiny_models.build_text_encoder(tok, max_tokens=max_tokens),
             "text_encoder_2": tiny_sdxl.build_text_encoder_2(tok_2, max_tokens=max_tokens), "tokenizer": tok,
             "tokenizer_2": tok_2, "unet": tiny_sdxl.build_sdxl_unet(), "scheduler": tiny_sdxl.build_euler_scheduler()}
    tiny_sdxl.sdxl_pipeline(parts).save_pretrained(folder)
    return Path(folder)


def save_flux_for_jobs(folder: str | Path, max_tokens: int = JOB_TOKENS) -> Path:
    """tiny_flux's guidance-distilled pipeline with the job words (T5's tokenizer saved
    with a ``max_tokens`` window; the adapter pads T5 to its own max_sequence_length)."""
    from diffusers import FluxPipeline

    clip, t5 = clip_tokenizer(max_tokens), t5_tokenizer(max_tokens)
    parts = {"scheduler": tiny_flux.build_flux_scheduler(), "vae": tiny_flux.build_flux_vae(),
             "text_encoder": tiny_models.build_text_encoder(clip, max_tokens=max_tokens), "tokenizer": clip,
             "text_encoder_2": tiny_flux.build_t5_encoder(t5), "tokenizer_2": t5,
             "transformer": tiny_flux.build_flux_transformer()}
    FluxPipeline(**parts).save_pretrained(folder)
    return Path(folder)


def save_tiny_sd(folder: Path, words) -> Path:
    """tiny_models' Stable Diffusion pipeline (VAE, 2-layer CLIP, cross-attention UNet, PNDM)
    whose tokenizer holds ``words`` and tiny_families' job words as single tokens in a
    32-token window: the released fixtures' captions reach the model whole (the adapter
    tests' pipeline knows 13 words in 16 tokens and would cut them off)."""
    from diffusers import StableDiffusionPipeline

    tok = clip_tokenizer(JOB_TOKENS, sorted(set(JOB_WORDS) | set(words)))
    parts = {**tiny_models.build_sd_components(), "tokenizer": tok,
             "text_encoder": tiny_models.build_text_encoder(tok, max_tokens=JOB_TOKENS)}
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder
