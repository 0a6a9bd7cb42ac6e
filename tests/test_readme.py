"""README.md runs as written: every ```python block is executed as it stands (CPU, no download: the
snippets load the bundled demo model), the set-up commands at the top are pinned and what the README
says the first one prints is checked, and every `lrp-triton` command of the README parses (those
that need no download run)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch

import lrp_triton
from lrp_triton import cli
from lrp_triton.demo import DEMO_PROMPT

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = [
    'pip install torch==2.13.0 && pip install . && lrp-triton explain --prompt "a=7 k=3 x=9 q=1 m=4 ?k" --top 3',
    "pip install torch==2.13.0 && pip install -e '.[test]' && python -m pytest -q",
]


def blocks(language: str) -> list[tuple[str, str]]:
    """(the section heading above it, code) of every ```language block, in order."""
    out = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S):
        headings = re.findall(r"^#+ (.+)$", README[:match.start()], flags=re.M)
        out.append((headings[-1] if headings else "top", match.group(1)))
    return out


PYTHON = blocks("python")
OPTIONAL = ("inseq", "captum")  # the frontends of lrp_triton.integrations, each an extra


def commands() -> list[list[str]]:
    """argv (after `lrp-triton`) of every `lrp-triton ...` command in the README's bash blocks."""
    out = []
    for _, code in blocks("bash"):
        for line in code.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "lrp-triton":
                    out.append(words[1:])
    return out


def test_the_readme_has_its_snippets():
    assert len(PYTHON) >= 2 and {"Explaining a HuggingFace model", "The attention op"} <= {h for h, _ in PYTHON}
    assert len(commands()) >= 4


def run_block(code: str, tmp_path, monkeypatch) -> tuple[dict, str]:
    """Executes one snippet as a script in an empty directory; (its globals, what it printed)."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace, printed.getvalue()


@pytest.mark.parametrize("heading, code", PYTHON, ids=[f"{i}-{h}" for i, (h, _) in enumerate(PYTHON)])
def test_python_snippet_runs_as_written(heading, code, tmp_path, monkeypatch):
    for frontend in OPTIONAL:  # a snippet of an integration runs where its extra is installed (CI: always)
        if re.search(rf"^(import|from) {frontend}\b", code, flags=re.M):
            pytest.importorskip(frontend)
    namespace, printed = run_block(code, tmp_path, monkeypatch)
    if heading == "Models larger than one device":  # what its comment says: the plain model's relevance
        assert torch.equal(namespace["result"].relevance, namespace["plain"].relevance)
        assert printed.strip() == "tensor(0.)"
    if heading == "Explaining a HuggingFace model":
        # what the snippet's comments say: the demo model answers 3, and the "3" after "k=" is the most relevant
        result = namespace["result"]
        assert result.relevance.shape == (1, len(DEMO_PROMPT)) and result.relevance.dtype == torch.float32
        assert result.target_tokens == ["3"]
        best = result.top(3)[0]
        assert (best.index, best.token) == (DEMO_PROMPT.index("k=3") + 2, "3")
        assert DEMO_PROMPT in printed.splitlines()  # show(): the heatmap (plain text here) ...
        assert printed.splitlines()[printed.splitlines().index(DEMO_PROMPT) + 1][best.index] == "1"  # ... ranked
        assert (tmp_path / "heatmap.html").read_text().startswith("<!DOCTYPE html>")
    if heading in ("Inside other attribution tools", "Coming from LXT"):  # each route finds the "3" after "k="
        source = DEMO_PROMPT.index("k=3") + 2
        if "out" in namespace:  # inseq
            scores = namespace["out"].sequence_attributions[0].target_attributions[:, -1]
            assert int(torch.nan_to_num(scores, nan=float("-inf")).argmax()) == source
        if "relevance" in namespace:  # Captum's AttnLRP, and the LXT-style code: attribute's numbers
            model, ids = namespace["model"], namespace["tok"](DEMO_PROMPT, return_tensors="pt").input_ids
            want = lrp_triton.attribute(model, ids, target=namespace["tok"].convert_tokens_to_ids("3")).relevance
            torch.testing.assert_close(namespace["relevance"].reshape(want.shape), want, rtol=1e-4, atol=1e-5)
            assert int(want[0].argmax()) == source
        if "result" in namespace:  # Captum's LLM route
            assert int(namespace["result"].token_attr[0].argmax()) == source
    if heading == "The attention op":
        q, v = namespace["q"], namespace["v"]
        assert namespace["relevance_q"].shape == q.shape and namespace["relevance_v"].shape == v.shape
        assert torch.isfinite(namespace["relevance_q"]).all() and namespace["relevance_v"].abs().sum() > 0


def test_setup_commands_are_the_pinned_ones_and_the_first_says_what_the_readme_says(capsys):
    """The top block is exactly the two set-up lines; the first one's `lrp-triton explain` answers 3,
    with the "3" after "k=" the most relevant token, then lists the three most relevant tokens."""
    assert blocks("bash")[0][1].splitlines() == SETUP
    argv = shlex.split(SETUP[0].split("&&")[-1])[1:]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("target '3'")
    top = lines.index(next(line for line in lines if line.startswith("top 3 tokens for target '3'")))
    assert lines[top + 1].split()[:4] == ["1.", "'3'", "token", str(DEMO_PROMPT.index("k=3") + 2)]
    assert len([line for line in lines[top + 1:] if re.match(r" +\d\. ", line)]) == 3


def test_every_readme_command_parses_and_those_without_downloads_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in commands():
        args = cli.parser().parse_args(argv)  # every option the README shows exists
        if args.model is None:  # the bundled demo model: runs offline
            assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
            for out in args.out:
                assert (tmp_path / out).stat().st_size > 0
    capsys.readouterr()
