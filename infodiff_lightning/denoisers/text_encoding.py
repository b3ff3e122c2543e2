"""Prompt columns -> text embeddings, computed once per unique condition and cached.

Shared by every text-conditioned adapter (latent and pixel space). A column entry is a
prompt string or a :class:`~infodiff_lightning.conditions.Condition` (a prompt with
masked token spans); ``"a cat"`` and ``Condition("a cat")`` share one cache entry. The
null condition is the empty prompt ``""``.

Encoding follows the diffusers pipelines: pad to the tokenizer's ``model_max_length``,
truncate longer prompts (with a warning), pass the attention mask only when the text
encoder's config sets ``use_attention_mask``, and use the last hidden state, or the
hidden state of ``hidden_layer`` (SDXL and SD3 take the penultimate one, -2). A pooled
embedding is kept beside it when ``pooled`` names it: "text_embeds" (the projected
output of ``CLIPTextModelWithProjection``, SDXL and SD3) or "pooler_output"
(``CLIPTextModel``, Flux). Families with several text encoders hold one PromptEncoder per
encoder: a masked Condition's spans index the *first* tokenizer's tokens, and the others
(``span_tokenizer`` = that first tokenizer) find the same characters among their own
tokens (conditions.transfer_spans). Masked spans have their token ids replaced by the padding id (see
conditions.py). Embeddings are computed under ``torch.inference_mode`` in batches of the
unique *new* conditions; a column then costs one stack and one index_select on the
model's device. If the text encoder is being trained, call :meth:`clear_cache` after each
update (or pass ``cache=False``).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from ..conditions import Condition, as_condition, shorten, transfer_spans

__all__ = ["PromptEncoder", "POOLED_OUTPUTS"]

#: the pooled text embeddings an encoder can keep: the projected CLIP embedding
#: (CLIPTextModelWithProjection) or CLIPTextModel's pooler output
POOLED_OUTPUTS = ("text_embeds", "pooler_output")


class PromptEncoder:
    """Text embeddings (B, L, D) for a column of B prompts or Conditions (and, with
    ``pooled``, pooled embeddings (B, P): :meth:`features`)."""

    def __init__(self, tokenizer, text_encoder, *, device: torch.device | str | None = None, batch_size: int = 32,
                 cache: bool = True, max_length: int | None = None, hidden_layer: int | None = None,
                 pooled: str | None = None, span_tokenizer=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pooled is not None and pooled not in POOLED_OUTPUTS:
            raise ValueError(f"pooled must be one of {POOLED_OUTPUTS} or None, got {pooled!r}")
        self.hidden_layer, self.pooled, self.span_tokenizer = hidden_layer, pooled, span_tokenizer
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        length = int(max_length if max_length is not None else getattr(tokenizer, "model_max_length", 0) or 0)
        if not 2 <= length <= 100_000:
            raise ValueError(f"the tokenizer's model_max_length is {length}; pass max_length= (77 for CLIP)")
        self.max_length = length
        self.batch_size, self.cache = int(batch_size), bool(cache)
        self._device = None if device is None else torch.device(device)
        self._store: dict[Condition, tuple[Tensor, Tensor | None]] = {}

    @property
    def encoder_device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def device(self) -> torch.device:
        """Where embeddings are kept and returned (default: the text encoder's device)."""
        return self._device if self._device is not None else self.encoder_device

    def __len__(self) -> int:
        return len(self._store)

    def clear_cache(self) -> None:
        self._store.clear()

    def token_ids(self, conditions: Sequence[Condition]) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask), each (U, max_length), with masked spans set to the pad id."""
        prompts = [c.prompt for c in conditions]
        enc = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        ids, mask = enc["input_ids"].clone(), enc["attention_mask"]
        for c in conditions:
            n = len(self.tokenizer(c.prompt, truncation=False)["input_ids"])
            if n > self.max_length:
                warnings.warn(f"prompt {shorten(c.prompt)} has {n} tokens; the text encoder sees only the first "
                              f"{self.max_length}", stacklevel=3)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        for i, c in enumerate(conditions):
            if not c.masked:
                continue
            if pad is None:
                raise ValueError("the tokenizer has no pad token, so masked conditions cannot be encoded")
            spans = c.masked if self.span_tokenizer is None else \
                transfer_spans(c.prompt, c.masked, self.span_tokenizer, self.tokenizer)
            for start, end in spans:
                if end > self.max_length - 1:
                    raise ValueError(f"masked span {(start, end)} of {c.prompt!r} lies beyond the "
                                     f"{self.max_length}-token window of the text encoder")
                ids[i, start:end] = pad
        return ids, mask

    def embed_features(self, column: Sequence) -> tuple[Tensor, Tensor | None]:
        """(embeddings (B, L, D), pooled (B, P) or None) of a column of prompts or
        Conditions in one text-encoder call, uncached and with gradients (what fine-tuning
        trains through), on the text encoder's device."""
        conditions = [as_condition(c) for c in column]
        use_mask = bool(getattr(getattr(self.text_encoder, "config", None), "use_attention_mask", False))
        ids, mask = self.token_ids(conditions)
        dev = self.encoder_device
        out = self.text_encoder(ids.to(dev), attention_mask=mask.to(dev) if use_mask else None,
                                output_hidden_states=self.hidden_layer is not None)
        seq = out[0] if self.hidden_layer is None else out.hidden_states[self.hidden_layer]
        if self.pooled is None:
            return seq, None
        pooled = getattr(out, self.pooled)
        masked = [i for i, c in enumerate(conditions) if c.masked]
        if masked:
            pooled = pooled.clone()
            pooled[masked] = self._pooled_at_unmasked_end(conditions, masked, out.last_hidden_state)
        return seq, pooled

    def _pooled_at_unmasked_end(self, conditions: Sequence[Condition], rows: list[int], last_hidden: Tensor) -> Tensor:
        """CLIP's pooled embedding of masked conditions, read where the *unmasked* prompt ends.

        CLIP pools the final hidden state at the first end-of-text token. Its tokenizers pad
        with that token (SD's CLIP-L, Flux's CLIP), so a word masked with the pad id would
        itself become the pooled position and hide every later word from the pooled vector.
        The end is therefore located in the prompt's own ids (transformers' rule: the first
        eos id, or the largest id for configs with eos_token_id 2), and "text_embeds"
        applies the model's text projection as CLIPTextModelWithProjection does.
        """
        plain = self.tokenizer([conditions[i].prompt for i in rows], padding="max_length", max_length=self.max_length,
                               truncation=True, return_tensors="pt")["input_ids"]
        eos = self.text_encoder.config.eos_token_id
        end = plain.argmax(-1) if eos == 2 else (plain == eos).int().argmax(-1)
        hidden = last_hidden[torch.tensor(rows, device=last_hidden.device), end.to(last_hidden.device)]
        return self.text_encoder.text_projection(hidden) if self.pooled == "text_embeds" else hidden

    def embed(self, column: Sequence) -> Tensor:
        """Embeddings (B, L, D) of :meth:`embed_features` (uncached, with gradients). The
        estimators' :meth:`encode` is this under inference mode."""
        return self.embed_features(column)[0]

    @torch.inference_mode()
    def encode(self, conditions: Sequence[Condition]) -> tuple[Tensor, Tensor | None]:
        """(embeddings (U, L, D), pooled (U, P) or None) of the given conditions, uncached,
        on :attr:`device` (:meth:`embed_features` in batches of ``batch_size``)."""
        parts = [self.embed_features(conditions[s:s + self.batch_size])
                 for s in range(0, len(conditions), self.batch_size)]
        seq = torch.cat([p[0].to(self.device) for p in parts], 0)
        pooled = None if self.pooled is None else torch.cat([p[1].to(self.device) for p in parts], 0)
        return seq, pooled

    def __call__(self, column: Sequence) -> Tensor:
        """Embeddings (B, L, D) of a column (:meth:`features` without the pooled part)."""
        return self.features(column)[0]

    def features(self, column: Sequence) -> tuple[Tensor, Tensor | None]:
        """(embeddings (B, L, D), pooled (B, P) or None) of a column; each unique condition
        is encoded once, on its own (so that its embedding is the same whichever batch or
        process asks for it)."""
        if isinstance(column, (Tensor, str)):
            raise TypeError("a text column must be a list of prompts or Conditions, "
                            f"got {type(column).__name__}")
        keys = [as_condition(c) for c in column]
        if not keys:
            raise ValueError("empty condition column")
        uniq = list(dict.fromkeys(keys))
        store = self._store if self.cache else {}
        new = [k for k in uniq if k not in store]
        for k in new:  # one prompt per call: an embedding never depends on the prompts beside it
            seq, pooled = self.encode([k])
            store[k] = (seq[0], None if pooled is None else pooled[0])
        seq = torch.stack([store[k][0] for k in uniq])
        pooled = None if self.pooled is None else torch.stack([store[k][1] for k in uniq])
        if len(uniq) == len(keys):
            return seq, pooled
        pos = {k: i for i, k in enumerate(uniq)}
        index = torch.tensor([pos[k] for k in keys], dtype=torch.long).to(seq.device, non_blocking=True)
        return seq.index_select(0, index), (None if pooled is None else pooled.index_select(0, index))
