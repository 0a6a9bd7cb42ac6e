"""GPT-2 adapter: LayerNorm (std held constant), GELU-tanh MLP with Conv1D projections (identity
rule on the activation, Conv1D is linear), learned position embeddings whose relevance is reported
separately from the token embeddings."""

from lrp_triton.models.base import Adapter, layer_norm, plain_mlp

ADAPTER = Adapter(
    family="GPT2",
    model_types=("gpt2",),
    replacements={"LayerNorm": layer_norm, "GPT2MLP": plain_mlp},
    position_embedding_attr="wpe",
    layers_attrs=("h",),
)
