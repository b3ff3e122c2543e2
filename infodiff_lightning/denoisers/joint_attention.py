"""Reading an MM-DiT's joint attention as the cross-attention baseline (SD3, Flux).

SD3 and Flux have no cross-attention layers: in each joint block the image tokens and
the text tokens are concatenated and attend to each other. The part that plays the role
of DAAM's cross-attention (cross_attention.py) is the image queries' attention to the
text keys: per block,

    P = softmax(Q_img K_all^T / sqrt(d))      over ALL keys, image and text, as the model does,

so each image query's row sums to 1 over image + text keys, and the recorded map keeps
P's text columns, (B, N_img, N_txt), averaged over heads (its values lie in [0, 1] and
their sum over text positions is the share of attention a query gives to the text).
The recorded Q and K are the model's own: the block's projections, its RMS norms on q
and k (SD3.5, Flux), and for Flux the rotary embedding applied to the concatenated
sequence before attention.

Concatenation order (diffusers' processors): SD3's ``JointAttnProcessor2_0`` puts the
image tokens first, [image; text]; Flux's ``FluxAttnProcessor`` puts the text first,
[text; image], and rotates both with the rotary embedding of [text ids; image ids].

:class:`JointAttentionRecorder` wraps each joint attention's own processor for the
duration of one forward (:func:`recorded_joint_attention`): it recomputes Q and K on
the side for the record and then calls the original processor, so the model's output is
exactly what it is without the recorder; the original processors are put back on exit.
:func:`summed_joint_attention` turns the records into (B, N_txt, H, W) maps at latent
resolution: image tokens in row-major order over the patch grid (H/p, W/p), each token's
value given to the p x p latent elements of its patch (the patch *is* those elements,
so nearest, not bilinear, upsampling), summed over the blocks.
:func:`position_transfer` maps one tokenizer's positions to another's by characters
(how Flux's T5 attention is read per position of its first tokenizer, CLIP's).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from diffusers.models.embeddings import apply_rotary_emb
from torch import Tensor

from ..conditions import token_offsets, as_condition

__all__ = ["JointAttentionRecorder", "recorded_joint_attention", "summed_joint_attention", "read_joint_attention",
           "position_transfer", "IMAGE_FIRST", "TEXT_FIRST"]

IMAGE_FIRST = "image_first"  # SD3: keys [image; text]
TEXT_FIRST = "text_first"  # Flux: keys [text; image], rotary embedding on both


class JointAttentionRecorder:
    """The record of one forward: ``probs``, one (B, N_img, N_txt) float32 tensor per
    joint attention call, in call order (image queries' probabilities on the text keys,
    heads averaged)."""

    def __init__(self, layout: str):
        if layout not in (IMAGE_FIRST, TEXT_FIRST):
            raise ValueError(f"layout must be {IMAGE_FIRST!r} (SD3) or {TEXT_FIRST!r} (Flux), got {layout!r}")
        self.layout = layout
        self.probs: list[Tensor] = []

    def queries_and_keys(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor,
                         image_rotary_emb=None) -> tuple[Tensor, Tensor, slice]:
        """(image queries (B, H, N_img, d), all keys (B, H, N_img + N_txt, d), the text
        keys' slice), as the block's processor forms them before its attention."""
        def heads(x: Tensor) -> Tensor:  # (B, N, H * d) -> (B, N, H, d)
            return x.unflatten(-1, (attn.heads, -1))

        n_txt = encoder_hidden_states.shape[1]
        if self.layout == IMAGE_FIRST:
            # JointAttnProcessor2_0: norms (if any) on (B, H, N, d), image keys first
            q, k = heads(attn.to_q(hidden_states)).transpose(1, 2), heads(attn.to_k(hidden_states)).transpose(1, 2)
            k_txt = heads(attn.add_k_proj(encoder_hidden_states)).transpose(1, 2)
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            if attn.norm_added_k is not None:
                k_txt = attn.norm_added_k(k_txt)
            return q, torch.cat([k, k_txt], 2), slice(k.shape[2], k.shape[2] + n_txt)
        # FluxAttnProcessor: norms on (B, N, H, d), text keys first, then the rotary
        # embedding of [text ids; image ids] on queries and keys
        if image_rotary_emb is None:
            raise ValueError("Flux's joint attention was called without its rotary embedding")
        q, k = attn.norm_q(heads(attn.to_q(hidden_states))), attn.norm_k(heads(attn.to_k(hidden_states)))
        k_txt = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
        cos, sin = image_rotary_emb
        q = apply_rotary_emb(q, (cos[n_txt:], sin[n_txt:]), sequence_dim=1)  # the image rows of the embedding
        k = apply_rotary_emb(torch.cat([k_txt, k], 1), (cos, sin), sequence_dim=1)
        return q.transpose(1, 2), k.transpose(1, 2), slice(0, n_txt)

    def record(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor, image_rotary_emb=None) -> None:
        """Append this call's (B, N_img, N_txt) text probabilities of the image queries."""
        q, k, text = self.queries_and_keys(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        scale = q.shape[-1] ** -0.5  # the processors' scaled_dot_product_attention default
        total = 0.0
        # scores and softmax in float32 even when the model runs under autocast
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k = q.float(), k.float()
            for h in range(q.shape[1]):  # one head at a time: (B, N_img, N_all) at most, not (B, H, N_img, N_all)
                total = total + torch.softmax(q[:, h] @ k[:, h].transpose(-1, -2) * scale, -1)[..., text]
        self.probs.append(total / q.shape[1])


class _Recording:
    """The processor put in place of one joint attention's own for the recording:
    records, then computes the layer with the original processor."""

    def __init__(self, original, recorder: JointAttentionRecorder):
        self.original, self.recorder = original, recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is None:
            raise ValueError("a joint attention layer was called without text (encoder_hidden_states)")
        if attention_mask is not None:
            raise ValueError("recording joint attention under an attention mask is not supported")
        self.recorder.record(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        if self.recorder.layout == TEXT_FIRST:
            return self.original(attn, hidden_states, encoder_hidden_states, None, image_rotary_emb)
        return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states)


def _joint_names(transformer) -> list[str]:
    """The processors of the joint (image + text) attention of ``transformer_blocks``:
    SD3's every block's ``attn`` (not SD3.5's image-only ``attn2``), Flux's double-stream
    blocks' ``attn`` (not the single-stream blocks')."""
    return [f"transformer_blocks.{i}.attn.processor" for i in range(len(transformer.transformer_blocks))]


@contextlib.contextmanager
def recorded_joint_attention(transformer, layout: str) -> Iterator[JointAttentionRecorder]:
    """Within the block, the joint attention of ``transformer.transformer_blocks``
    records the image queries' attention to the text (the other processors stay); the
    model's own processors are restored on exit."""
    names = _joint_names(transformer)
    if not names:
        raise ValueError(f"this {type(transformer).__name__} has no joint attention blocks to read")
    original = transformer.attn_processors
    recorder = JointAttentionRecorder(layout)
    transformer.set_attn_processor({name: _Recording(proc, recorder) if name in names else proc
                                    for name, proc in original.items()})
    try:
        yield recorder
    finally:
        transformer.set_attn_processor(original)


def summed_joint_attention(recorder: JointAttentionRecorder, size: tuple[int, int], patch: int) -> Tensor:
    """(B, N_txt, H, W): the recorded blocks' maps over the (H/patch, W/patch) token grid,
    each token's value on its patch x patch latent elements, summed over the blocks."""
    if not recorder.probs:
        raise ValueError("no joint attention was recorded")
    h, w = size
    if h % patch or w % patch:
        raise ValueError(f"a {h}x{w} latent is not a grid of {patch}x{patch} patches")
    total = None
    for p in recorder.probs:
        b, n, t = p.shape
        if n != (h // patch) * (w // patch):
            raise ValueError(f"a joint attention layer has {n} image tokens, not the {h // patch}x{w // patch} "
                             f"patches of a {h}x{w} latent")
        grid = p.transpose(1, 2).reshape(b, t, h // patch, w // patch)
        grid = grid.repeat_interleave(patch, -2).repeat_interleave(patch, -1)
        total = grid if total is None else total + grid
    return total


def position_transfer(prompt, from_tokenizer, from_length: int, to_tokenizer, to_length: int) -> Tensor:
    """(from_length, to_length) float32: entry [p, q] is the share of target token q's
    characters that source token p covers (|chars p & chars q| / |chars q|), for the two
    tokenizers' encoder inputs of the prompt (a str or Condition: its text) cut to their
    windows. A target token whose characters all lie in source tokens spreads a total of
    1 over them, so summing a word's source positions of the transferred attention gives
    exactly the target tokens of that word (shared proportionally with a neighbour when a
    target token straddles the word's edge). Special tokens (start, end, padding) have no
    characters: their rows and columns are zero. Needs fast tokenizers (offsets)."""
    return _position_transfer(as_condition(prompt).prompt, from_tokenizer, int(from_length), to_tokenizer,
                              int(to_length)).clone()


@functools.lru_cache(maxsize=1024)  # a caption is read at every noise level of word_attention
def _position_transfer(text: str, from_tokenizer, from_length: int, to_tokenizer, to_length: int) -> Tensor:
    source, target = token_offsets(from_tokenizer, text), token_offsets(to_tokenizer, text)
    if source is None or target is None:
        raise ValueError("reading attention across tokenizers needs fast tokenizers (character offsets)")
    out = torch.zeros(from_length, to_length)
    # Position length - 1 holds the end token when a prompt is cut off at the window (and
    # a pad or the end token otherwise): only positions before it carry text.
    source = [t for t in source if t[0] < from_length - 1]
    for q, qs, qe in target:
        if q >= to_length - 1:
            continue
        for p, ps, pe in source:
            overlap = min(pe, qe) - max(ps, qs)
            if overlap > 0:
                out[p, q] = overlap / (qe - qs)
    return out


@torch.inference_mode()
def read_joint_attention(denoiser, x_alpha: Tensor, alpha: Tensor, conditions, layout: str, patch: int) -> Tensor:
    """(B, N_txt, H, W) on x's device: per position of the transformer's text sequence,
    the joint attention each latent element's image token pays to it (heads averaged,
    summed over the joint blocks), from one forward of ``denoiser`` (a DiffusersDenoiser
    on a joint-attention transformer) at x_alpha, alpha, exactly as eps_hat calls it."""
    b = int(x_alpha.shape[0])
    alpha = torch.as_tensor(alpha)
    if len(conditions) != b or alpha.shape != (b,):
        raise ValueError(f"cross_attention needs {b} log-SNRs and {b} conditions for {b} inputs")
    dev = denoiser.device
    x_in = denoiser.parametrisation.scale_input(x_alpha.to(dev), alpha.to(dev))
    with recorded_joint_attention(denoiser.transformer, layout) as recorder, denoiser._autocast():
        denoiser.model_output(x_in.to(denoiser.dtype), denoiser.timesteps(alpha), conditions)
    return summed_joint_attention(recorder, tuple(x_alpha.shape[-2:]), patch).to(x_alpha.device)
