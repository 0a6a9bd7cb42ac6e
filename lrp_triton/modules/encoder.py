"""Encoder (BERT / RoBERTa / DistilBERT / ELECTRA / ViT) layers with LRP rules on their nonlinearities.

- `LRPDenseActivation`: BertIntermediate / RobertaIntermediate, act(dense(x)); identity rule on the
  activation (g = g_y * act(x)/x). Records its neurons for latent relevance.
- `LRPPooler`: BertPooler / ViTPooler, act(dense(h[:, 0])), usually tanh; identity rule.
- `LRPHeadTransform`: BertPredictionHeadTransform / ElectraGeneratorPredictions, LayerNorm(act(dense(x)));
  identity rule on the activation, the constant-std rule on the LayerNorm.
- `LRPRobertaLMHead`: decoder(LayerNorm(gelu(dense(x)))), the same rules.
- `LRPClassificationHead`: RoBERTa-style (and ELECTRA's) out_proj(act(dense(h[:, 0]))), tanh (RoBERTa,
  XLM-R, CamemBERT) or GELU (ELECTRA); identity rule on the activation.
- `LRPDiscriminatorHead`: ElectraDiscriminatorPredictions, dense_prediction(act(dense(h))) squeezed to one
  logit per token; identity rule.
- `LRPActivation`: a bare activation module (DistilBERT's masked-LM head applies the model's own
  `activation`); identity rule.
Linear layers keep their exact gradient (epsilon rule), unless `linear_rule="gamma"` swaps them.
tanh goes through `lrp_tanh`, whose backward is the identity-rule ratio tanh(x)/x. Each layer is
built with `from_hf(module, options)` (`lrp_triton.options.LRPOptions`).
"""

from __future__ import annotations

from torch import nn

from lrp_triton.modules.mlp import activation_name
from lrp_triton.modules.norms import LRPLayerNorm
from lrp_triton.ops.elementwise import lrp_tanh
from lrp_triton.ops.mlp import lrp_activation
from lrp_triton.options import LatentTaps, LRPOptions


def encoder_activation_name(act) -> str:
    """activation_name, plus "tanh" for nn.Tanh / torch.tanh."""
    if isinstance(act, nn.Tanh) or getattr(act, "__name__", None) == "tanh":
        return "tanh"
    return activation_name(act)


def lrp_act(x, activation: str, backend: str):
    """act(x) with the identity rule (R_x = R_y)."""
    if activation == "tanh":
        return lrp_tanh(x)
    return lrp_activation(x, activation, backend=backend)


class LRPDenseActivation(nn.Module):
    """Drop-in for BertIntermediate / RobertaIntermediate (dense, intermediate_act_fn)."""

    def __init__(self, dense, activation: str, *, backend: str, taps: LatentTaps | None = None):
        super().__init__()
        self.dense, self.activation, self.backend, self.taps = dense, activation, backend, taps

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.dense, encoder_activation_name(module.intermediate_act_fn), backend=options.backend,
                   taps=options.taps)

    def forward(self, x):
        neurons = lrp_act(self.dense(x), self.activation, self.backend)
        if self.taps is not None:
            self.taps.neurons(neurons)
        return neurons


class LRPPooler(nn.Module):
    """Drop-in for BertPooler / RobertaPooler / ViTPooler / DeiTPooler: act(dense(h[:, 0]))."""

    def __init__(self, dense, activation: str, *, backend: str):
        super().__init__()
        self.dense, self.activation, self.backend = dense, activation, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.dense, encoder_activation_name(module.activation), backend=options.backend)

    def forward(self, hidden_states):
        return lrp_act(self.dense(hidden_states[:, 0]), self.activation, self.backend)


class LRPHeadTransform(nn.Module):
    """Drop-in for BertPredictionHeadTransform (transform_act_fn) and ElectraGeneratorPredictions
    (activation): LayerNorm(act(dense(x)))."""

    def __init__(self, dense, activation: str, layer_norm: LRPLayerNorm, *, backend: str):
        super().__init__()
        self.dense, self.activation, self.LayerNorm, self.backend = dense, activation, layer_norm, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        act = module.transform_act_fn if hasattr(module, "transform_act_fn") else module.activation
        return cls(module.dense, encoder_activation_name(act), LRPLayerNorm.from_hf(module.LayerNorm, options),
                   backend=options.backend)

    def forward(self, x):
        return self.LayerNorm(lrp_act(self.dense(x), self.activation, self.backend))


class LRPRobertaLMHead(nn.Module):
    """Drop-in for RobertaLMHead: decoder(layer_norm(gelu(dense(x)))); `bias` is the decoder's bias."""

    def __init__(self, dense, layer_norm: LRPLayerNorm, decoder, bias, *, backend: str):
        super().__init__()
        self.dense, self.layer_norm, self.decoder, self.bias = dense, layer_norm, decoder, bias
        self.backend = backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.dense, LRPLayerNorm.from_hf(module.layer_norm, options), module.decoder, module.bias,
                   backend=options.backend)

    def forward(self, features, **kwargs):
        x = lrp_act(self.dense(features), "gelu", self.backend)  # transformers.activations.gelu: erf GELU
        return self.decoder(self.layer_norm(x))


class LRPClassificationHead(nn.Module):
    """Drop-in for RobertaClassificationHead and its copies (tanh) and ElectraClassificationHead (its
    `activation`, GELU): out_proj(act(dense(h[:, 0]))) (dropout: eval identity)."""

    def __init__(self, dense, out_proj, dropout, activation: str = "tanh", *, backend: str = "auto"):
        super().__init__()
        self.dense, self.out_proj, self.dropout = dense, out_proj, dropout
        self.activation, self.backend = activation, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        act = getattr(module, "activation", None)  # RoBERTa's head calls torch.tanh, ELECTRA's holds a module
        return cls(module.dense, module.out_proj, module.dropout,
                   "tanh" if act is None else encoder_activation_name(act), backend=options.backend)

    def forward(self, features, **kwargs):
        x = self.dropout(features[:, 0, :])
        x = lrp_act(self.dense(x), self.activation, self.backend)
        return self.out_proj(self.dropout(x))


class LRPDiscriminatorHead(nn.Module):
    """Drop-in for ElectraDiscriminatorPredictions: dense_prediction(act(dense(h))).squeeze(-1), one
    logit per token."""

    def __init__(self, dense, dense_prediction, activation: str, *, backend: str):
        super().__init__()
        self.dense, self.dense_prediction, self.activation, self.backend = dense, dense_prediction, activation, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(module.dense, module.dense_prediction, encoder_activation_name(module.activation),
                   backend=options.backend)

    def forward(self, hidden_states):
        return self.dense_prediction(lrp_act(self.dense(hidden_states), self.activation, self.backend)).squeeze(-1)


class LRPActivation(nn.Module):
    """Drop-in for a bare activation module: act(x) with the identity rule."""

    def __init__(self, activation: str, *, backend: str):
        super().__init__()
        self.activation, self.backend = activation, backend

    @classmethod
    def from_hf(cls, module, options: LRPOptions):
        return cls(encoder_activation_name(module), backend=options.backend)

    def forward(self, x):
        return lrp_act(x, self.activation, self.backend)
