"""`--device-map` / `--max-memory` / `--offload-folder` (lrp_triton.cli_placement): `explain` and `evaluate`
load the model dispatched by accelerate (here half of it on disk, the rest in CPU memory, from an explicit
map) and give the plain run's results; bad combinations are one line naming the fix."""

from __future__ import annotations

import json
import sys

import pytest
import transformers

from lrp_triton import cli
from lrp_triton.demo import DEMO_DIR

pytest.importorskip("accelerate")

HALF_ON_DISK = {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                "model.layers.1": "disk", "model.norm": "disk", "lm_head": "cpu"}


def run(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def device_map(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(HALF_ON_DISK))
    return path


def loaded_models(monkeypatch):
    """The models the CLI loads with AutoModelForCausalLM.from_pretrained, in order."""
    models, original = [], transformers.AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        models.append(original(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recording)
    return models


def test_explain_with_an_explicit_device_map_gives_the_plain_relevance(capsys, tmp_path, device_map, monkeypatch):
    models = loaded_models(monkeypatch)
    plain, mapped = tmp_path / "plain.json", tmp_path / "mapped.json"
    common = ["explain", "--model", str(DEMO_DIR), "--prompt", "a=7 k=3 x=9 q=1 m=4 ?k", "--top", "0"]
    assert run(capsys, *common, "--device", "cpu", "--out", str(plain))[0] == 0
    code, _, err = run(capsys, *common, "--device-map", str(device_map), "--offload-folder", str(tmp_path / "off"),
                       "--out", str(mapped))
    assert code == 0, err
    (a,), (b,) = json.loads(plain.read_text())["rows"], json.loads(mapped.read_text())["rows"]
    assert a["tokens"] == b["tokens"] and a["target"] == b["target"]
    assert b["relevance"] == pytest.approx(a["relevance"], abs=1e-5) and b["logit"] == pytest.approx(a["logit"])
    dispatched = models[-1]  # layer 1 offloaded to disk: on the meta device outside its forward
    assert dispatched.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert dispatched.model.layers[0].mlp.down_proj.weight.device.type == "cpu"


def test_evaluate_with_a_device_map_gives_the_plain_table(capsys, tmp_path, device_map, monkeypatch):
    models = loaded_models(monkeypatch)
    plain, mapped = tmp_path / "plain.json", tmp_path / "mapped.json"
    common = ["evaluate", "--examples", "2", "--methods", "attnlrp,random"]
    assert run(capsys, *common, "--device", "cpu", "--out", str(plain))[0] == 0
    code, _, err = run(capsys, *common, "--device-map", str(device_map), "--offload-folder", str(tmp_path / "off"),
                       "--out", str(mapped))
    assert code == 0, err
    assert models[-1].model.embed_tokens.weight.device.type == "meta"
    a, b = json.loads(plain.read_text()), json.loads(mapped.read_text())
    for x, y in zip(a["methods"], b["methods"]):
        assert [e.keys() for e in y["per_example"]] == [e.keys() for e in x["per_example"]], x["method"]
        values = [[e[k] for k in sorted(e)] for e in x["per_example"]]  # (approx takes no nested data in pytest 9.2)
        assert [[e[k] for k in sorted(e)] for e in y["per_example"]] == [pytest.approx(v, abs=1e-4) for v in values]


@pytest.mark.parametrize("args, message", [
    (["--max-memory", "cpu=1GiB"], "only apply with --device-map"),
    (["--device-map", "everywhere"], "pass one of auto, balanced, balanced_low_0, sequential, cpu, or a .json"),
    (["--device-map", "auto", "--device", "cpu"], "pass one of them"),
    (["--device-map", "MAP", "--prompt", "a=1 ?a"], "puts modules on disk; pass --offload-folder DIR"),
    (["--device-map", "BAD"], "not valid JSON"),
    (["--device-map", "auto", "--max-memory", "lots"], "DEVICE=SIZE pairs"),
])
def test_bad_placement_is_one_line_with_the_fix(capsys, tmp_path, device_map, args, message):
    (tmp_path / "bad.json").write_text("{nope")
    args = [{"MAP": str(device_map), "BAD": str(tmp_path / "bad.json")}.get(a, a) for a in args]
    code, out, err = run(capsys, "explain", *args)
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("lrp-triton: error: ") and message in line, err


def test_device_map_without_accelerate_names_the_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate raises ImportError
    code, _, err = run(capsys, "evaluate", "--device-map", "auto")
    assert code == 2 and "--device-map needs accelerate" in err and "pip install accelerate" in err
