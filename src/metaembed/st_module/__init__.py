"""sentence-transformers integration: MetaEmbed checkpoints as `MultiVectorEncoder`, with budgets.

- `sentence_transformers_metaembed.py` is the one file shipped inside checkpoints (the `MetaEmbedModule`, the
  budget-aware similarity hook); everything else here stays in the library.
- [`build_multi_vector_encoder`] wraps an in-memory model; `MultiVectorEncoder(path, trust_remote_code=True)` loads
  a checkpoint written by `metaembed.checkpoint.save_checkpoint` (or by a `MultiVectorEncoder`'s `save_pretrained`).
- [`BudgetedMaxSim`] is the budgeted MaxSim for losses and evaluators; [`MMRLoss`] is Matryoshka Multi-Vector
  Retrieval for `MultiVectorEncoderTrainer`.

Example:
    >>> from sentence_transformers import MultiVectorEncoder
    >>> model = MultiVectorEncoder("path/to/metaembed-checkpoint", trust_remote_code=True)
    >>> queries = model.encode_query(["what is MaxSim?"], budget=1)
    >>> documents = model.encode_document(["MaxSim sums the best matches."], budget=1)
    >>> model.similarity(queries, documents, budget=(1, 1))
"""

from .encoder import build_multi_vector_encoder, find_metaembed_module, metaembed_module_class
from .files import write_sentence_transformers_files
from .losses import MMRLoss, mmr_loss
from .similarity import BudgetedMaxSim

__all__ = [
    "BudgetedMaxSim",
    "MMRLoss",
    "build_multi_vector_encoder",
    "find_metaembed_module",
    "metaembed_module_class",
    "mmr_loss",
    "write_sentence_transformers_files",
]
