"""Tiny text-to-image models built from configs, offline (no hub access).

A CLIP BPE tokenizer is built from a word list: every lowercase letter is a token (so
any word can be spelled) and each listed word gets a chain of merges that ends in one
whole-word token. transformers 5.x pitfall: pass ``vocab=`` and
``merges=``, not ``vocab_file=``, which silently builds a 3-token vocabulary.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["build_clip_tokenizer", "TinyTextToImageSpec", "build_tiny_text_to_image", "save_components"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _symbols(piece: str) -> list[str]:
    """A BPE piece as its starting symbols: letters, the last one marked end-of-word."""
    if piece.endswith("</w>"):
        body = piece[: -len("</w>")]
        return list(body[:-1]) + [body[-1] + "</w>"]
    return list(piece)


def build_clip_tokenizer(words: list[str], model_max_length: int = 16,
                         multi_piece: dict[str, list[str]] | None = None):
    """A CLIPTokenizer whose vocabulary has one token per listed word (plus every letter,
    digit and punctuation mark, so any word can still be spelled). ``multi_piece`` maps
    a word to the BPE pieces it should split into (e.g. {"catamaran": ["cat", "amaran</w>"]}).
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    add(BOS)
    add(EOS)
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        add(ch)
        add(ch + "</w>")
    clean = sorted({w.lower() for w in words}, key=lambda w: (-len(w), w))
    for word in clean:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"tokenizer words must be single non-empty words, got {word!r}")
    # Multi-piece words first, then longer words first: a merge of an earlier chain ranks
    # higher, so a short word's merge ("t"+"h" of "the") cannot cut a longer word.
    pieces = list((multi_piece or {}).values()) + [[w + "</w>"] for w in clean]
    for word_pieces in pieces:
        for piece in word_pieces:
            syms = _symbols(piece)
            left = syms[0]
            for right in syms[1:]:  # a chain of merges that ends in the whole piece
                if (left, right) not in merges:
                    merges.append((left, right))
                left += right
                add(left)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                        model_max_length=model_max_length)
    ids = {w: tuple(tok(w, add_special_tokens=False).input_ids) for w in clean}
    if len(set(ids.values())) != len(ids):
        raise RuntimeError("tokenizer maps distinct words to the same ids; check the transformers version")
    return tok


@dataclass
class TinyTextToImageSpec:
    """Sizes of a tiny pixel-space text-to-image model (UNet2DConditionModel + CLIP).

    ``attention_levels``: the resolution levels (0 = full resolution) whose blocks have
    (self- and cross-) attention; None: every level but the last. Attention at full
    resolution costs (H W)^2 per head: leave level 0 out above 16x16 pixels.
    """

    words: list[str] = field(default_factory=list)
    image_size: int = 16
    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)
    text_hidden_size: int = 32
    text_layers: int = 2
    max_tokens: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    seed: int = 0
    attention_levels: tuple[int, ...] | None = None


def build_tiny_text_to_image(spec: TinyTextToImageSpec) -> dict:
    """{"unet", "text_encoder", "tokenizer", "scheduler"} with seeded random weights."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if not spec.words:
        raise ValueError("TinyTextToImageSpec.words is empty: give the caption vocabulary")
    torch.manual_seed(spec.seed)
    tokenizer = build_clip_tokenizer(spec.words, spec.max_tokens)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=spec.text_hidden_size, intermediate_size=2 * spec.text_hidden_size,
        num_hidden_layers=spec.text_layers, num_attention_heads=4, max_position_embeddings=spec.max_tokens,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    n = len(spec.block_out_channels)
    levels = set(range(n - 1) if spec.attention_levels is None else spec.attention_levels)
    if not levels or not levels <= set(range(n)):
        raise ValueError(f"attention_levels must be a non-empty subset of 0..{n - 1}, got {spec.attention_levels}")
    down = tuple("CrossAttnDownBlock2D" if k in levels else "DownBlock2D" for k in range(n))
    unet = UNet2DConditionModel(
        sample_size=spec.image_size, in_channels=spec.in_channels, out_channels=spec.in_channels,
        block_out_channels=tuple(spec.block_out_channels), layers_per_block=1,
        down_block_types=down,
        up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
        cross_attention_dim=spec.text_hidden_size, attention_head_dim=8, norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=spec.num_train_timesteps, beta_schedule=spec.beta_schedule,
                              prediction_type=spec.prediction_type)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def save_components(components: dict, folder: str | Path) -> Path:
    """Save each component with save_pretrained into <folder>/<name>/ (diffusers layout)."""
    folder = Path(folder)
    for name, comp in components.items():
        if comp is not None:
            comp.save_pretrained(folder / name)
    return folder
