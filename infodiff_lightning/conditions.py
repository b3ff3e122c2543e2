"""Prompt edits for conditional MI and word-level analysis.

Conditional MI of a word w given the rest of the prompt c compares the denoiser under
c and under the full prompt (w, c). How c is formed is a named option of
:func:`remove_word`:

- ``"delete"``: the word is cut out of the text, whole-word and token-aware: removing
  "cat" from "a cat on a catamaran" gives "a on a catamaran" (never a substring
  replace), and the result tokenizes to the original tokens minus the word's tokens.
  The other tokens move one place left.
- ``"placeholder"``: the word is replaced by a placeholder word or token (default
  ``"something"``; pass the token your model was trained with for word dropout).
- ``"mask"``: the text is unchanged; the result is a :class:`Condition` whose word
  tokens are *masked at encode time*: their token ids are replaced by the tokenizer's
  padding id before the text encoder runs, i.e. their input token embeddings become
  the padding embedding, while every other token keeps its position. (Chosen over
  zeroing the encoder *output* at those positions, which would leave the word visible
  to the later tokens through the causal text encoder.)

Words match case-insensitively and ignore surrounding punctuation ("Cat," matches
"cat"); a word is a maximal run of letters, digits, underscores and hyphens, so "cat"
never matches inside "catamaran" or "cat-like". A word occurring several times is
removed everywhere by default (``occurrence="all"``) or at one chosen occurrence
(``occurrence=i``, 0-based, negative from the end). A word absent from the prompt is
an error. Every edit is deterministic and hashable, so text embeddings can be cached.

Token positions (:func:`word_spans`, :attr:`Condition.masked`) index the text
encoder's input sequence, where position 0 is the start token.
"""
from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

__all__ = ["Condition", "as_condition", "word_spans", "remove_word", "word_alone", "null_prompt", "drop_words",
           "REMOVAL_METHODS", "shorten", "token_window",
           "word_in_window", "transfer_spans", "token_offsets"]

REMOVAL_METHODS = ("delete", "placeholder", "mask")
DEFAULT_PLACEHOLDER = "something"
_WORD_CHAR = r"[\w-]"  # letters, digits, underscore, hyphen: what a whole word is made of
_CLOSING = set(",.;:!?)]}")
_OPENING = set("([{")


@dataclass(frozen=True)
class Condition:
    """A prompt, optionally with masked token spans; hashable, so it keys caches.

    ``masked``: half-open spans (start, end) of token positions in the encoder input
    (position 0 is the start token) whose token ids are replaced by the padding id when
    the prompt is encoded. ``Condition(p)`` and the plain string ``p`` encode the same.
    """

    prompt: str
    masked: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Condition.prompt must be a str, got {type(self.prompt).__name__}")
        spans = []
        for span in self.masked:
            start, end = (int(v) for v in span)
            if not 1 <= start < end:
                raise ValueError(f"masked span {span} must satisfy 1 <= start < end (position 0 is the start token)")
            spans.append((start, end))
        object.__setattr__(self, "masked", tuple(sorted(set(spans))))

    def __str__(self) -> str:
        if not self.masked:
            return self.prompt
        return f"{self.prompt} [tokens {', '.join(f'{s}:{e}' for s, e in self.masked)} masked]"


PromptLike = Union[str, Condition]


def as_condition(entry: Any) -> Condition:
    """A str or Condition as a Condition (the key text encoders cache by)."""
    if isinstance(entry, Condition):
        return entry
    if isinstance(entry, str):
        return Condition(entry)
    raise TypeError(f"a prompt condition must be a str or a Condition, got {type(entry).__name__} ({entry!r}); "
                    "class-conditional models take a tensor of class ids instead")


def shorten(text: str, limit: int = 80) -> str:
    """``repr(text)`` cut to about ``limit`` characters, for messages about long prompts."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit - 20] + " ... " + text[-15:]) + f" ({len(text)} characters)"


def null_prompt() -> str:
    """The null condition of text-conditioned models: the empty prompt."""
    return ""


def word_alone(word: str) -> str:
    """The prompt made of ``word`` alone (for i(x; w) without context)."""
    return _clean_word(word)


def _clean_word(word: str) -> str:
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    w = word.strip(string.whitespace + string.punctuation)
    if not w:
        raise ValueError(f"word {word!r} is empty once surrounding whitespace and punctuation are stripped")
    return w


def _char_spans(prompt: str, word: str, occurrence: str | int = "all") -> list[tuple[int, int]]:
    """Character spans of the whole-word, case-insensitive occurrences of ``word``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    w = _clean_word(word)
    body = r"\s+".join(re.escape(part) for part in w.split())
    pattern = re.compile(rf"(?<!{_WORD_CHAR}){body}(?!{_WORD_CHAR})", re.IGNORECASE)
    spans = [m.span() for m in pattern.finditer(prompt)]
    if not spans:
        raise ValueError(f"word {w!r} does not occur as a whole word in prompt {shorten(prompt)}")
    if occurrence == "all":
        return spans
    if isinstance(occurrence, bool) or not isinstance(occurrence, int):
        raise ValueError(f"occurrence must be 'all' or an int index, got {occurrence!r}")
    if not -len(spans) <= occurrence < len(spans):
        raise ValueError(f"word {w!r} occurs {len(spans)} time(s) in prompt {shorten(prompt)}; occurrence {occurrence} "
                         "does not exist")
    return [spans[occurrence]]


def _encode(tokenizer, text: str, specials: bool, offsets: bool = False) -> dict:
    kw = {"add_special_tokens": specials, "truncation": False}
    if offsets:
        kw.update(return_offsets_mapping=True, return_special_tokens_mask=True)
    return tokenizer(text, **kw)


def token_offsets(tokenizer, prompt: str) -> list[tuple[int, int, int]] | None:
    """(position, char start, char end) of each non-special, non-empty token of the
    encoder input, from one tokenization with offsets (fast tokenizers); None when the
    tokenizer cannot give offsets."""
    try:
        enc = _encode(tokenizer, prompt, True, offsets=True)
        offsets, special = enc["offset_mapping"], enc["special_tokens_mask"]
    except (NotImplementedError, KeyError, TypeError, ValueError):
        return None
    out = []
    for i, ((s, e), sp) in enumerate(zip(offsets, special)):
        while s < e and prompt[s].isspace():  # sentencepiece (T5) offsets may include the space before a word
            s += 1
        if not sp and e > s:
            out.append((i, s, e))
    return out


def _token_span_offsets(tokens: list[tuple[int, int, int]], ends: list[int], prompt: str, cs: int, ce: int,
                        word: str) -> tuple[int, int]:
    """Token span of characters [cs, ce) from the sorted token offsets (binary search, so
    a prompt with many occurrences of the word costs one tokenization, not one each)."""
    lo = bisect.bisect_right(ends, cs)  # first token ending after cs
    hi = lo
    while hi < len(tokens) and tokens[hi][1] < ce:
        hi += 1
    found = tokens[lo:hi]
    if not found:
        raise ValueError(f"word {word!r} in prompt {shorten(prompt)} maps to no tokens")
    pos = [t[0] for t in found]
    if any(s < cs or e > ce for _, s, e in found) or pos != list(range(pos[0], pos[-1] + 1)):
        raise ValueError(f"word {word!r} in prompt {shorten(prompt)} is not aligned with token boundaries "
                         f"(tokens {[(s, e) for _, s, e in found]} vs characters {(cs, ce)}); "
                         "choose a whole word the tokenizer splits off on its own")
    return pos[0], pos[-1] + 1


def _token_span_prefix(tokenizer, prompt: str, cs: int, ce: int, word: str):
    """Token span by tokenizing the text before, of and after the word (any tokenizer)."""
    full = list(_encode(tokenizer, prompt, True)["input_ids"])
    bare = list(_encode(tokenizer, prompt, False)["input_ids"])
    before = list(_encode(tokenizer, prompt[:cs], False)["input_ids"])
    inner = list(_encode(tokenizer, prompt[cs:ce], False)["input_ids"])
    after = list(_encode(tokenizer, prompt[ce:], False)["input_ids"])
    if before + inner + after != bare or not inner:
        raise ValueError(f"word {word!r} in prompt {shorten(prompt)} is not aligned with token boundaries; "
                         "choose a whole word the tokenizer splits off on its own")
    lead = next((i for i in range(len(full)) if full[i:i + len(bare)] == bare), 0)
    return lead + len(before), lead + len(before) + len(inner)


def word_spans(prompt: str, word: str, tokenizer, occurrence: str | int = "all") -> list[tuple[int, int]]:
    """Half-open token spans (start, end) of each whole-word occurrence of ``word``.

    Positions index the encoder input with special tokens (0 is the start token). A
    word split into several BPE pieces gives one span covering all of them. Raises a
    ValueError when the word is absent or does not fall on token boundaries.
    """
    chars = _char_spans(prompt, word, occurrence)
    tokens = token_offsets(tokenizer, prompt)
    if tokens is None:  # a slow tokenizer: one tokenization per occurrence
        return [_token_span_prefix(tokenizer, prompt, cs, ce, word) for cs, ce in chars]
    ends = [e for _, _, e in tokens]
    return [_token_span_offsets(tokens, ends, prompt, cs, ce, word) for cs, ce in chars]


def transfer_spans(prompt: str, spans: Sequence[tuple[int, int]], from_tokenizer, to_tokenizer) -> list[tuple[int, int]]:
    """The token spans of ``to_tokenizer`` covering the characters that ``spans`` (token
    positions of ``from_tokenizer``'s encoder input for ``prompt``) cover: how a word
    masked for a family's first tokenizer is masked for its second and third (SDXL's two
    CLIP tokenizers, SD3's and Flux's T5). Needs fast tokenizers (character offsets)."""
    if from_tokenizer is to_tokenizer:
        return [tuple(s) for s in spans]
    source, target = token_offsets(from_tokenizer, prompt), token_offsets(to_tokenizer, prompt)
    if source is None or target is None:
        raise ValueError("masking a word for several text encoders needs fast tokenizers (character offsets); "
                         "use method='delete' or 'placeholder' with this model")
    chars = {pos: (s, e) for pos, s, e in source}
    ends = [e for _, _, e in target]
    out = []
    for start, end in spans:
        covered = [chars[p] for p in range(start, end) if p in chars]
        if not covered:
            raise ValueError(f"masked span {(start, end)} of {shorten(prompt)} covers no text")
        cs, ce = covered[0][0], covered[-1][1]
        out.append(_token_span_offsets(target, ends, prompt, cs, ce, prompt[cs:ce]))
    return out


def token_window(tokenizer) -> int | None:
    """The number of token positions the text encoder sees (with the start and end tokens),
    or None when the tokenizer states no limit."""
    n = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return n if 2 <= n <= 100_000 else None


def word_in_window(prompt: str, word: str, tokenizer) -> bool:
    """Whether ``word`` occurs in ``prompt`` with at least one occurrence inside the text
    encoder's window (the tokens after it are cut off: removing a word that lies beyond
    them changes nothing the model sees, so its information would read as exactly 0)."""
    try:
        spans = word_spans(prompt, word, tokenizer)
    except ValueError:
        return False
    window = token_window(tokenizer)
    return window is None or any(end <= window - 1 for _, end in spans)  # position window-1: the end token


def _delete_spans(prompt: str, spans: Sequence[tuple[int, int]]) -> str:
    text = prompt
    for cs, ce in sorted(spans, reverse=True):
        left, right = text[:cs].rstrip(), text[ce:].lstrip()
        if not left or not right or right[0] in _CLOSING or left[-1] in _OPENING:
            text = left + right
        else:
            text = left + " " + right
    return text.strip()


def remove_word(prompt: str, word: str, method: str = "delete", *, tokenizer=None,
                placeholder: str = DEFAULT_PLACEHOLDER, occurrence: str | int = "all") -> PromptLike:
    """The prompt without ``word``: the context c of i(x; w | c).

    ``method``: "delete" (returns the edited str), "placeholder" (str with the word
    replaced by ``placeholder``) or "mask" (returns a :class:`Condition` with the word's
    tokens masked; needs ``tokenizer``). With a ``tokenizer``, "delete" and
    "placeholder" also check that the word falls on token boundaries, and "delete"
    checks that the result tokenizes to the original tokens minus the word's.
    ``occurrence``: "all" or the index of one occurrence.
    """
    if method not in REMOVAL_METHODS:
        raise ValueError(f"method must be one of {REMOVAL_METHODS}, got {method!r}")
    chars = _char_spans(prompt, word, occurrence)
    if method == "mask":
        if tokenizer is None:
            raise ValueError("remove_word(method='mask') needs the model's tokenizer to find the word's tokens")
        return Condition(prompt, tuple(word_spans(prompt, word, tokenizer, occurrence)))
    if method == "placeholder":
        if not isinstance(placeholder, str) or not placeholder.strip():
            raise ValueError(f"placeholder must be a non-empty string, got {placeholder!r}")
        if tokenizer is not None:
            word_spans(prompt, word, tokenizer, occurrence)
        text = prompt
        for cs, ce in sorted(chars, reverse=True):
            text = text[:cs] + placeholder + text[ce:]
        return text
    text = _delete_spans(prompt, chars)
    if tokenizer is not None:
        tokens = word_spans(prompt, word, tokenizer, occurrence)
        full = list(_encode(tokenizer, prompt, True)["input_ids"])
        drop = {i for s, e in tokens for i in range(s, e)}
        expect = [t for i, t in enumerate(full) if i not in drop]
        got = list(_encode(tokenizer, text, True)["input_ids"])
        if got != expect:
            raise ValueError(f"deleting {word!r} from {shorten(prompt)} gives {shorten(text)}, whose tokens are not the original "
                             "tokens minus the word's; use method='mask' or 'placeholder' for this prompt")
    return text


def drop_words(caption: str, p: float, generator: torch.Generator) -> str:
    """Delete each word of ``caption`` with probability p (word dropout for fine-tuning),
    by the same whole-word deletion the CMI estimator uses (:func:`remove_word`, "delete"),
    so the prompts the estimators build by removing words stay in distribution."""
    words = caption.split()
    drop = [i for i in range(len(words)) if float(torch.rand((), generator=generator)) < p]
    text = caption
    for i in reversed(drop):
        key = words[i].strip(".,;:!?\"'()").lower()
        if not key:
            continue
        occurrence = sum(1 for w in words[:i] if w.strip(".,;:!?\"'()").lower() == key)
        try:
            text = remove_word(text, key, method="delete", occurrence=occurrence)
        except ValueError:  # a word the estimator could not delete either: keep it
            pass
    return text
