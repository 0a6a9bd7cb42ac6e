"""How an `Attribution` is displayed (issue 10, class 7): word boundaries of every vocabulary in the
terminal, HTML and PNG; ids without a tokenizer; the plain-text form that keeps the ranking; titles
(local paths, long names in the PNG); argument checks of the output methods (`top(k)`, `show`,
`to_png`)."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from lrp_triton import Attribution, attribute, render
from lrp_triton.render import png as png_module
from lrp_triton.render.terminal import plain_lines
from lrp_triton.render.tokens import clean_tokens, tokenizer_style, vocabulary_style
from png_pixels import count_colored, read_png

try:
    import matplotlib  # noqa: F401
    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SENTENCE = "A man is playing a guitar."
SHOWN = "[CLS] a man is playing a guitar. [SEP]"


def attribution(tokens=None, relevance=None, ids=None, **kw):
    """A hand-made one-row attribution (relevance 1, 2, ... unless given)."""
    n = len(tokens) if tokens is not None else ids.shape[-1]
    rel = torch.tensor([relevance if relevance is not None else [float(i + 1) for i in range(n)]])
    ids = ids if ids is not None else torch.arange(5, 5 + n)[None]
    return Attribution(relevance=rel, target=torch.tensor([1]), logit=torch.tensor([2.0]),
                       position=torch.tensor([n - 1]), input_ids=ids, tokens=None if tokens is None else [tokens],
                       target_tokens=["x"] if tokens is not None else None, **kw)


def html_text(markup):
    """The heatmap's token text as a browser shows it: the rows' inner text, tags dropped."""
    rows = re.findall(r'<div class="lrp-tokens">(.*?)</div>', markup, flags=re.S)
    import html

    return [html.unescape(re.sub(r"<[^>]+>", "", row)) for row in rows]


def png_lines(att, **kwargs):
    """The PNG's token text per drawn line (token boxes at the same height), title and labels apart."""
    fig = png_module.figure(render.display_rows(att), render.title(att), **kwargs)
    ax = fig.axes[0]
    boxes = sorted(((round(p.get_y(), 3), p.get_x(), p.get_width()) for p in ax.patches))
    texts = {(round(t.get_position()[0], 3), round(t.get_position()[1], 3)): t.get_text() for t in ax.texts}
    lines = {}
    for y, x, w in boxes:
        text = texts[(round(x + w / 2, 3), round(y + (png_module.LINE_H - 0.3) / 2, 3))]
        col = round(x / png_module.CHAR_W)
        line = lines.setdefault(y, "")
        lines[y] = line + " " * (col - len(line)) + text
    return fig, list(lines.values())


# ------------------------------------------------------------------------------------------------
# Word boundaries
# ------------------------------------------------------------------------------------------------
def bert_tokenizer(size=61):
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "playing", "guitar", ".", "walk",
             "##ing", "the", "dog", "(", ")", ","]
    words += [f"w{i}" for i in range(size - len(words))]
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)})


@pytest.fixture(scope="module")
def bert_attribution():
    from model_zoo import tiny

    tok = bert_tokenizer()
    ids = tok([SENTENCE], return_tensors="pt")["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0]) == ["[CLS]", "a", "man", "is", "playing", "a", "guitar", ".", "[SEP]"]
    return attribute(tiny("bert-cls"), ids, tokenizer=tok)


def test_wordpiece_sentence_without_continuations_keeps_its_spaces(bert_attribution):
    """BERT with no `##` piece: `[CLS]amanisplayingaguitar.[SEP]` before; words apart everywhere now."""
    att = bert_attribution
    plain = render.terminal_text(att, color=False).splitlines()
    assert SHOWN in plain
    coloured = ANSI.sub("", render.terminal_text(att, color=True)).splitlines()
    assert SHOWN in coloured
    assert html_text(att.to_html()) == [SHOWN]
    assert att.to_json()["rows"][0]["tokens"][:3] == ["[CLS]", " a", " man"]
    if HAS_MATPLOTLIB:
        _, lines = png_lines(att)
        assert lines == [SHOWN]


def test_attribute_records_the_tokenizers_style_for_every_text_kind():
    """A whitespace word-level tokenizer (no [CLS] / ## to judge from): attribute(tokenizer=) records the
    style, so the library path shows words apart as the CLI does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from model_zoo import t5_inputs, tiny, tiny_model, tiny_t5

    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(101)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0")
    ids = tok(["w5 w6 w7 w8"], return_tensors="pt")["input_ids"]
    enc, dec, _ = t5_inputs(1, 4, 2, pad_from=None)
    for att in (attribute(tiny_model("llama"), ids, tokenizer=tok),
                attribute(tiny("bert-mlm"), ids, position=1, tokenizer=tok),
                attribute(tiny_t5("flan"), ids, decoder_input_ids=dec, tokenizer=tok)):
        assert att.extras["token_style"] == "wordpiece"
        assert "w5 w6 w7 w8" in render.terminal_text(att, color=False)


def test_wordpiece_rules():
    assert vocabulary_style(["[CLS]", "a", "man", "."]) == "wordpiece"
    assert "".join(clean_tokens(["the", "walk", "##ing", "dog", "(", "a", ")", ",", "x", "[SEP]"],
                                "wordpiece")) == "the walking dog (a), x [SEP]"
    # tokens with their own spaces, or single characters of a byte-level vocabulary, are never spaced out
    assert "".join(clean_tokens(["x", "==", "7"])) == "x==7"
    assert "".join(clean_tokens(["a", "=", "7", " ", "k"])) == "a=7 k"
    with pytest.raises(ValueError, match="unknown style 'bpe'"):
        clean_tokens(["a"], "bpe")


def test_style_read_from_the_tokenizer():
    """The tokenizer's own pipeline tells its style, where the tokens alone cannot (no marker shown)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lrp_triton.demo import DEMO_DIR

    def fast(model, pre=None, decoder=None, **kw):
        t = Tokenizer(model)
        if pre is not None:
            t.pre_tokenizer = pre
        if decoder is not None:
            t.decoder = decoder
        return PreTrainedTokenizerFast(tokenizer_object=t, **kw)

    words = fast(models.WordLevel({"w0": 0, "cat": 1, "sat": 2}, unk_token="w0"), pre_tokenizers.WhitespaceSplit(),
                 unk_token="w0")
    assert tokenizer_style(words) == "wordpiece"  # whitespace dropped, nothing puts it back
    assert tokenizer_style(bert_tokenizer()) == "wordpiece"
    assert tokenizer_style(fast(models.BPE(), pre_tokenizers.ByteLevel(), decoders.ByteLevel())) == "byte-level"
    assert tokenizer_style(fast(models.Unigram(), pre_tokenizers.Metaspace(), decoders.Metaspace())) == \
        "sentencepiece"
    assert tokenizer_style(AutoTokenizer.from_pretrained(DEMO_DIR)) == "plain"  # characters, spaces are tokens
    assert tokenizer_style(None) is None and tokenizer_style(object()) is None

    # a word-level attribution: glued when judged from its tokens, spaced once the style is recorded
    tokens = ["cat", "sat", "w0"]
    assert render.display_rows(attribution(tokens))[0].tokens == tokens
    hinted = attribution(tokens, extras={"token_style": tokenizer_style(words)})
    assert render.terminal_text(hinted, color=False).splitlines()[2] == "cat sat w0"
    assert html_text(hinted.to_html()) == ["cat sat w0"]


def test_ids_without_a_tokenizer_are_separated():
    att = attribution(ids=torch.tensor([[5, 6, 17, 8]]))
    plain = render.terminal_text(att, color=False).splitlines()
    assert "#5 #6 #17 #8" in plain
    assert "#5 #6 #17 #8" in ANSI.sub("", render.terminal_text(att, color=True)).splitlines()
    assert html_text(att.to_html()) == ["#5 #6 #17 #8"]
    assert att.to_json()["rows"][0]["tokens"] == ["#5", "#6", "#17", "#8"]  # JSON: the ids as they are
    if HAS_MATPLOTLIB:
        assert png_lines(att)[1] == ["#5 #6 #17 #8"]


# ------------------------------------------------------------------------------------------------
# Plain text keeps the ranking
# ------------------------------------------------------------------------------------------------
def test_plain_text_marks_the_ranks_under_the_tokens():
    tokens = ["The", " cat", " sat", " on", " the", " mat", "."]
    relevance = [0.1, 3.0, -2.0, 0.5, 0.2, 1.5, 0.05]
    att = attribution(tokens, relevance)
    lines = render.terminal_text(att, color=False).splitlines()
    text = lines.index("The cat sat on the mat.")
    # rank k under the first character of the k-th most relevant token, ~ under the rest of it; five ranks
    # at most (the "." is sixth), negative relevance (" sat") unmarked
    assert lines[text + 1] == "5~~ 1~~     3~ 4~~ 2~~"
    assert [t.token for t in att.top(5)] == [" cat", " mat", " on", " the", "The"]  # the same ranking
    assert lines[-1].startswith("(no colour: a digit k under the text marks")


def test_plain_text_with_newlines_wide_characters_and_no_positive_relevance():
    row = render.display_rows(attribution(["日本", "語", "\n", "x", "\t", "y"], [1.0, 0.0, 3.0, 0.0, 0.0, 2.0]))[0]
    lines = plain_lines(row)
    assert lines[0] == "日本語↵" and lines[1] == "3~~~  1"  # wide characters take two columns; ↵ is "\n"
    assert lines[2] == "x       y" and lines[3] == "        2"  # a tab to the next multiple of 8
    negative = render.display_rows(attribution(["a", "b"], [-1.0, -2.0]))[0]
    assert plain_lines(negative) == ["ab", ""]
    spaces = render.display_rows(attribution(["a", " ", "b"], [0.0, 1.0, 0.0]))[0]
    assert plain_lines(spaces) == ["a b", " 1"]  # a whitespace token is marked where it is


# ------------------------------------------------------------------------------------------------
# Titles
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shown", [
    ("/home/someone/models/tiny-qwen2", "tiny-qwen2"),
    ("/home/someone/models/tiny-qwen2/", "tiny-qwen2"),
    ("./checkpoints/step-400", "step-400"),
    ("~/m", "m"),
    ("C:\\models\\bert", "bert"),
    ("/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/0123abcd", "Qwen/Qwen2.5-0.5B"),
    ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"),
    ("gpt2", "gpt2"),
    ("lrp_triton/demo", "lrp_triton/demo"),
])
def test_title_names_a_local_directory_by_its_name(name, shown):
    att = attribution(["a", "b"], model_name=name, model_type="llama")
    assert render.title(att) == f"{shown} · attnlrp"
    assert render.terminal_text(att, color=False).splitlines()[0] == f"{shown} · attnlrp"
    assert f"<h1>{shown} · attnlrp</h1>" in att.to_html()
    assert att.to_json()["model"] == name  # the data keeps where it came from


@needs_matplotlib
@pytest.mark.parametrize("name", ["org/" + "a-very-long-model-name-" * 6 + "final", "x" * 200])
def test_png_title_and_labels_are_never_cut_off(name, tmp_path):
    att = attribution(["a", "b", "c"], model_name=name)
    att.target_tokens = ["t" * 150]
    fig, _ = png_lines(att)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    for text in fig.axes[0].texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width + 0.5 and box.y0 >= 0 and box.y1 <= height + 0.5, text.get_text()
    title = "".join(t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold")
    assert title.replace(" ", "") == render.title(att).replace(" ", "")  # all of it, wrapped
    att.to_png(tmp_path / "t.png", dpi=50)
    w, h, pixels = read_png(tmp_path / "t.png")
    assert w > 0 and count_colored(pixels)[0] > 0


# ------------------------------------------------------------------------------------------------
# Argument checks of the output methods
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, message", [
    (-1, "negative number of tokens"), (0, "asks for no tokens"), (2.5, "not a whole number"),
    (True, "not a whole number"), ("3", "not a whole number"), (None, "not a whole number"),
])
def test_top_rejects_bad_k(k, message):
    with pytest.raises(ValueError, match=message) as info:
        attribution(["a", "b", "c"]).top(k)
    assert "pass" in str(info.value) and "top(k)" in str(info.value)
    with pytest.raises(ValueError, match=message):
        render.top(attribution(["a", "b", "c"]), k)


def test_top_accepts_any_integer_and_caps_at_the_row_length():
    import numpy as np

    att = attribution(["a", "b", "c"], [1.0, 3.0, 2.0])
    assert [t.token for t in att.top(np.int64(2))] == ["b", "c"]
    assert [t.token for t in att.top(torch.tensor(1))] == ["b"]
    assert [t.token for t in att.top(10)] == ["b", "c", "a"]


def test_show_and_to_png_check_their_arguments(tmp_path, capsys):
    att = attribution(["a", "b"])
    with pytest.raises(ValueError, match="color='yes'"):
        att.show(color="yes")
    att.show(color=False)
    assert "ab" in capsys.readouterr().out
    if HAS_MATPLOTLIB:
        with pytest.raises(ValueError, match="width=5"):
            att.to_png(tmp_path / "x.png", width=5)
        with pytest.raises(ValueError, match="dpi=0"):
            att.to_png(tmp_path / "x.png", dpi=0)

