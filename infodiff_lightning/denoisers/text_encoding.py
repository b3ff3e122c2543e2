"""Prompt columns -> text embeddings, computed once per unique condition and cached.

Shared by every text-conditioned adapter (latent and pixel space). A column entry is a
prompt string or a :class:`~infodiff_lightning.conditions.Condition` (a prompt with
masked token spans); ``"a cat"`` and ``Condition("a cat")`` share one cache entry. The
null condition is the empty prompt ``""``.

Encoding follows the diffusers Stable Diffusion pipelines: pad to the tokenizer's
``model_max_length``, truncate longer prompts (with a warning), pass the attention mask
only when the text encoder's config sets ``use_attention_mask``, and use the last
hidden state. Masked spans have their token ids replaced by the padding id (see
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

from ..conditions import Condition, as_condition, shorten

__all__ = ["PromptEncoder"]


class PromptEncoder:
    """Text embeddings (B, L, D) for a column of B prompts or Conditions."""

    def __init__(self, tokenizer, text_encoder, *, device: torch.device | str | None = None, batch_size: int = 32,
                 cache: bool = True, max_length: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        length = int(max_length if max_length is not None else getattr(tokenizer, "model_max_length", 0) or 0)
        if not 2 <= length <= 100_000:
            raise ValueError(f"the tokenizer's model_max_length is {length}; pass max_length= (77 for CLIP)")
        self.max_length = length
        self.batch_size, self.cache = int(batch_size), bool(cache)
        self._device = None if device is None else torch.device(device)
        self._store: dict[Condition, Tensor] = {}

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
            for start, end in c.masked:
                if end > self.max_length - 1:
                    raise ValueError(f"masked span {(start, end)} of {c.prompt!r} lies beyond the "
                                     f"{self.max_length}-token window of the text encoder")
                ids[i, start:end] = pad
        return ids, mask

    def embed(self, column: Sequence) -> Tensor:
        """Embeddings (B, L, D) of a column of prompts or Conditions in one text-encoder
        call, uncached and with gradients (what fine-tuning trains through), on the text
        encoder's device. The estimators' :meth:`encode` is this under inference mode."""
        conditions = [as_condition(c) for c in column]
        use_mask = bool(getattr(getattr(self.text_encoder, "config", None), "use_attention_mask", False))
        ids, mask = self.token_ids(conditions)
        dev = self.encoder_device
        return self.text_encoder(ids.to(dev), attention_mask=mask.to(dev) if use_mask else None)[0]

    @torch.inference_mode()
    def encode(self, conditions: Sequence[Condition]) -> Tensor:
        """Embeddings (U, L, D) of the given conditions, uncached, on :attr:`device`
        (:meth:`embed` in batches of ``batch_size``)."""
        out = [self.embed(conditions[s:s + self.batch_size]).to(self.device)
               for s in range(0, len(conditions), self.batch_size)]
        return torch.cat(out, 0)

    def __call__(self, column: Sequence) -> Tensor:
        """Embeddings (B, L, D) of a column; each unique condition is encoded once, on its
        own (so that its embedding is the same whichever batch or process asks for it)."""
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
            store[k] = self.encode([k])[0]
        table = torch.stack([store[k] for k in uniq])
        if len(uniq) == len(keys):
            return table
        pos = {k: i for i, k in enumerate(uniq)}
        index = torch.tensor([pos[k] for k in keys], dtype=torch.long)
        return table.index_select(0, index.to(table.device, non_blocking=True))
