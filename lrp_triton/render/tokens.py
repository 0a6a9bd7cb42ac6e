"""Token strings as readable text: byte-level BPE, sentencepiece and WordPiece markers cleaned.

Tokenizers store tokens in their own alphabets: GPT-2-style byte-level BPE maps every byte to a
printable character (space -> `Ġ`, newline -> `Ċ`), sentencepiece marks a word start with `▁`
and writes unknown bytes as `<0x0A>`, WordPiece marks a word continuation with `##`. The
vocabulary's style is recognised from the tokens themselves, and every token is turned back into
the text it stands for, so that joining the cleaned tokens gives the prompt back.
"""

from __future__ import annotations

import functools
import re

_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's `bytes_to_unicode`: printable character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def vocabulary_style(tokens: list[str]) -> str:
    """"byte-level", "sentencepiece", "wordpiece" or "plain", judged from the tokens."""
    decoder = _byte_decoder()
    if any(("Ġ" in t or "Ċ" in t or "ĉ" in t) for t in tokens) and all(c in decoder for t in tokens for c in t):
        return "byte-level"
    if any(t.startswith("▁") for t in tokens):
        return "sentencepiece"
    if any(t.startswith("##") and len(t) > 2 for t in tokens):
        return "wordpiece"
    return "plain"


def _byte_level(token: str) -> str:
    decoder = _byte_decoder()
    return bytes(decoder[c] for c in token).decode("utf-8", errors="replace")


def _sentencepiece(token: str) -> str:
    match = _SENTENCEPIECE_BYTE.fullmatch(token)
    if match:
        byte = int(match.group(1), 16)
        return chr(byte) if byte < 0x80 else "\ufffd"
    return token.replace("▁", " ")


def clean_tokens(tokens: list[str], style: str | None = None) -> list[str]:
    """The text each token stands for (see the module docstring); other tokens unchanged.

    `style` (from `vocabulary_style`) defaults to the one these tokens show.
    """
    tokens = [str(t) for t in tokens]
    style = vocabulary_style(tokens) if style is None else style
    if style == "byte-level":
        decoder = _byte_decoder()
        return [_byte_level(t) if all(c in decoder for c in t) else t for t in tokens]
    if style == "sentencepiece":
        return [_sentencepiece(t) for t in tokens]
    if style == "wordpiece":
        return [t[2:] if t.startswith("##") and len(t) > 2 else (t if i == 0 else " " + t)
                for i, t in enumerate(tokens)]
    return tokens
