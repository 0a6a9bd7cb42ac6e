"""mBART adapter: BART's layers, rules and layout (models/bart.py) with pre-norm layers and a final
LayerNorm closing each stack (both nn.LayerNorm: std held constant)."""

from lrp_triton.models.bart import bart_like

ADAPTER = bart_like("mBART", ("mbart",))
