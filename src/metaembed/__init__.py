"""MetaEmbed for the Hugging Face ecosystem.

Meta Tokens appended to a vision-language (or text) backbone give a nested set of multi-vector embeddings; a
budget ``(r_q, r_c)`` picks how many vectors each side uses at serving time, scored with MaxSim.

Example:
    >>> from metaembed import MetaEmbedModel, MetaEmbedProcessor
    >>> model = MetaEmbedModel.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct")
    >>> processor = MetaEmbedProcessor.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct")
"""

from .configuration_metaembed import MetaEmbedConfig
from .modeling_metaembed import MetaEmbedModel, MetaEmbedOutput, maxsim_scores
from .processing_metaembed import MetaEmbedProcessor

__version__ = "0.1.0"

# Saving a model or config writes `auto_map` and copies the shipped code files, so the checkpoint loads with
# AutoConfig / AutoModel (trust_remote_code=True) where this package is not installed.
MetaEmbedConfig.register_for_auto_class()
MetaEmbedModel.register_for_auto_class("AutoModel")

__all__ = ["MetaEmbedConfig", "MetaEmbedModel", "MetaEmbedOutput", "MetaEmbedProcessor", "maxsim_scores"]
