"""The bundled demo model: it ships in the package, loads offline, solves its task, and AttnLRP finds
where each answer came from.

The figures (accuracy, and how often the most relevant prompt token is the answer's source under
AttnLRP and under Input x Gradient) are measured on 200 fresh prompts drawn with a fixed seed of
this test (the training script draws its text from other seeds), and printed; README.md quotes them.
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lrp_triton import attribute
from lrp_triton.demo import DEMO_DIR, DEMO_PROMPT, load, task

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 200
SEED = 20260611

# Floors, set below the measured figures with margin (see README.md, "The demo model").
MIN_ACCURACY = 0.95
MIN_ATTNLRP_VALUE_TOP1 = 0.90
MIN_ATTNLRP_PAIR_TOP1 = 0.95


@pytest.fixture(scope="module")
def demo():
    return load()


def test_files_ship_inside_the_package_and_stay_small():
    names = {p.name for p in DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    total = sum(p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file())
    assert total < 4 * 2 ** 20, f"the demo model files take {total / 2 ** 20:.1f} MiB"
    # setup.py's package_data globs cover every data file of the demo directory
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    data = [p for p in DEMO_DIR.iterdir() if p.is_file() and p.suffix != ".py"]
    assert all(any(p.match(g) for g in package_data["lrp_triton.demo"]) for p in data), data


def test_tokenizer_is_character_level_and_round_trips(demo):
    _, tokenizer = demo
    enc = tokenizer(DEMO_PROMPT)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(enc) == list(DEMO_PROMPT)
    assert tokenizer.decode(enc) == DEMO_PROMPT
    assert len(tokenizer) == len(task.VOCAB)


def _figures(model, tokenizer, examples):
    """Accuracy and top-1 source hit rates (value; value or key of the same pair) per mode."""
    hits = {"accuracy": 0}
    for mode in ("attnlrp", "gradient"):
        hits[f"{mode}_value"] = hits[f"{mode}_pair"] = 0
    for n_pairs in sorted({len(e.prompt) for e in examples}):
        group = [e for e in examples if len(e.prompt) == n_pairs]  # same length: no padding needed
        ids = torch.tensor([tokenizer(e.prompt)["input_ids"] for e in group])
        answers = torch.tensor([tokenizer.convert_tokens_to_ids(e.answer) for e in group])
        with torch.no_grad():
            predicted = model(ids).logits[:, -1].argmax(-1)
        hits["accuracy"] += (predicted == answers).sum().item()
        for mode in ("attnlrp", "gradient"):
            relevance = attribute(model, ids, target=answers, mode=mode, backend="torch").relevance
            top1 = relevance.argmax(-1).tolist()
            for e, t in zip(group, top1):
                hits[f"{mode}_value"] += t == e.value_index
                hits[f"{mode}_pair"] += t in (e.value_index, e.key_index)
    return {k: v / len(examples) for k, v in hits.items()}


def test_accuracy_and_attribution_figures_on_fresh_prompts(demo):
    model, tokenizer = demo
    rng = random.Random(SEED)
    examples = [task.sample(rng) for _ in range(N_PROMPTS)]
    f = _figures(model, tokenizer, examples)
    print(f"\ndemo model on {N_PROMPTS} fresh prompts (seed {SEED}):")
    print(f"  answer accuracy                                     {f['accuracy']:.3f}")
    print(f"  AttnLRP top-1 token is the source value             {f['attnlrp_value']:.3f}")
    print(f"  AttnLRP top-1 token is the source value or key      {f['attnlrp_pair']:.3f}")
    print(f"  Input x Gradient top-1 is the source value          {f['gradient_value']:.3f}")
    print(f"  Input x Gradient top-1 is the source value or key   {f['gradient_pair']:.3f}")
    assert f["accuracy"] >= MIN_ACCURACY
    assert f["attnlrp_value"] >= MIN_ATTNLRP_VALUE_TOP1
    assert f["attnlrp_pair"] >= MIN_ATTNLRP_PAIR_TOP1


def test_demo_prompt_answer_and_its_source(demo):
    model, tokenizer = demo
    ids = tokenizer(DEMO_PROMPT, return_tensors="pt")["input_ids"]
    result = attribute(model, ids, backend="torch", tokenizer=tokenizer)
    assert result.target_tokens == ["3"]  # a=7 k=3 x=9 q=1 m=4 ?k -> 3
    (best, _, _), *_ = result.top(3)
    assert best in (DEMO_PROMPT.index("k=3"), DEMO_PROMPT.index("k=3") + 2)


def test_lrp_triton_demo_is_an_attribute_after_import_alone():
    """`import lrp_triton` then `lrp_triton.demo.DEMO_DIR`, as the README writes it; still no triton import."""
    code = "import lrp_triton, sys; print(lrp_triton.demo.DEMO_DIR); print('triton' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    directory, triton_loaded = proc.stdout.split()
    assert directory == str(DEMO_DIR) and triton_loaded == "False"
