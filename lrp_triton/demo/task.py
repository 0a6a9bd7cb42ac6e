"""The demo model's task: key-value retrieval, where the source of every answer is known.

A prompt lists `n` pairs `key=value` (distinct lowercase keys, digit values), then asks for one
key: `a=7 k=3 x=9 ?k`. The answer is the value that followed that key (`3`). The tokenizer is
character level, so the character index of a prompt is its token index: `Example.value_index` is
the token the answer came from and `Example.key_index` the key of the same pair.

Training text continues with further queries, `a=7 k=3 x=9 ?k3 ?x9 ?a7`, so that the model goes
on asking and answering when it generates several tokens. The query ends with the key itself, so
a two-layer model can answer with an induction head: layer 1 copies each key into the value two
tokens later, layer 2 matches the final key against those copies and reads out the value.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

KEYS = string.ascii_lowercase
VALUES = string.digits
SPECIAL = ["<unk>", "<pad>"]
VOCAB = SPECIAL + [" ", "=", "?"] + list(VALUES) + list(KEYS)
MIN_PAIRS, MAX_PAIRS = 2, 8
MAX_QUERIES = 4


@dataclass(frozen=True)
class Example:
    """One retrieval prompt with its answer and the token positions the answer came from."""

    prompt: str
    answer: str
    key: str
    key_index: int
    value_index: int


def pairs_text(rng: random.Random, n_pairs: int) -> tuple[str, dict[str, int]]:
    """`n_pairs` pairs `k=v` joined by spaces, and each key's character index."""
    keys = rng.sample(KEYS, n_pairs)
    text, where = "", {}
    for key in keys:
        if text:
            text += " "
        where[key] = len(text)
        text += f"{key}={rng.choice(VALUES)}"
    return text, where


def sample(rng: random.Random, n_pairs: int | None = None) -> Example:
    """A fresh prompt `pairs ?key` (n_pairs drawn from [MIN_PAIRS, MAX_PAIRS] when not given)."""
    n_pairs = rng.randint(MIN_PAIRS, MAX_PAIRS) if n_pairs is None else n_pairs
    text, where = pairs_text(rng, n_pairs)
    key = rng.choice(sorted(where))
    key_index = where[key]
    value_index = key_index + 2
    return Example(prompt=f"{text} ?{key}", answer=text[value_index], key=key, key_index=key_index,
                   value_index=value_index)


def training_text(rng: random.Random, max_pairs: int = MAX_PAIRS) -> tuple[str, int]:
    """A training sequence `pairs ?kv ?kv ...` with up to `max_pairs` pairs, and the index of its
    first query key.

    Everything after the first query key is trained on (answers, and the format of further queries).
    """
    n_pairs = rng.randint(MIN_PAIRS, max_pairs)
    text, where = pairs_text(rng, n_pairs)
    first = None
    for _ in range(rng.randint(1, MAX_QUERIES)):
        key = rng.choice(sorted(where))
        text += f" ?{key}"
        first = len(text) - 1 if first is None else first
        text += text[where[key] + 2]
    return text, first


def max_length() -> int:
    """The longest training sequence, in tokens (= characters)."""
    return 4 * MAX_PAIRS - 1 + 4 * MAX_QUERIES
