"""Token strings as readable text: byte-level BPE, sentencepiece and WordPiece markers cleaned.

Tokenizers store tokens in their own alphabets: GPT-2-style byte-level BPE maps every byte to a
printable character (space -> `Ġ`, newline -> `Ċ`), sentencepiece marks a word start with `▁`
and writes unknown bytes as `<0x0A>`, WordPiece marks a word continuation with `##` and drops the
spaces between words. The vocabulary's style is read from the tokenizer when it is known
(`tokenizer_style`; `attribute(..., tokenizer=)` and the CLI record it) and otherwise recognised
from the tokens themselves, and every token is turned back into the text it stands for, so that
joining the cleaned tokens gives the prompt back (for WordPiece, whose tokenizer drops the spaces:
words separated by one space, no space before closing punctuation).
"""

from __future__ import annotations

import functools
import json
import re

_SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BRACKET_SPECIAL = re.compile(r"\[[A-Z][A-Z_0-9]*\]")  # BERT's [CLS], [SEP], [PAD], [MASK], [UNK]
_NO_SPACE_BEFORE = frozenset(".,;:!?%)]}")
_NO_SPACE_AFTER = frozenset("([{")
STYLES = ("byte-level", "sentencepiece", "wordpiece", "plain")


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
    """"byte-level", "sentencepiece", "wordpiece" or "plain", judged from the tokens.

    WordPiece shows as `##` continuations, or, in a sentence with none, as BERT's bracketed special
    tokens ([CLS], [SEP]) among tokens without any whitespace (its tokenizer drops the spaces).
    A tokenizer that drops spaces and has neither is only known from the tokenizer itself
    (`tokenizer_style`).
    """
    decoder = _byte_decoder()
    if any(("Ġ" in t or "Ċ" in t or "ĉ" in t) for t in tokens) and all(c in decoder for t in tokens for c in t):
        return "byte-level"
    if any(t.startswith("▁") for t in tokens):
        return "sentencepiece"
    if any(t.startswith("##") and len(t) > 2 for t in tokens):
        return "wordpiece"
    if any(_BRACKET_SPECIAL.fullmatch(t) for t in tokens) and not any(c.isspace() for t in tokens for c in t):
        return "wordpiece"
    return "plain"


def _spec_types(node) -> set[str]:
    """Every "type" named in a tokenizers JSON component (nested sequences included)."""
    if isinstance(node, dict):
        return ({node["type"]} if isinstance(node.get("type"), str) else set()) | \
            set().union(*(_spec_types(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_spec_types(v) for v in node)) if node else set()
    return set()


def tokenizer_style(tokenizer) -> str | None:
    """The vocabulary style of a HuggingFace tokenizer (see `vocabulary_style`), or None if unknown.

    A tokenizer that drops the whitespace between words (WordPiece; a word-level vocabulary split
    on whitespace) is "wordpiece": its tokens are shown separated by spaces.
    """
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            spec = json.loads(backend.to_str())
        except Exception:  # noqa: BLE001 - an unusual backend: judge from the tokens instead
            return None
        model = (spec.get("model") or {}).get("type")
        pre, decoder = _spec_types(spec.get("pre_tokenizer")), _spec_types(spec.get("decoder"))
        if "ByteLevel" in pre | decoder:
            return "byte-level"
        if "Metaspace" in pre | decoder or "▁" in json.dumps([spec.get("normalizer"), spec.get("decoder")],
                                                             ensure_ascii=False):
            return "sentencepiece"
        if model == "WordPiece" or "WordPiece" in decoder:
            return "wordpiece"
        if pre & {"Whitespace", "WhitespaceSplit", "BertPreTokenizer"} and not decoder:
            return "wordpiece"  # words split on whitespace, and nothing to put the spaces back
        return "plain" if model else None
    if hasattr(tokenizer, "wordpiece_tokenizer"):
        return "wordpiece"
    if hasattr(tokenizer, "byte_encoder"):
        return "byte-level"
    if hasattr(tokenizer, "sp_model"):
        return "sentencepiece"
    return None


def _byte_level(token: str) -> str:
    decoder = _byte_decoder()
    return bytes(decoder[c] for c in token).decode("utf-8", errors="replace")


def _sentencepiece(token: str) -> str:
    match = _SENTENCEPIECE_BYTE.fullmatch(token)
    if match:
        byte = int(match.group(1), 16)
        return chr(byte) if byte < 0x80 else "\ufffd"
    return token.replace("▁", " ")


def _wordpiece(tokens: list[str]) -> list[str]:
    out = []
    for i, t in enumerate(tokens):
        if t.startswith("##") and len(t) > 2:
            out.append(t[2:])  # a word continuation
        elif i == 0 or (t and all(c in _NO_SPACE_BEFORE for c in t)) or \
                (tokens[i - 1] and tokens[i - 1] in _NO_SPACE_AFTER):
            out.append(t)
        else:
            out.append(" " + t)
    return out


def clean_tokens(tokens: list[str], style: str | None = None) -> list[str]:
    """The text each token stands for (see the module docstring); other tokens unchanged.

    `style` (from `vocabulary_style` or `tokenizer_style`) defaults to the one these tokens show.
    """
    tokens = [str(t) for t in tokens]
    style = vocabulary_style(tokens) if style is None else style
    if style not in STYLES:
        raise ValueError(f"clean_tokens: unknown style {style!r}; use one of {', '.join(STYLES)}")
    if style == "byte-level":
        decoder = _byte_decoder()
        return [_byte_level(t) if all(c in decoder for c in t) else t for t in tokens]
    if style == "sentencepiece":
        return [_sentencepiece(t) for t in tokens]
    if style == "wordpiece":
        return _wordpiece(tokens)
    return tokens
