"""mT5 adapter: T5 v1.1's layout under the MT5 class prefix (gated GELU-tanh, T5LayerNorm-style RMS
norm, relative bias in the first layer of each stack, shared by the later ones): see models/t5.py.

No output rescaling: transformers' MT5ForConditionalGeneration computes lm_head(decoder output)
with no d_model^-0.5 factor, although MT5Config forces tie_word_embeddings=True (and, unlike
T5Config and UMT5Config, has no `scale_decoder_outputs`). Reading T5's rule off the tied embeddings
would scale every explained logit by d_model^-0.5 (1/8 at d_model 64, 1/22.6 for mt5-small).
"""

from lrp_triton.models.base import no_output_scale
from lrp_triton.models.t5 import t5_like
from lrp_triton.modules.t5_attention import LRPT5Attention

ADAPTER = t5_like("mT5", ("mt5",), "MT5", LRPT5Attention.from_hf, no_output_scale)
