"""XLM-RoBERTa adapter (model type "xlm-roberta"): transformers' modeling_xlm_roberta is RoBERTa's
under the XLMRoberta class prefix, positions numbered from pad_token_id + 1 like RoBERTa's (the
adapter's `position_ids`): see models/roberta.py."""

from lrp_triton.models.roberta import roberta_clone

ADAPTER = roberta_clone("XLM-RoBERTa", ("xlm-roberta",), "XLMRoberta")
