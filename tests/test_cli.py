"""`lrp-triton explain` end to end, and the outputs of an `Attribution` (terminal, HTML, PNG, JSON, top).

The CLI runs in a subprocess on the bundled demo model (CPU, PyTorch backend); its errors are
checked in-process (they stop before any model is loaded). The HTML is rendered in headless
Chromium when /usr/bin/chromium exists (skipped otherwise) and the screenshot checked for red and
blue token backgrounds.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrp_triton import Attribution, attribute, cli, render
from lrp_triton.demo import DEMO_PROMPT
from lrp_triton.demo import load as load_demo
from lrp_triton.render.tokens import clean_tokens, vocabulary_style
from png_pixels import count_colored, read_png

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
try:
    import matplotlib  # noqa: F401
    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False


def run_cli(*args, timeout=240, env=None):
    """`python -m lrp_triton explain ARGS` in a subprocess; `env` overrides variables (None unsets one)."""
    variables = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TRITON_INTERPRET")}
    variables["PYTHONPATH"] = str(ROOT) + os.pathsep + variables.get("PYTHONPATH", "")
    for name, value in (env or {}).items():
        if value is None:
            variables.pop(name, None)
        else:
            variables[name] = value
    return subprocess.run([sys.executable, "-m", "lrp_triton", "explain", *args], capture_output=True, text=True,
                          cwd=ROOT, env=variables, timeout=timeout)


class _Spans(html.parser.HTMLParser):
    """Collects the token spans of a heatmap page (text, background style, hover title)."""

    def __init__(self):
        super().__init__()
        self.tokens, self.external, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.external.append(attrs[key])
        if tag == "script":
            self.external.append("<script>")
        if tag == "span" and "data-relevance" in attrs:
            self._open = {"style": attrs["style"], "title": attrs["title"], "value": float(attrs["data-relevance"]),
                          "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.tokens.append(self._open)
            self._open = None


def parse_html(text):
    parser = _Spans()
    parser.feed(text)
    return parser


# ------------------------------------------------------------------------------------------------
# The CLI in a subprocess
# ------------------------------------------------------------------------------------------------
def test_explain_demo_end_to_end_writes_every_format(tmp_path):
    outs = [tmp_path / "heat.html", tmp_path / "heat.json"] + ([tmp_path / "heat.png"] if HAS_MATPLOTLIB else [])
    args = ["--top", "3"] + [a for o in outs for a in ("--out", str(o))]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    lines = proc.stdout.splitlines()
    assert "\x1b[" not in proc.stdout  # not a terminal: plain text
    assert DEMO_PROMPT in lines  # the prompt, as text
    marks = lines[lines.index(DEMO_PROMPT) + 1]  # ... with the ranking marked under it
    assert marks[DEMO_PROMPT.index("k=3") + 2] == "1" and set(marks) <= set(" 12345~")
    assert sorted(c for c in marks if c.isdigit()) == list("12345")
    assert any(line.startswith("(no colour: a digit k under the text") for line in lines)
    assert any(line.startswith("top 3 tokens for target '") for line in lines)
    assert "Loading lrp_triton/demo" in proc.stderr  # the status line
    for out in outs:
        assert f"wrote {out}" in proc.stderr

    doc = json.loads(outs[1].read_text())
    assert {"version", "model", "mode", "rows"} <= set(doc) and doc["mode"] == "attnlrp"
    assert doc["model"] == "lrp_triton/demo"
    (row,) = doc["rows"]
    assert "".join(row["tokens"]) == DEMO_PROMPT and len(row["relevance"]) == len(row["tokens"])
    assert row["target_token"] == "3" and isinstance(row["logit"], float)  # the demo model answers k -> 3
    # the raw relevance in JSON is what attribute() gives in-process
    model, tokenizer = _demo()
    ids = tokenizer(DEMO_PROMPT, return_tensors="pt")["input_ids"]
    expected = attribute(model, ids, backend="torch").relevance[0]
    torch.testing.assert_close(torch.tensor(row["relevance"]), expected, rtol=1e-4, atol=1e-5)

    page = parse_html(outs[0].read_text())
    assert [t["text"] for t in page.tokens] == row["tokens"] and not page.external
    assert all("background:#" in t["style"] and "relevance" in t["title"] for t in page.tokens)
    if HAS_MATPLOTLIB:
        width, height, pixels = read_png(outs[2])
        red, _ = count_colored(pixels)
        assert width > 100 and height > 50 and red > 50


def test_explain_generate_colour_and_console_script(tmp_path):
    out = tmp_path / "gen.json"
    proc = run_cli("--prompt", "a=7 k=3 x=9 ?x", "--generate", "4", "--mode", "gradient", "--color", "always",
                   "--top", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "generating [" in proc.stderr and "explaining [" in proc.stderr  # the progress bars' final lines
    assert "generated: " in proc.stdout
    assert "\x1b[48;2;" in proc.stdout  # coloured backgrounds
    doc = json.loads(out.read_text())
    assert doc["mode"] == "gradient" and len(doc["rows"]) == 4
    n_prompt = len("a=7 k=3 x=9 ?x")
    for j, row in enumerate(doc["rows"]):
        # each generated token is explained against the prompt and the tokens generated before it
        assert len(row["tokens"]) == n_prompt + j
    assert doc["rows"][0]["target_token"] == "9"
    if shutil.which("lrp-triton"):
        proc = subprocess.run(["lrp-triton", "--version"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "lrp_triton" in proc.stdout


def test_explain_error_exit_code_in_a_subprocess():
    proc = run_cli("--model", "/no/such/model/dir")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0  # one line
    assert "no such model directory" in proc.stderr


# ------------------------------------------------------------------------------------------------
# The CLI in-process: options and errors
# ------------------------------------------------------------------------------------------------
def main(capsys, *args):
    code = cli.main(["explain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/dir"], "no such model directory"),
    (["--prompt", "a=1 " * 20 + "?a"], "takes at most"),
    (["--target", "ab"], "is not a single token"),
    (["--target", "id:999"], "outside the vocabulary"),
    (["--target", "12"], "'12' is not a single token of this model (it splits into 2: '1' '2'); a bare number is "
                         "read as text, never as an id: for the token with id 12, pass id:12"),
    (["--contrast", "42"], "for the token with id 42, pass id:42"),
    (["--target", "id:x"], "id: takes a whole number"),
    (["--top", "-1"], "cannot be negative"),
    (["--generate", "0"], "at least 1"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "CUDA"),
    (["--out", "x.txt"], "unknown file type"),
    (["--prompt", ""], "prompt is empty"),
    (["--generate", "2", "--target", "3"], "cannot be combined"),
    (["--position", "40"], "outside the prompt"),
])
def test_bad_input_is_one_line_with_the_fix(capsys, args, message):
    code, out, err = main(capsys, *args)
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("lrp-triton: error: ") and message in line, err
    assert "; " in line or "use" in line or "pass" in line  # names the fix


def test_target_id_form_and_the_note_only_for_bare_numbers(capsys, tmp_path):
    from lrp_triton.demo import load

    _, tokenizer = load()
    out = tmp_path / "r.json"
    code, _, err = main(capsys, "--target", "id:12", "--contrast", "k", "--top", "0", "--out", str(out))
    assert code == 0 and "note:" not in err  # id:N is an id, a word is a token: nothing to note
    (row,) = json.loads(out.read_text())["rows"]
    assert row["target"] == 12 and row["target_token"] == tokenizer.convert_ids_to_tokens(12)
    assert row["contrast"] == tokenizer.convert_tokens_to_ids("k")


def test_out_problems_are_found_before_the_work(capsys, tmp_path):
    existing = tmp_path / "already.html"
    existing.mkdir()
    code, out, err = main(capsys, "--out", str(existing))
    assert code == 2 and out == "" and "Loading" not in err and "Traceback" not in err
    assert f"--out {existing}: that is an existing directory, not a file; pass a file name" in err
    code, _, err = main(capsys, "--out", str(tmp_path / "a.json"), "--out", str(tmp_path / "." / "a.json"))
    assert code == 2 and "given twice" in err and "Loading" not in err


def test_a_write_that_fails_after_the_work_is_one_line(capsys, tmp_path, monkeypatch):
    def full_disk(self, path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Attribution, "to_json", full_disk)
    code, _, err = main(capsys, "--out", str(tmp_path / "r.json"), "--top", "0")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"lrp-triton: error: --out {tmp_path / 'r.json'}: could not write it "
                                            "(No space left on device); pass another file")


def test_png_out_without_matplotlib_fails_before_loading(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = main(capsys, "--out", str(tmp_path / "x.png"))
    assert code == 2 and "pip install matplotlib" in err and "Loading" not in err


def test_model_directory_without_config(capsys, tmp_path):
    code, _, err = main(capsys, "--model", str(tmp_path))
    assert code == 2 and "no config.json" in err


def test_target_contrast_position_and_prompt_file(capsys, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a=7 k=3 x=9 ?a\n")
    out = tmp_path / "r.json"
    code, text, err = main(capsys, "--prompt-file", str(prompt), "--target", "9", "--contrast", "7", "--top", "2",
                           "--out", str(out), "--mode", "cp-lrp")
    assert code == 0
    assert "target '9' vs '7'" in text and len(re.findall(r"^ +\d\. '", text, flags=re.M)) == 2
    # a bare number is the token; stderr says so and how to ask for the id instead
    assert "note: --target 9 is the token '9' (id " in err and "pass --target id:9" in err
    assert "note: --contrast 7 is the token '7'" in err
    (row,) = json.loads(out.read_text())["rows"]
    assert row["target_token"] == "9" and row["contrast_token"] == "7" and "".join(row["tokens"]) == "a=7 k=3 x=9 ?a"
    code, text, _ = main(capsys, "--prompt", "a=7 k=3", "--position", "2", "--checkpoint", "--out", str(out))
    assert code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["position"] == 2 and row["tokens"] == ["a", "=", "7"]  # nothing after the explained position


def test_local_model_directory_with_a_byte_level_tokenizer(capsys, tmp_path):
    """Another family from a local directory: Qwen2 weights with a GPT-2-style byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from model_zoo import FAMILIES, randomize

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["The capital of France is Paris. Naïve café!\n"] * 20, trainer=trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]))
    config = FAMILIES["qwen2"]()
    config.vocab_size = 300
    directory = tmp_path / "tiny-qwen2"
    randomize(AutoModelForCausalLM.from_config(config)).save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(directory)

    prompt = "The café is\nin"
    out = tmp_path / "q.json"
    code, text, err = main(capsys, "--model", str(directory), "--prompt", prompt, "--target", "Paris",
                           "--top", "2", "--out", str(out))
    assert code == 0, err
    lines = text.splitlines()
    first = lines.index("The café is↵")  # plain text: each line of the prompt, its rank marks under it
    assert lines[first + 2] == "in" and "Ġ" not in text
    (row,) = json.loads(out.read_text())["rows"]
    assert "".join(row["tokens"]) == prompt and "\n" in row["tokens"]  # Ċ shown as a newline
    assert row["target_token"] == " Paris"  # "Paris" is no token; " Paris" is one
    assert json.loads(out.read_text())["model"] == str(directory)  # the data says where it came from
    assert text.splitlines()[0] == "tiny-qwen2 · attnlrp" and str(tmp_path) not in text  # the title: its name


# ------------------------------------------------------------------------------------------------
# Attribution outputs
# ------------------------------------------------------------------------------------------------
_MODEL = {}


def _demo():
    if not _MODEL:
        _MODEL["m"], _MODEL["t"] = load_demo()
    return _MODEL["m"], _MODEL["t"]


def synthetic(tokens=None, several=False):
    """A hand-made attribution: two rows (batch), right padding in the second."""
    rel = torch.tensor([[0.5, -2.0, 1.0, 4.0], [1.0, 3.0, -1.5, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    return Attribution(relevance=rel, target=torch.tensor([1, 2]), logit=torch.tensor([3.5, 2.5]),
                       position=torch.tensor([3, 2]), input_ids=ids, attention_mask=mask, tokens=tokens,
                       target_tokens=["x", "y"] if tokens else None, model_name="synthetic")


def test_rows_normalise_per_row_and_keep_raw_values(tmp_path):
    att = synthetic([["Ġthe", "Ġcat", "Ġsat", "."], ["Hello", "Ġworld", "Ċ", "<pad>"]])
    rows = render.display_rows(att)
    assert [r.tokens for r in rows] == [[" the", " cat", " sat", "."], ["Hello", " world", "\n"]]
    assert rows[0].normalized == [0.125, -0.5, 0.25, 1.0] and rows[1].normalized == [1 / 3, 1.0, -0.5]
    doc = att.to_json(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(doc))
    assert doc["rows"][0]["relevance"] == [0.5, -2.0, 1.0, 4.0] and doc["rows"][1]["relevance"] == [1.0, 3.0, -1.5]
    assert doc["rows"][0]["target_token"] == "x" and doc["model"] == "synthetic"
    assert att.top(2) == [[(3, ".", 4.0), (2, " sat", 1.0)], [(1, " world", 3.0), (0, "Hello", 1.0)]]
    text = att.to_html(tmp_path / "a.html")
    page = parse_html(text)
    assert len(page.tokens) == 7 and not page.external  # self-contained
    assert (tmp_path / "a.html").read_text() == text and text.startswith("<!DOCTYPE html>")
    assert text.count('class="lrp-row"') == 2  # one row per explained target
    assert page.tokens[0]["title"].startswith("' the'") and "+0.5" in page.tokens[0]["title"]  # value on hover


def test_ids_shown_without_tokens_and_terminal_colours(capsys):
    att = synthetic()
    plain = render.terminal_text(att, color=False)
    assert "#5 #6 #7 #8" in plain.splitlines() and "\x1b" not in plain
    coloured = render.terminal_text(att, color=True)
    assert "\x1b[48;2;214;24;24m" in coloured  # each row's maximum: full red
    assert "\x1b[48;2;140;164;234m" in coloured  # row 1's minimum, -1.5 / 3: half blue
    att.show(color=False)
    assert "#9 #10 #11" in capsys.readouterr().out.splitlines()


def test_show_in_a_notebook_displays_html(monkeypatch):
    import types

    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # a Jupyter kernel's shell
    display = types.ModuleType("IPython.display")
    display.HTML = lambda markup: ("html", markup)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    synthetic([["a", "b", "c", "d"], ["e", "f", "g", "h"]]).show()
    ((kind, markup),) = shown
    assert kind == "html" and len(parse_html(markup).tokens) == 7


@pytest.mark.parametrize("tokens, style, text", [
    (["Ġthe", "Ġcaf", "Ã©", "Ċ"], "byte-level", [" the", " caf", "é", "\n"]),
    (["▁The", "▁cat", "<0x0A>", "s"], "sentencepiece", [" The", " cat", "\n", "s"]),
    (["the", "walk", "##ing", "dog"], "wordpiece", ["the", " walk", "ing", " dog"]),
    (["a", "=", "7", " "], "plain", ["a", "=", "7", " "]),
])
def test_token_markers_are_cleaned(tokens, style, text):
    assert vocabulary_style(tokens) == style
    assert clean_tokens(tokens) == text


def test_to_png_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        synthetic().to_png(tmp_path / "x.png")


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (pip install 'lrp_triton[plot]')")
def test_to_png_draws_red_and_blue_tokens(tmp_path):
    synthetic([["a", "b", "c", "d"], ["e", "f", "g", "h"]]).to_png(tmp_path / "x.png", dpi=60)
    width, height, pixels = read_png(tmp_path / "x.png")
    red, blue = count_colored(pixels)
    assert red > 20 and blue > 20


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="headless Chromium is not installed (/usr/bin/chromium)")
def test_html_renders_coloured_tokens_in_headless_chromium(tmp_path):
    model, tokenizer = _demo()
    ids = tokenizer(["a=7 k=3 x=9 ?k", "a=1 b=2 c=4 ?c"], return_tensors="pt")["input_ids"]
    att = attribute(model, ids, backend="torch", tokenizer=tokenizer)
    page = tmp_path / "heat.html"
    att.to_html(page)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=700,300",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    width, height, pixels = read_png(shot)
    assert (width, height) == (700, 300)
    lines = [count_colored(pixels[y * width:(y + 1) * width]) for y in range(height)]
    legend = next(y for y, (_, blue) in enumerate(lines) if blue >= 30)  # the legend's -1.0 box: wide, full blue
    red_rows = [y for y, (red, _) in enumerate(lines[:legend]) if red > 0]
    print(f"screenshot: legend at y={legend}; red token pixels in {len(red_rows)} lines, "
          f"{sum(r for r, _ in lines[:legend])} pixels")
    assert sum(r for r, _ in lines[:legend]) > 150  # the answers' source tokens, above the legend
    assert red_rows[-1] - red_rows[0] > 30  # in both rows of the heatmap


# ------------------------------------------------------------------------------------------------
# Hugging Face model ids without a network
# ------------------------------------------------------------------------------------------------
def offline_env(tmp_path):
    """An empty Hugging Face cache under tmp_path and a hub endpoint that refuses connections."""
    unset = ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
             "http_proxy", "ALL_PROXY", "all_proxy")
    return {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", **dict.fromkeys(unset)}


def test_uncached_model_id_without_network_fails_at_once(tmp_path):
    """No retries against an unreachable hub: one line saying the cache misses and the hub is out of reach."""
    proc = run_cli("--model", "lrp-test/absent-model", "--prompt", "hi", env=offline_env(tmp_path))
    assert proc.returncode == 2
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after the status line (printed as a line when not a tty)
    assert line.startswith("lrp-triton: error: --model lrp-test/absent-model: its config")
    assert "not in the local Hugging Face cache" in line and "http://127.0.0.1:9 cannot be reached" in line
    assert "pass a local model directory" in line


def test_cached_model_id_loads_without_network(tmp_path):
    """A model id found in the Hugging Face cache (the layout `hf download` writes) loads offline."""
    from lrp_triton.demo import DEMO_DIR

    repo = tmp_path / "hf" / "hub" / "models--lrp-test--demo"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(DEMO_DIR, repo / "snapshots" / revision,
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    out = tmp_path / "r.json"
    proc = run_cli("--model", "lrp-test/demo", "--prompt", "a=7 k=3 x=9 q=1 m=4 ?k", "--top", "1",
                   "--out", str(out), env=offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["model"] == "lrp-test/demo" and doc["rows"][0]["target_token"] == "3"


# ------------------------------------------------------------------------------------------------
# Every kind of text attribution renders (encoders, custom scores, encoder-decoders)
# ------------------------------------------------------------------------------------------------
def word_tokenizer(vocab_size):
    """A whitespace WordLevel tokenizer whose token i is the word `w{i}`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0")


def explain_kind(kind, tokenizer, progress):
    """(attribution, input_ids, attention_mask) of one tiny model of `kind`."""
    from test_encoders import TEXT, text_inputs, tiny
    from test_t5 import inputs as t5_inputs
    from test_t5 import tiny_t5

    if kind == "seq2seq":
        model = tiny_t5("flan")
        ids, dec, mask = t5_inputs()
        return attribute(model, ids, attention_mask=mask, decoder_input_ids=dec, position=[2, 4],
                         tokenizer=tokenizer, progress=progress), ids, mask.bool()
    model = tiny({"classification": "bert-cls", "masked-lm": "roberta-mlm", "custom score": "bert-base"}[kind])
    ids, mask, types = text_inputs(pad_last=3)
    kw = dict(input_ids=ids, attention_mask=mask, tokenizer=tokenizer, progress=progress)
    if kind == "masked-lm":
        kw["position"] = 4
    elif kind == "custom score":
        kw["target"] = lambda out: out.last_hidden_state[:, 0, 5]
    else:
        kw["token_type_ids"] = types
    assert TEXT["vocab_size"] <= 101
    return attribute(model, **kw), ids, mask


@pytest.mark.parametrize("kind", ["classification", "masked-lm", "custom score", "seq2seq"])
def test_every_text_attribution_renders_with_tokens_and_progress(kind, tmp_path, capsys):
    """tokenizer= and progress= work for encoders and encoder-decoders too, and every output
    (top, JSON, HTML, PNG) renders attributions without a position or with a custom score."""
    calls = []
    a, ids, mask = explain_kind(kind, word_tokenizer(101), lambda done, total: calls.append((done, total)))
    n = 2 if kind == "seq2seq" else 1
    assert calls == [(i, n) for i in range(1, n + 1)]
    assert a.tokens == [[f"w{i}" for i in row] for row in ids.tolist()]
    doc = a.to_json(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads(json.dumps(doc))
    assert len(doc["rows"]) == 2 * n
    for row in doc["rows"]:
        b = row["batch"]
        real = mask[b].nonzero()[:, 0].tolist()
        # every real token, padding dropped; the whitespace word-level tokenizer's style is recorded by
        # attribute(tokenizer=), so the shown pieces carry the spaces between words
        words = [f"w{ids[b, i]}" for i in real]
        assert a.extras["token_style"] == "wordpiece"
        assert row["tokens"] == words[:1] + [" " + w for w in words[1:]]
        relevance = a.relevance[b] if n == 1 else a.relevance[b, [2, 4].index(row["position"])]
        assert row["relevance"] == pytest.approx(relevance[real].tolist())
        expected_target = {"classification": f"LABEL_{row['target']}", "custom score": None}.get(
            kind, f"w{row['target']}")
        assert row["target_token"] == expected_target
    a.show(color=False)
    shown = capsys.readouterr().out
    label = {"classification": "target 'LABEL_", "custom score": "custom score  (score "}.get(kind, "target 'w")
    assert shown.count(label) == 2 * n, shown
    top = a.top(2)
    assert len(top) == 2 * n and all(len(t) == 2 for t in top)
    page = parse_html(a.to_html(tmp_path / "a.html"))
    assert len(page.tokens) == sum(len(r["tokens"]) for r in doc["rows"])
    if HAS_MATPLOTLIB:
        a.to_png(tmp_path / "a.png")
        assert (tmp_path / "a.png").stat().st_size > 0


def test_vision_attribution_refuses_a_tokenizer():
    from test_encoders import tiny

    with pytest.raises(ValueError, match="tokenizer is for text models"):
        attribute(tiny("vit"), pixel_values=torch.randn(1, 3, 32, 32), tokenizer=word_tokenizer(10))
