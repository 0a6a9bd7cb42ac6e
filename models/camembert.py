"""CamemBERT adapter: transformers' modeling_camembert is RoBERTa's under the Camembert class
prefix, positions numbered from pad_token_id + 1 like RoBERTa's (the adapter's `position_ids`):
see models/roberta.py."""

from lrp_triton.models.roberta import roberta_clone

ADAPTER = roberta_clone("CamemBERT", ("camembert",), "Camembert")
