"""A tiny Stable Diffusion 3 pipeline built from configs, offline, for the SD3 adapter tests.

Every component is a diffusers or transformers class made from a config with seeded
random weights and saved with ``StableDiffusion3Pipeline(...).save_pretrained``, so the
folder has the real layout (model_index.json, transformer/, vae/, text_encoder[_2|_3]/,
tokenizer[_2|_3]/, scheduler/) and loads back through the adapter's from_pretrained.

Sizes: 16x16 RGB images -> VAE latents 4x8x8 (with SD3's shift and scale), a 2-layer
joint-attention transformer on 2x2 patches (16 image tokens); CLIP-L 16-dim and CLIP-G
24-dim text encoders, whose penultimate states (16 + 24 = 40 wide) are zero-padded to
the 48-wide joint attention; a 2-layer 48-dim T5 encoder when ``with_t5``.

The tokenizers differ on purpose, so that a masked word really has to move between
them: CLIP-L knows "red" and "photo" as single tokens, CLIP-G spells them letter by
letter (and pads with "!", as SD3's CLIP-G tokenizer does), and T5 is a SentencePiece
Unigram tokenizer (no start token, "▁"-prefixed words, pad id 0), built with
transformers' own T5Tokenizer so it saves and loads as SD3's tokenizer_3 does.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

from infodiff_lightning.models.tiny import build_clip_tokenizer
from tiny_models import MAX_TOKENS, MULTI_PIECE, WORDS

CLIP_L_HIDDEN = 16
CLIP_G_HIDDEN = 24
JOINT_DIM = 48  # the transformer's joint_attention_dim = the T5 width
T5_MAX_LENGTH = 512  # the T5 tokenizer's model_max_length (SD3 encodes 256 of them)
CLIP_G_MISSING = ("red", "photo")  # words CLIP-G spells letter by letter


def build_clip_l_tokenizer():
    return build_clip_tokenizer(WORDS, MAX_TOKENS, MULTI_PIECE)


def build_clip_g_tokenizer():
    """A CLIP tokenizer without CLIP_G_MISSING in its vocabulary, padding with "!"."""
    tok = build_clip_tokenizer([w for w in WORDS if w not in CLIP_G_MISSING], MAX_TOKENS, MULTI_PIECE)
    tok.pad_token = "!"
    return tok


def build_t5_tokenizer():
    """A SentencePiece-style Unigram T5 tokenizer: each of WORDS is one "▁word" piece,
    "catamaran" is "▁cat" + "amaran", anything else is spelled in characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [("amaran", -1.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def build_clip_encoder(tokenizer, hidden: int, seed: int):
    """CLIPTextModelWithProjection (2 layers), projecting to ``hidden``."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            projection_dim=hidden, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=MAX_TOKENS, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(config).eval()


def build_t5_encoder(tokenizer, seed: int = 12):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=JOINT_DIM, d_kv=12, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return T5EncoderModel(config).eval()


def build_sd3_transformer(seed: int = 13, sd35: bool = False):
    """SD3Transformer2DModel on 4x8x8 latents; ``sd35``: SD3.5's dual attention in the
    first block and RMS-normalised queries and keys."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=JOINT_DIM,
                                 caption_projection_dim=16, pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
                                 pos_embed_max_size=8, dual_attention_layers=(0,) if sd35 else (),
                                 qk_norm="rms_norm" if sd35 else None).eval()


def build_sd3_vae(seed: int = 14):
    """AutoencoderKL, 4 latent channels, downsampling 2, with SD3's shift and scale."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16, scaling_factor=1.5305,
                         shift_factor=0.0609).eval()


def build_flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def build_sd3_components(with_t5: bool = False) -> dict:
    """The StableDiffusion3Pipeline components; without T5 text_encoder_3 and tokenizer_3
    are None (as SD3 runs with T5 dropped). The T5 variant has SD3.5's transformer."""
    tok_l, tok_g = build_clip_l_tokenizer(), build_clip_g_tokenizer()
    tok_t5 = build_t5_tokenizer() if with_t5 else None
    return {"transformer": build_sd3_transformer(sd35=with_t5), "vae": build_sd3_vae(),
            "text_encoder": build_clip_encoder(tok_l, CLIP_L_HIDDEN, seed=10), "tokenizer": tok_l,
            "text_encoder_2": build_clip_encoder(tok_g, CLIP_G_HIDDEN, seed=11), "tokenizer_2": tok_g,
            "text_encoder_3": build_t5_encoder(tok_t5) if with_t5 else None, "tokenizer_3": tok_t5,
            "scheduler": build_flow_scheduler()}


def save_sd3_pipeline(folder: str | Path, with_t5: bool = False) -> Path:
    """A tiny SD3 pipeline saved with StableDiffusion3Pipeline.save_pretrained."""
    from diffusers import StableDiffusion3Pipeline

    StableDiffusion3Pipeline(**build_sd3_components(with_t5)).save_pretrained(folder)
    return Path(folder)
