"""COCO-Order and Flickr30k-Order test cases, built from a caption as ARO builds them
(Yuksekgonul et al., ICLR 2023; github.com/mertyg/vision-language-models-are-bows,
``dataset_zoo/aro_datasets.py`` COCO_Order / Flickr30k_Order, ``dataset_zoo/perturbations.py``
TextShuffler, ``dataset_zoo/retrieval.py`` pre_caption). Re-implemented from that
description; no code of theirs is used.

A test case is one caption of one image: the candidates are the caption normalised by
:func:`pre_caption`, then each perturbation of the *raw* caption, normalised the same way,
in ARO's order:

1. ``shuffle_nouns_and_adj``: the nouns (Penn tags NN, NNS, NNP, NNPS) permuted among
   their own positions, and the adjectives (JJ, JJR, JJS) among theirs;
2. ``shuffle_allbut_nouns_and_adj``: every other token permuted among its positions;
3. ``shuffle_within_trigrams``: the tokens cut into consecutive groups of three (the last
   may be shorter), the order within each group permuted;
4. ``shuffle_trigrams``: the same groups, the order of the groups permuted.

1 and 2 need a part-of-speech tagger; ARO uses spaCy's ``en_core_web_sm``, which is not a
PyPI package and no tagger that ships its model inside a PyPI wheel is at hand, so they
are produced only when a tagger is given (:func:`spacy_tagger`: an installed spaCy pipeline,
loaded, never downloaded). 3 and 4 tokenise as NLTK's ``word_tokenize`` does (Penn Treebank
conventions), which :func:`treebank_tokens` approximates without NLTK's sentence model:
punctuation and clitics ('s, n't, ...) become tokens of their own, a final period too.

Randomness: ARO draws from the global ``random`` / ``numpy`` state; here each test case
has its own generator (:func:`case_rng`), keyed by the seed, the file and the case's
position, so a case's perturbations do not depend on which other cases are read (``limit``,
processes). A perturbation may equal the caption (a one-word caption, a shuffle that
drew the identity): ARO keeps it, and its argmax gives the tie to the true caption, which
comes first; the ranking job's hit rule does the same (analyses/statistics.correct with
``rivals``), and the job reports how many there were.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

__all__ = ["pre_caption", "treebank_tokens", "trigrams", "shuffle_within_trigrams", "shuffle_trigrams",
           "shuffle_nouns_and_adj", "shuffle_allbut_nouns_and_adj", "PERTURBATIONS", "POS_PERTURBATIONS",
           "order_candidates", "case_rng", "spacy_tagger", "MAX_WORDS", "Tagger"]

#: ARO's order datasets truncate every candidate to 30 words (COCO_Order(max_words=30)).
MAX_WORDS = 30
#: ARO's four perturbations, in the order of its candidate lists.
PERTURBATIONS = ("shuffle_nouns_and_adj", "shuffle_allbut_nouns_and_adj", "shuffle_within_trigrams",
                 "shuffle_trigrams")
#: The two that need a part-of-speech tagger.
POS_PERTURBATIONS = PERTURBATIONS[:2]
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})

#: A tagger: text -> (tokens, Penn Treebank tags), one tag per token.
Tagger = Callable[[str], tuple[list[str], list[str]]]


def pre_caption(caption: str, max_words: int = MAX_WORDS) -> str:
    """ARO's caption normalisation (retrieval.py ``pre_caption``): lower case; each of
    . ! " ( ) * # : ; ~ replaced by a space; runs of two or more whitespace characters made
    one space; a trailing newline and surrounding spaces dropped; at most ``max_words``
    space-separated words kept. Commas, apostrophes and hyphens stay."""
    text = re.sub(r"[.!\"()*#:;~]", " ", caption.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


# Penn Treebank tokenisation (the conventions NLTK's word_tokenize follows): punctuation
# split from words, except a comma or period between digits; clitics split off the word.
_PUNCT = re.compile(r"([;@#$%&?!\[\](){}<>\"]|\.\.\.|--|(?<!\d),|,(?!\d)|:(?!\d))")
_FINAL_PERIOD = re.compile(r"([^.])\.([\]\)}>\"']*)\s*$")
_CLITICS = re.compile(r"(?i)(\w)('s|'m|'d|'re|'ve|'ll|n't)\b")


def treebank_tokens(text: str) -> list[str]:
    """The words of ``text`` under Penn Treebank conventions (see the module doc)."""
    text = _FINAL_PERIOD.sub(r"\1 . \2", text)
    text = _PUNCT.sub(r" \1 ", text)
    text = _CLITICS.sub(r"\1 \2", text)
    return text.split()


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
    """Consecutive groups of three tokens, the last one shorter when the count is not a multiple of 3."""
    return [list(tokens[i:i + 3]) for i in range(0, len(tokens), 3)]


def shuffle_within_trigrams(caption: str, rng: random.Random) -> str:
    """Perturbation 3 (module doc): each trigram's tokens permuted in place."""
    groups = trigrams(treebank_tokens(caption))
    for g in groups:
        rng.shuffle(g)
    return " ".join(t for g in groups for t in g)


def shuffle_trigrams(caption: str, rng: random.Random) -> str:
    """Perturbation 4 (module doc): the trigrams permuted as units."""
    groups = trigrams(treebank_tokens(caption))
    rng.shuffle(groups)
    return " ".join(t for g in groups for t in g)


def _permute_positions(tokens: list[str], positions: list[int], rng: random.Random) -> None:
    values = [tokens[i] for i in positions]
    rng.shuffle(values)
    for i, v in zip(positions, values):
        tokens[i] = v


def shuffle_nouns_and_adj(caption: str, rng: random.Random, tagger: Tagger) -> str:
    """Perturbation 1 (module doc): nouns permuted among noun positions, then adjectives among adjective positions."""
    tokens, tags = tagger(caption)
    tokens = list(tokens)
    _permute_positions(tokens, [i for i, t in enumerate(tags) if t in NOUN_TAGS], rng)
    _permute_positions(tokens, [i for i, t in enumerate(tags) if t in ADJECTIVE_TAGS], rng)
    return " ".join(tokens)


def shuffle_allbut_nouns_and_adj(caption: str, rng: random.Random, tagger: Tagger) -> str:
    """Perturbation 2 (module doc): every token that is neither noun nor adjective permuted among their positions."""
    tokens, tags = tagger(caption)
    tokens = list(tokens)
    _permute_positions(tokens, [i for i, t in enumerate(tags) if t not in NOUN_TAGS | ADJECTIVE_TAGS], rng)
    return " ".join(tokens)


def case_rng(seed: int, source: str, row: int, caption: int) -> random.Random:
    """The generator of one test case: keyed by text (``random`` hashes a str seed with
    SHA-512, the same in every process), so no other case changes its draws."""
    return random.Random(f"{seed}/{source}/{row}/{caption}")


_SHUFFLES = {"shuffle_nouns_and_adj": shuffle_nouns_and_adj, "shuffle_allbut_nouns_and_adj": shuffle_allbut_nouns_and_adj,
             "shuffle_within_trigrams": shuffle_within_trigrams, "shuffle_trigrams": shuffle_trigrams}


def order_candidates(caption: str, rng: random.Random, tagger: Tagger | None = None,
                     max_words: int = MAX_WORDS) -> tuple[list[str], tuple[str, ...]]:
    """(candidates, perturbation names): the normalised caption first, then each
    perturbation of the raw caption, normalised, in ARO's order; without ``tagger`` only
    the two that need none. Candidates may repeat (module doc)."""
    names = PERTURBATIONS if tagger is not None else PERTURBATIONS[2:]
    out = [pre_caption(caption, max_words)]
    for name in names:
        shuffle = _SHUFFLES[name]
        text = shuffle(caption, rng, tagger) if name in POS_PERTURBATIONS else shuffle(caption, rng)
        out.append(pre_caption(text, max_words))
    return out, names


def spacy_tagger(pipeline: str) -> Tagger:
    """A tagger from an installed spaCy pipeline package (e.g. ``en_core_web_sm``, the one
    ARO uses): spaCy's tokens and their fine-grained (Penn) tags. Nothing is downloaded: a
    pipeline that is not installed is a one-line error."""
    try:
        import spacy  # optional: only for the two POS perturbations
    except ImportError:
        raise ValueError(f"pos_tagger {pipeline!r}: spaCy is not installed (pip install spacy and the pipeline "
                         "package; nothing is downloaded at run time)") from None
    try:
        nlp = spacy.load(pipeline)
    except OSError:
        raise ValueError(f"pos_tagger {pipeline!r}: no such spaCy pipeline is installed (nothing is downloaded "
                         "at run time)") from None

    def tag(text: str) -> tuple[list[str], list[str]]:
        doc = nlp(text)
        return [t.text for t in doc], [t.tag_ for t in doc]

    return tag
