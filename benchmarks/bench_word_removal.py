"""Removing a word from a long caption: time against caption length (linear, not quadratic).

Each caption repeats "a red circle and a blue square" and the word removed is "red", so
the number of occurrences grows with the length, which is what made removal quadratic
when every occurrence tokenized the whole caption again. Prints seconds per removal for
each length and method, and the ratio of each length's time to the previous length's
(about 2 for linear time when the length doubles, about 4 for quadratic).

    python benchmarks/bench_word_removal.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from timing import best  # noqa: E402
from tiny_models import build_tokenizer  # noqa: E402

from infodiff_lightning.conditions import remove_word  # noqa: E402

LENGTHS = (2500, 5000, 10000, 20000)  # words


def main() -> None:
    tok = build_tokenizer()
    phrase = "a red circle and a blue square"
    print("| words | method | s per removal | vs half the length |")
    print("|---:|---|---:|---:|")
    for method in ("delete", "mask"):
        previous = None
        for n in LENGTHS:
            caption = " ".join([phrase] * (n // len(phrase.split())))
            t = best(lambda: remove_word(caption, "red", method=method, tokenizer=tok), repeats=3)
            ratio = f"{t / previous:.2f}" if previous else ""
            print(f"| {n} | {method} | {t:.3f} | {ratio} |")
            previous = t


if __name__ == "__main__":
    main()
