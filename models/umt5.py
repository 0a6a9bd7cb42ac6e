"""umT5 adapter: T5 v1.1's layout under the UMT5 class prefix, with a relative-bias table in every
self-attention layer (not only the first of each stack), bucketed by UMT5Attention's own bucket
method (LRPUMT5Attention), and UMT5Attention's call signature.

Output rescaling as transformers' UMT5ForConditionalGeneration decides it: by the config's
`scale_decoder_outputs` (the checkpoint's tie_word_embeddings, kept by UMT5Config), see models/t5.py.
"""

from lrp_triton.models.t5 import output_scale, t5_like
from lrp_triton.modules.t5_attention import LRPUMT5Attention

ADAPTER = t5_like("umT5", ("umt5",), "UMT5", LRPUMT5Attention.from_hf, output_scale)
