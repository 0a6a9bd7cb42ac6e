"""A model dispatched by accelerate (`device_map`, `cpu_offload`, `disk_offload`, `dispatch_model`) with
half its layers offloaded to the CPU or disk: the same relevance as the plain model, returned on the
input's device, and `apply` + `remove` leave the offloaded model as it was (hooks, meta weights,
outputs). The GPU tests run the layers on CUDA devices with inputs on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_triton
from lrp_triton.accelerate_hooks import ForwardedHook, check_offloaded_names, weights_loaded
from lrp_triton.modules.norms import LRPRMSNorm
from model_zoo import BY_NAME, text_inputs, tiny_model

accelerate = pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")


def inputs(vocab: int):
    ids = torch.randint(0, vocab, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    return ids, mask


def assert_same_relevance(out, ref):
    torch.testing.assert_close(out.relevance, ref.relevance, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logit, ref.logit, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.target, ref.target)


def test_from_pretrained_with_half_the_layers_on_disk_gives_the_plain_relevance(tmp_path):
    plain = tiny_model("llama")
    plain.save_pretrained(tmp_path / "model")
    device_map = {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "disk", "lm_head": "cpu"}
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model", device_map=device_map,
                                                             offload_folder=tmp_path / "offload").eval()
    norm = model.model.layers[1].input_layernorm
    assert norm.weight.device.type == "meta" and model.model.embed_tokens.weight.device.type == "meta"
    ids, mask = inputs(plain.config.vocab_size)
    ref = lrp_triton.attribute(plain, ids, attention_mask=mask, position=[-1, -3], contrast=[[5], [7]])
    out = lrp_triton.attribute(model, ids, attention_mask=mask, position=[-1, -3], contrast=[[5], [7]])
    assert_same_relevance(out, ref)
    assert out.relevance.device == ids.device
    assert out.relevance[0, :, :3].abs().max() == 0  # padding takes none
    assert norm.weight.device.type == "meta"  # offloaded again after the call


def test_cpu_and_disk_offloaded_layers_give_the_plain_relevance_and_apply_undoes(tmp_path):
    plain = tiny_model("llama")
    model = copy.deepcopy(plain)
    accelerate.cpu_offload(model.model.layers[0], execution_device="cpu")
    accelerate.disk_offload(model.model.layers[1], tmp_path / "offload", execution_device="cpu")
    originals = {name: m for name, m in model.named_modules()}
    hooks = {name: m._hf_hook for name, m in originals.items() if hasattr(m, "_hf_hook")}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    ids, mask = inputs(plain.config.vocab_size)
    with torch.no_grad():
        logits = plain(ids, attention_mask=mask).logits
    for mode in ("attnlrp", "cp-lrp"):
        assert_same_relevance(lrp_triton.attribute(model, ids.tolist(), attention_mask=mask, mode=mode),
                              lrp_triton.attribute(plain, ids, attention_mask=mask, mode=mode))

    ref = lrp_triton.attribute(plain, ids, attention_mask=mask, latent=True)
    with lrp_triton.apply(model):
        norm = model.model.layers[1].post_attention_layernorm
        assert isinstance(norm, LRPRMSNorm) and isinstance(norm._hf_hook, ForwardedHook)
        assert norm._hf_hook.hook is hooks["model.layers.1.post_attention_layernorm"]
        out = lrp_triton.attribute(model, ids, attention_mask=mask, latent=True)
        assert norm.weight.device.type == "meta"
    assert_same_relevance(out, ref)
    for a, b in zip(out.latent["neurons"], ref.latent["neurons"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert {name: m for name, m in model.named_modules()} == originals  # the very same modules ...
    assert {name: m._hf_hook for name, m in originals.items() if hasattr(m, "_hf_hook")} == hooks  # ... and hooks
    assert all(p.device.type == "meta" for p in model.model.layers.parameters())  # still offloaded
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, logits)


@pytest.mark.parametrize("family, preload", [("qwen2_moe", None), ("llama", ["LlamaDecoderLayer"])])
def test_layers_built_inside_a_replacement_and_preloaded_blocks_load_their_offloaded_weights(family, preload):
    # qwen2_moe: the LRP MoE block builds its own LRP experts, which must run the HF experts' hook;
    # preload: the decoder layer's hook loads the tensors of its whole subtree, LRP norms included
    plain = tiny_model(family)
    model = copy.deepcopy(plain)
    accelerate.cpu_offload(model, execution_device="cpu", preload_module_classes=preload)
    assert all(p.device.type == "meta" for p in model.parameters())
    ids, mask = inputs(plain.config.vocab_size)
    assert_same_relevance(lrp_triton.attribute(model, ids, attention_mask=mask),
                          lrp_triton.attribute(plain, ids, attention_mask=mask))


def test_a_preloaded_block_whose_lrp_layer_renames_its_tensors_is_refused():
    # ViT's LRP MLP holds fc1 / fc2 as fc / proj: a hook loading the whole ViTModel by name could not find them
    model = accelerate.cpu_offload(BY_NAME["vit"].build(), execution_device="cpu", preload_module_classes=["ViTModel"])
    with pytest.raises(NotImplementedError, match="ViTMLP sits in ViTModel.*LRPMLP holds them under other names "
                                                  r"\(fc.bias, fc.weight, proj.bias, proj.weight\)"):
        lrp_triton.attribute(model, pixel_values=torch.randn(1, 3, 32, 32))


def test_an_lrp_layer_left_with_meta_weights_is_refused():
    model = tiny_model("llama")
    norm = model.model.layers[0].input_layernorm
    norm.weight = nn.Parameter(torch.empty_like(norm.weight, device="meta"))  # no hook would load it
    with pytest.raises(NotImplementedError, match="LRPRMSNorm .*holds weight on the meta device"):
        lrp_triton.apply(model)
    assert model.model.layers[0].input_layernorm is norm  # nothing stays applied


def test_an_offloaded_module_whose_lrp_layer_holds_other_tensors_is_refused():
    class Hook:  # what an offloading AlignDevicesHook exposes
        offload, place_submodules, offload_buffers = True, False, False

    original, replacement = nn.Linear(3, 3), nn.Module()
    replacement.scale = nn.Parameter(torch.ones(3))
    with pytest.raises(NotImplementedError, match="Linear is offloaded by accelerate.*scale"):
        check_offloaded_names(original, replacement, Hook())
    replacement = nn.Module()
    replacement.weight = nn.Parameter(torch.ones(3, 3))
    check_offloaded_names(original, replacement, Hook())  # a subset of the original's names is fine


VISION_FIELDS = ("relevance", "position_relevance", "patch_relevance", "cls_relevance", "logit")


def assert_same_fields(out, ref, fields):
    for field in fields:
        torch.testing.assert_close(getattr(out, field), getattr(ref, field), atol=1e-5, rtol=1e-5, msg=field)


@pytest.mark.parametrize("name, offload", [("vit", "cpu"), ("dinov2_with_registers", "disk"), ("clip", "cpu")])
def test_vision_models_offloaded_whole_give_the_plain_relevance(name, offload, tmp_path):
    # the position / class-token (and register) embeddings are read after the backward pass, outside any
    # layer: loaded for that read by the embeddings' own hooks; CLIP: the joint model's similarity
    entry = BY_NAME[name]
    plain = entry.build()
    model = copy.deepcopy(plain)
    if offload == "cpu":
        accelerate.cpu_offload(model, execution_device="cpu")
    else:
        accelerate.disk_offload(model, tmp_path / "offload", execution_device="cpu")
    assert all(p.device.type == "meta" for p in model.parameters())
    inputs = entry.inputs(2, pad=2) if name == "clip" else {"pixel_values": torch.randn(2, 3, 32, 32)}
    out, ref = lrp_triton.attribute(model, **inputs), lrp_triton.attribute(plain, **inputs)
    assert_same_fields(out, ref, VISION_FIELDS + (("pixel_relevance",) if name == "clip" else ()))
    if name == "clip":
        torch.testing.assert_close(out.extras["image_position_relevance"], ref.extras["image_position_relevance"])
    assert all(p.device.type == "meta" for p in model.parameters())  # offloaded again after the read


def test_vision_model_with_its_embeddings_on_disk_by_device_map_gives_the_plain_relevance(tmp_path):
    plain = BY_NAME["vit"].build()
    plain.save_pretrained(tmp_path / "model")
    device_map = {"vit.embeddings": "disk", "vit.layers.0": "cpu", "vit.layers.1": "disk", "vit.layernorm": "cpu",
                  "classifier": "disk"}
    model = transformers.ViTForImageClassification.from_pretrained(tmp_path / "model", device_map=device_map,
                                                                   offload_folder=tmp_path / "offload").eval()
    assert model.vit.embeddings.position_embeddings.device.type == "meta"
    pixels = torch.randn(2, 3, 32, 32)
    assert_same_fields(lrp_triton.attribute(model, pixel_values=pixels, target=[1, 3]),
                       lrp_triton.attribute(plain, pixel_values=pixels, target=[1, 3]), VISION_FIELDS)
    assert model.vit.embeddings.cls_token.device.type == "meta"


@pytest.mark.parametrize("name", ["deberta-v2-cls", "deberta-cls"])
def test_deberta_offloaded_whole_gives_the_plain_relevance(name, tmp_path):
    # HF's encoder reads rel_embeddings.weight in get_rel_embedding without calling the module, so its hook
    # never loads it (the offloaded model's own forward fails on the meta tensor); attribute loads it for the call
    plain = BY_NAME[name].build()
    model = accelerate.disk_offload(copy.deepcopy(plain), tmp_path / "offload", execution_device="cpu")
    ids, mask, types = text_inputs(2, 11, pad_last=3)
    extra = {"token_type_ids": types} if name == "deberta-cls" else {}
    out = lrp_triton.attribute(model, ids, attention_mask=mask, target=[2, 0], **extra)
    ref = lrp_triton.attribute(plain, ids, attention_mask=mask, target=[2, 0], **extra)
    assert_same_fields(out, ref, ("relevance", "position_relevance", "logit"))
    assert model.deberta.encoder.rel_embeddings.weight.device.type == "meta"  # offloaded again


def test_weights_loaded_by_the_enclosing_block_that_places_its_subtree():
    class Block(nn.Module):  # preloaded: one hook on the block loads its children's tensors too
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(3, 4))
            self.scale = nn.Parameter(torch.randn(4))

    plain = nn.Sequential(Block(), nn.Linear(4, 2))
    model = accelerate.cpu_offload(copy.deepcopy(plain), execution_device="cpu", preload_module_classes=["Block"])
    inner, top = model[0].inner[0], model[1]
    assert not hasattr(inner, "_hf_hook") and inner.weight.device.type == "meta"
    with weights_loaded(model, inner):
        torch.testing.assert_close(inner.weight, plain[0].inner[0].weight, rtol=0, atol=0)
        assert model[0].scale.device.type == "cpu" and top.weight.device.type == "meta"  # the block only
    assert inner.weight.device.type == "meta" and model[0].scale.device.type == "meta"
    with weights_loaded(model, top, subtree=False):
        torch.testing.assert_close(top.weight, plain[1].weight, rtol=0, atol=0)
    assert top.weight.device.type == "meta"
    with weights_loaded(plain, plain[0]):  # nothing offloaded: nothing to do
        assert plain[0].scale.device.type == "cpu"


def gpu_case(device_map, devices: int):
    if torch.cuda.device_count() < devices:
        pytest.skip(f"needs {devices} CUDA devices")
    plain = tiny_model("llama")
    ids, mask = inputs(plain.config.vocab_size)
    ref = lrp_triton.attribute(copy.deepcopy(plain).cuda(), ids.cuda(), attention_mask=mask.cuda(), backend="triton")
    model = accelerate.dispatch_model(plain, device_map)
    out = lrp_triton.attribute(model, ids, attention_mask=mask, backend="triton")
    assert out.relevance.device == ids.device and out.logit.device == ids.device
    torch.testing.assert_close(out.relevance, ref.relevance.cpu(), atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(out.logit, ref.logit.cpu(), atol=2e-4, rtol=2e-4)


@pytest.mark.gpu
def test_layers_offloaded_to_the_cpu_run_on_the_gpu_and_relevance_comes_back_to_the_cpu():
    gpu_case({"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": "cpu", "model.layers.1": 0,
              "model.norm": "cpu", "lm_head": 0}, devices=1)


@pytest.mark.gpu
def test_layers_on_two_gpus_give_the_one_gpu_relevance():
    gpu_case({"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 1,
              "model.norm": 1, "lm_head": 1}, devices=2)
