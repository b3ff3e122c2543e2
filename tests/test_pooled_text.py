"""Pooled text embeddings (SDXL, SD3, Flux) under word masking.

CLIP pools its final hidden state at the first end-of-text token, and CLIP tokenizers pad
with that same token (the tiny tokenizer too: pad id = eos id = 1). Masking a word with
the pad id must not move the pooled position onto the word: the pooled vector is read
where the prompt itself ends.
"""
import torch

from infodiff_lightning.conditions import remove_word
from infodiff_lightning.denoisers.text_encoding import PromptEncoder
from tiny_models import MAX_TOKENS, build_text_encoder, build_tokenizer


def encoders():
    tok = build_tokenizer()
    enc = build_text_encoder(tok)
    return tok, enc, PromptEncoder(tok, enc, pooled="pooler_output")


def test_the_tiny_tokenizer_pads_with_the_end_token_as_clip_does():
    tok = build_tokenizer()
    assert tok.pad_token_id == tok.eos_token_id  # the case where masking could move the pooled position


def test_an_unmasked_prompt_keeps_the_models_own_pooled_output():
    tok, enc, prompts = encoders()
    ids = tok(["a red cat"], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        want = enc(ids).pooler_output
    torch.testing.assert_close(prompts.features(["a red cat"])[1], want, rtol=0, atol=0)


def test_a_masked_word_is_pooled_at_the_end_of_the_prompt_not_at_the_word():
    # "a red cat": tokens <start> a red cat <end>; masking "red" puts the pad (= end) id at
    # position 2, where the model's own pooling would now read; the end of the prompt is 4
    tok, enc, prompts = encoders()
    cond = remove_word("a red cat", "red", method="mask", tokenizer=tok)
    ids = tok(["a red cat"], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids.clone()
    ids[0, 2] = tok.pad_token_id
    with torch.no_grad():
        out = enc(ids)
    seq, pooled = prompts.features([cond])
    torch.testing.assert_close(seq, out.last_hidden_state)  # the word's input is still the pad embedding
    torch.testing.assert_close(pooled[0], out.last_hidden_state[0, 4])
    assert not torch.allclose(pooled[0], out.pooler_output[0])  # the model alone would pool at the word
