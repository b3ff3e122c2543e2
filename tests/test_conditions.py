"""Prompt edits for conditional MI (conditions.py) and their encoding (text_encoding.py).

The tiny tokenizer (tiny_models.py) has one token per listed word, spells other words
letter by letter, and splits "catamaran" into "cat" + "amaran</w>". Positions count
the start token as 0, so in "a cat on a catamaran" the tokens are
[<start>, a, cat, on, a, cat|amaran, <end>] at positions 0..7.
"""
import pytest
import torch

from infodiff_lightning.conditions import (Condition, as_condition, null_prompt, remove_word, word_alone,
                                           word_spans)
from infodiff_lightning.denoisers.text_encoding import PromptEncoder
from tiny_models import WORDS, build_text_encoder, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def ids(tok, text):
    return tok(text).input_ids


# ---------------------------------------------------------------- the offline tokenizer

def test_tokenizer_gives_each_word_its_own_single_token(tok):
    got = {w: tuple(tok(w, add_special_tokens=False).input_ids) for w in WORDS}
    assert all(len(v) == 1 for v in got.values()), got
    assert len(set(got.values())) == len(WORDS)  # distinct words, distinct ids (the vocab_file= pitfall gives 3)


def test_tokenizer_splits_catamaran_into_two_pieces(tok):
    pieces = tok.convert_ids_to_tokens(tok("catamaran", add_special_tokens=False).input_ids)
    assert pieces == ["cat", "amaran</w>"]


def test_tokenizer_round_trips_through_save_pretrained(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert ids(again, "a red cat on a catamaran") == ids(tok, "a red cat on a catamaran")


# ---------------------------------------------------------------- delete

def test_delete_removes_the_whole_word_and_keeps_longer_words_containing_it(tok):
    assert remove_word("a cat on a catamaran", "cat", tokenizer=tok) == "a on a catamaran"


def test_delete_leaves_the_other_tokens_in_order(tok):
    prompt = "a red cat on the mat"
    full = ids(tok, prompt)
    # "cat" is token 3 (after <start>, a, red): deletion removes exactly that token.
    assert ids(tok, remove_word(prompt, "cat", tokenizer=tok)) == full[:3] + full[4:]


def test_delete_matches_case_insensitively_and_ignores_surrounding_punctuation(tok):
    assert remove_word("A Cat, on the mat.", "cat", tokenizer=tok) == "A, on the mat."
    assert remove_word("a cat on the mat", "Cat!", tokenizer=tok) == "a on the mat"


def test_delete_removes_every_occurrence_by_default(tok):
    assert remove_word("a cat and a cat", "cat", tokenizer=tok) == "a and a"


def test_delete_can_remove_one_chosen_occurrence(tok):
    assert remove_word("a cat and a cat", "cat", occurrence=0, tokenizer=tok) == "a and a cat"
    assert remove_word("a cat and a cat", "cat", occurrence=-1, tokenizer=tok) == "a cat and a"


def test_missing_occurrence_index_is_an_error():
    with pytest.raises(ValueError, match="occurs 2 time"):
        remove_word("a cat and a cat", "cat", occurrence=2)


def test_deleting_the_only_word_gives_the_null_prompt():
    assert remove_word("cat", "cat") == null_prompt() == ""


def test_absent_word_is_an_error_naming_word_and_prompt():
    with pytest.raises(ValueError, match=r"'dog'.*'a cat on a mat'"):
        remove_word("a cat on a mat", "dog")


def test_a_word_found_only_inside_a_longer_word_counts_as_absent():
    with pytest.raises(ValueError, match="does not occur"):
        remove_word("a catamaran", "cat")


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="method must be one of"):
        remove_word("a cat", "cat", method="drop")


# ---------------------------------------------------------------- placeholder

def test_placeholder_replaces_the_word_in_place(tok):
    assert remove_word("a cat on a catamaran", "cat", method="placeholder", tokenizer=tok) == \
        "a something on a catamaran"
    assert remove_word("a Cat, a cat", "cat", method="placeholder", placeholder="dog") == "a dog, a dog"


# ---------------------------------------------------------------- mask and token spans

def test_word_spans_cover_every_piece_of_a_multi_piece_word(tok):
    # <start>=0 a=1 cat=2 on=3 a=4 cat=5 amaran=6 <end>=7
    assert word_spans("a cat on a catamaran", "catamaran", tok) == [(5, 7)]
    assert word_spans("a cat on a catamaran", "cat", tok) == [(2, 3)]


def test_word_spans_fall_back_to_prefix_tokenization_without_offsets(tok):
    class NoOffsets:  # a "slow" tokenizer that cannot return character offsets
        def __call__(self, text, **kw):
            if kw.get("return_offsets_mapping"):
                raise NotImplementedError
            return tok(text, **kw)

    prompt = "a red cat on a catamaran, a cat"
    assert word_spans(prompt, "cat", NoOffsets()) == word_spans(prompt, "cat", tok) == [(3, 4), (10, 11)]
    assert word_spans(prompt, "catamaran", NoOffsets()) == [(6, 8)]


def test_mask_keeps_the_text_and_records_the_word_tokens(tok):
    cond = remove_word("a cat and a cat", "cat", method="mask", tokenizer=tok)
    assert cond == Condition("a cat and a cat", ((2, 3), (5, 6)))
    one = remove_word("a cat and a cat", "cat", method="mask", tokenizer=tok, occurrence=1)
    assert one.masked == ((5, 6),)


def test_mask_needs_the_tokenizer():
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        remove_word("a cat", "cat", method="mask")


def test_conditions_are_hashable_cache_keys_equal_to_their_plain_prompt():
    assert as_condition("a cat") == Condition("a cat")
    assert len({Condition("a cat", ((2, 3),)), Condition("a cat", [(2, 3)]), Condition("a cat")}) == 2
    with pytest.raises(ValueError, match="start token"):
        Condition("a cat", ((0, 1),))  # position 0 is the start token, never a word


def test_word_alone_and_null_prompt():
    assert word_alone(" cat, ") == "cat"
    assert null_prompt() == ""
    with pytest.raises(ValueError, match="empty"):
        word_alone("!!")


# ---------------------------------------------------------------- encoding masked conditions

def test_masked_tokens_are_encoded_as_padding_and_only_later_tokens_change(tok):
    enc = PromptEncoder(tok, build_text_encoder(tok))
    cond = remove_word("a red cat on the mat", "cat", method="mask", tokenizer=tok)  # cat at position 3
    masked_ids, _ = enc.token_ids([cond])
    plain_ids, _ = enc.token_ids([Condition(cond.prompt)])
    assert masked_ids[0, 3] == tok.pad_token_id and plain_ids[0, 3] != tok.pad_token_id
    assert torch.equal(masked_ids[0, :3], plain_ids[0, :3]) and torch.equal(masked_ids[0, 4:], plain_ids[0, 4:])
    e_mask, e_plain = enc([cond, cond.prompt])
    # CLIP's text encoder is causal: positions before the masked word cannot see it.
    assert torch.allclose(e_mask[:3], e_plain[:3], atol=1e-6)
    assert (e_mask[3:] - e_plain[3:]).abs().amax(-1).min() > 1e-4


def test_prompt_encoder_encodes_each_unique_condition_once(tok):
    te = build_text_encoder(tok)
    batches = []

    def count(module, args, kwargs):  # records the batch size of every text-encoder call
        batches.append(int((args[0] if args else kwargs["input_ids"]).shape[0]))

    te.register_forward_pre_hook(count, with_kwargs=True)
    enc = PromptEncoder(tok, te)
    col = ["a cat", "", "a cat", Condition("a cat"), ""]
    first = enc(col)
    # "a cat" and "" once each, each on its own (an embedding must not depend on the prompts
    # beside it); Condition("a cat") is the same key
    assert batches == [1, 1]
    assert torch.equal(first[0], first[2]) and torch.equal(first[0], first[3])
    enc(["", "a cat"])
    assert batches == [1, 1]  # all cached
    enc(["a dog", "a cat"])
    assert batches == [1, 1, 1]  # only the new prompt is encoded


def test_text_columns_must_be_lists_of_prompts(tok):
    enc = PromptEncoder(tok, build_text_encoder(tok))
    with pytest.raises(TypeError, match="list of prompts"):
        enc(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="str or a Condition"):
        enc([1, 2])


class CountingTokenizer:
    """The tiny tokenizer, counting how often it tokenizes a text."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)


@pytest.mark.parametrize("method", ["delete", "mask"])
def test_removing_a_word_tokenizes_the_caption_a_fixed_number_of_times_however_often_it_occurs(tok, method):
    # one tokenization per occurrence made removal quadratic in the caption's length
    # (a 10,000-word caption took 55 s); with offsets found by binary search it is linear
    counts = {}
    for repeats in (2, 200):
        counting = CountingTokenizer(tok)
        caption = " ".join(["a red circle and a blue square"] * repeats)
        out = remove_word(caption, "red", method=method, tokenizer=counting)
        assert (str(out).count("red") if method == "delete" else len(out.masked)) == (0 if method == "delete"
                                                                                    else repeats)
        counts[repeats] = counting.calls
    assert counts[200] == counts[2] <= 3


def test_an_error_about_a_long_prompt_quotes_it_shortened():
    caption = " ".join(["a blue square"] * 3000)
    with pytest.raises(ValueError) as err:
        remove_word(caption, "red")
    assert len(str(err.value)) < 200 and "characters)" in str(err.value)
