"""inseq methods "attnlrp" / "cp-lrp" (lrp_triton.integrations.inseq): the same numbers as
lrp_triton.attribute at every generated step, one forward pass for K tokens, O(N) memory, and the
model restored when inseq releases it. Skipped without the extra (`pip install 'lrp_triton[inseq]'`;
CI installs it)."""

from __future__ import annotations

import gc
import os
import random
import re

import pytest
import torch

inseq = pytest.importorskip("inseq")

import lrp_triton  # noqa: E402
import lrp_triton.integrations.inseq  # noqa: E402,F401  (registers the methods)
from frontend_models import WORDS, causal_lm, t5, word_tokenizer  # noqa: E402
from lrp_triton.apply import active_handle  # noqa: E402
from scaled_close import assert_rel_close  # noqa: E402

TOK = word_tokenizer()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def counting_forwards(module) -> list:
    """A list that grows by one at each forward pass of `module`."""
    calls = []
    module.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


def expected(model, prompt: str, text: str, mode: str = "attnlrp", contrast_text: str | None = None):
    """lrp_triton.attribute at the positions inseq explains: [K, N - 1] relevance, K generated tokens."""
    ids = TOK(text, return_tensors="pt").input_ids
    start = len(TOK(prompt).input_ids)
    positions = list(range(start - 1, ids.shape[1] - 1))
    contrast = None
    if contrast_text is not None:
        alt = TOK(contrast_text).input_ids
        contrast = [alt[p + 1] for p in positions]
    r = lrp_triton.attribute(model, ids[:, :-1], position=positions, target=[int(ids[0, p + 1]) for p in positions],
                             contrast=contrast, mode=mode)
    return r.relevance[0], ids


def per_step(out) -> torch.Tensor:
    """inseq's [tokens, steps] target attributions as [steps, tokens - 1] (NaN = not attributed = 0)."""
    t = out.sequence_attributions[0].target_attributions
    return torch.nan_to_num(t[:-1].T.float(), nan=0.0)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_generation_attribution_equals_attribute_from_one_forward_pass(family):
    rng = random.Random(f"inseq-{family}")
    model = causal_lm(family, seed=len(family))
    prompt, continuation = words(rng, 7), " " + words(rng, 5)
    want, ids = expected(model, prompt, prompt + continuation)
    m = inseq.load_model(model, "attnlrp", tokenizer=TOK)
    forwards = counting_forwards(model.get_decoder())
    out = m.attribute(prompt, prompt + continuation, attributed_fn="logit", show_progress=False)
    assert len(forwards) == 1  # K = 5 generated tokens, one forward pass
    got = per_step(out)
    assert got.shape == want.shape == (5, ids.shape[1] - 1)
    assert_rel_close(got, want, 1e-5)
    assert [t.token for t in out.sequence_attributions[0].target][-5:] == continuation.split()
    m.attribution_method.unhook()
    assert active_handle(model) is None


def test_contrastive_targets_and_cp_lrp_equal_attribute_with_contrast():
    rng = random.Random("inseq-contrast")
    model = causal_lm("llama", seed=3)
    prompt, continuation, alternative = words(rng, 6), " " + words(rng, 3), " " + words(rng, 3)
    want, _ = expected(model, prompt, prompt + continuation, mode="cp-lrp", contrast_text=prompt + alternative)
    m = inseq.load_model(model, "cp-lrp", tokenizer=TOK)
    out = m.attribute(prompt, prompt + continuation, attributed_fn="contrast_logits_diff",
                      contrast_targets=prompt + alternative, show_progress=False)
    assert_rel_close(per_step(out), want, 1e-5)
    assert "→" in out.sequence_attributions[0].target[-1].token  # inseq shows "target → contrast"


def test_applied_while_hooked_restored_when_released_and_probabilities_refused():
    model = causal_lm("llama", seed=5)
    ids = TOK("the cat sat on a mat", return_tensors="pt").input_ids
    before = {name: type(m) for name, m in model.named_modules()}
    logits = model(ids).logits
    m = inseq.load_model(model, "attnlrp", tokenizer=TOK)
    assert active_handle(model).mode == "attnlrp"
    torch.testing.assert_close(model(ids).logits, logits, rtol=1e-5, atol=1e-5)  # forward unchanged
    with pytest.raises(NotImplementedError, match="explains a logit"):
        m.attribute("the cat", "the cat sat on", attributed_fn="probability", show_progress=False)
    m.attribute("the cat", "the cat sat on", show_progress=False)  # the default while hooked: the logit
    del m
    gc.collect()  # the inseq model released: the model is itself again
    assert active_handle(model) is None
    assert {name: type(m) for name, m in model.named_modules()} == before
    # a model the user applied stays applied, with the user's handle
    with lrp_triton.apply(model, "attnlrp") as handle:
        m = inseq.load_model(model, "attnlrp", tokenizer=TOK)
        m.attribution_method.unhook()
        assert active_handle(model) is handle
        with pytest.raises(ValueError, match="applied with mode 'attnlrp'"):
            inseq.load_model(model, "cp-lrp", tokenizer=TOK)


def peak_kib(fn) -> int:
    """Peak resident memory while fn() runs, above what was resident before (Linux VmHWM, reset).

    Run fn once before at the same size: the heap then holds what fn's small allocations need, and
    what is left is what fn maps afresh; glibc maps every allocation over 32 MiB afresh (an N x N
    attention buffer here), so those always count."""
    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs")
def test_memory_is_linear_in_n_for_a_model_inseq_loaded_with_eager_attention(tmp_path, monkeypatch):
    """inseq loads a directory with attn_implementation="eager"; the attribution still runs
    lrp_triton's attention (eager's is never called), and at N = 1024 its peak memory stays under a
    tenth of one of eager's N x N attention buffers (16 heads x N^2 float32 = 64 MiB), which the
    same measure sees in the plain eager forward."""
    causal_lm("llama", seed=7, num_attention_heads=16, num_key_value_heads=4, head_dim=2).save_pretrained(tmp_path)
    TOK.save_pretrained(tmp_path)
    m = inseq.load_model(str(tmp_path), "attnlrp")
    assert m.model.config._attn_implementation == "lrp_triton"  # applied while hooked ...
    rng = random.Random("inseq-long")
    n = 1024
    prompt, continuation = words(rng, n - 3), " " + words(rng, 3)
    ids = TOK(prompt + continuation, return_tensors="pt").input_ids
    m.attribution_method.unhook()
    assert m.model.config._attn_implementation == "eager"  # ... over what inseq loaded it with
    with torch.no_grad():
        eager = [peak_kib(lambda: m.model(ids)) for _ in range(2)][-1]
    m.attribution_method.hook()
    from transformers.models.llama import modeling_llama

    def no_eager(*args, **kwargs):
        raise AssertionError("eager attention ran")
    monkeypatch.setattr(modeling_llama, "eager_attention_forward", no_eager)
    forwards = counting_forwards(m.model.model)
    peak = [peak_kib(lambda: m.attribute(prompt, prompt + continuation, attributed_fn="logit",
                                         show_progress=False)) for _ in range(2)][-1]
    buffer_kib = 16 * n * n * 4 // 1024
    print(f"\nN={n}, 3 generated tokens: peak memory above resident {peak} KiB (attribution), {eager} KiB (plain "
          f"eager forward, no grad); one eager attention buffer {buffer_kib} KiB")
    assert eager >= buffer_kib  # the measure sees eager's N x N buffers
    assert peak * 10 <= buffer_kib
    assert len(forwards) == 2  # one forward pass per call


def test_t5_through_attribute_target():
    rng = random.Random("inseq-t5")
    model = t5(seed=11)
    source, target = words(rng, 7), words(rng, 4)
    m = inseq.load_model(model, "attnlrp", tokenizer=TOK)
    forwards = counting_forwards(model.get_decoder())
    out = m.attribute(source, target, attribute_target=True, attributed_fn="logit", show_progress=False)
    assert len(forwards) == 1
    seq = out.sequence_attributions[0]
    src = TOK(source, return_tensors="pt").input_ids
    dec = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), TOK(target, return_tensors="pt").input_ids],
                    dim=1)
    positions = list(range(dec.shape[1] - 1))
    r = lrp_triton.attribute(model, src, decoder_input_ids=dec[:, :-1], position=positions,
                             target=[int(dec[0, p + 1]) for p in positions])
    assert_rel_close(seq.source_attributions.T.float(), r.relevance[0], 1e-5)
    assert_rel_close(torch.nan_to_num(seq.target_attributions[:-1].T.float()), r.decoder_relevance[0], 1e-5)


def test_a_batch_inseq_generates_with_left_padding_is_explained_row_by_row():
    """Rows of different lengths are padded in inseq's batch; each row's steps (the last K tokens,
    as inseq counts them in the padded batch) carry attribute's numbers on that row's own tokens."""
    model = causal_lm("llama", seed=13)
    m = inseq.load_model(model, "attnlrp", tokenizer=TOK)
    out = m.attribute(["the cat sat", "a dog ran to the"], generation_args={"max_new_tokens": 3, "do_sample": False},
                      attributed_fn="logit", show_progress=False)
    lengths = []
    for seq in out.sequence_attributions:
        ids = torch.tensor([[t.id for t in seq.target]])
        n, k = ids.shape[1], seq.target_attributions.shape[1]
        lengths.append(n)
        want = lrp_triton.attribute(model, ids[:, :-1], position=list(range(n - 1 - k, n - 1)),
                                    target=ids[0, n - k:].tolist()).relevance[0]
        assert_rel_close(torch.nan_to_num(seq.target_attributions[:-1].T.float()), want, 1e-5)
    assert lengths[0] != lengths[1]
