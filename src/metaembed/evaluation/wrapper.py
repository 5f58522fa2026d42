"""The mteb model for MetaEmbed checkpoints: mteb's ``MultiVectorWrapper`` search path, plus budgets and instructions.

:class:`MetaEmbedWrapper` subclasses mteb's ``MultiVectorWrapper`` and keeps its search plumbing (``index``,
``search``, full-corpus MaxSim search). It changes three things:

- **Budgets.** ``budget=(r_q, r_c)`` (an mteb experiment kwarg) keeps the first ``r_q`` query vectors and ``r_c``
  candidate vectors.
- **Instructions.** A task's prompt (``TaskMetadata.prompt``, e.g. ViDoRe's) goes to the MetaEmbed processor as the
  instruction, placed where the model was trained to read it; MMEB tasks carry theirs inside the query text.
- **Encode once.** With a shared :class:`EmbeddingStore`, every input is encoded once at the full budget and every
  budget reads a prefix of those vectors (the budget sweep). Per-query candidate lists (``top_ranked``) are scored
  block-wise on the model's device (:mod:`.candidate_scoring`).

Example:
    >>> import mteb
    >>> from metaembed.evaluation import MetaEmbedWrapper, get_mmeb_tasks
    >>> model = MetaEmbedWrapper("my-org/metaembed-qwen2.5-vl-3b", budget=(4, 8))
    >>> results = mteb.evaluate(model, get_mmeb_tasks(["VOC2007"]))
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from mteb._create_dataloaders import create_dataloader
from mteb.models.sentence_transformer_wrapper import MultiVectorWrapper
from mteb.types import PromptType

from .backends import (
    EncoderBackend,
    SentenceTransformersBackend,
    TransformersBackend,
    default_device,
    model_kwargs,
)
from .candidate_scoring import rank_candidate_lists
from .checkpoint_info import resolve_checkpoint
from .mmeb_tasks import MMEB_TASK_CLASSES
from .model_meta import metaembed_model_meta

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.timing import TimingStack

logger = logging.getLogger(__name__)


class EmbeddingStore:
    """Full-budget embeddings shared by the per-budget models of one sweep.

    Keys name what was encoded: task, split, role, instruction and a digest of the item ids. Values are
    ``[n, full budget, d]`` tensors on the CPU in ``dtype``.

    Args:
        dtype: Storage dtype (float32 keeps scores identical to a direct encode; bfloat16 halves the memory).
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self._entries: dict[tuple, torch.Tensor] = {}
        self.encode_calls = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        return self._entries.get(key)

    def put(self, key: tuple, embeddings: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        self._entries[key] = embeddings.to(self.dtype)
        return self._entries[key]

    def clear(self, task_name: str | None = None) -> None:
        """Drops every entry, or only those of ``task_name``."""
        for key in [k for k in self._entries if task_name is None or k[0] == task_name]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())


def _ids_digest(ids: Sequence[Any]) -> str:
    digest = hashlib.sha1()
    for value in ids:
        digest.update(str(value).encode())
        digest.update(b"\0")
    return f"{len(ids)}:{digest.hexdigest()}"


def _image_value(value: Any) -> Any:
    """What the processor gets for an ``image`` cell: a file path when it is on disk, else a PIL image."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("path") and not value.get("bytes") and os.path.isfile(value["path"]):
            return value["path"]
        if value.get("bytes"):
            from PIL import Image

            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return value["path"]
        return None
    return value


def undecoded(dataset: Any) -> Any:
    """The dataset with its ``image`` column left as ``{"path", "bytes"}`` (no decoding); other datasets unchanged."""
    import datasets

    if "image" in dataset.column_names and isinstance(dataset.features["image"], datasets.Image):
        return dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def dataset_items(dataset: Any, start: int, stop: int) -> list[Any]:
    """Rows ``start:stop`` of an mteb query or corpus dataset as MetaEmbed items (text, or ``{"text", "image"}``).

    Pass the dataset through :func:`undecoded` first, so image files are opened by the processor, batch by batch.
    """
    rows = dataset[start:stop]
    count = stop - start
    texts = rows.get("text") or [None] * count
    images = rows.get("image") or [None] * count
    items: list[Any] = []
    for text, image in zip(texts, images):
        image = _image_value(image)
        items.append((text or "") if image is None else {"text": text or None, "image": image})
    return items


class MetaEmbedWrapper(MultiVectorWrapper):
    """An mteb search model for a MetaEmbed checkpoint at one budget.

    Args:
        model: Hub repo id or local directory (for a meta built by :func:`.metaembed_model_meta`, mteb passes the
            recorded ``org/name`` here and the directory as ``checkpoint_path``).
        revision: Hub revision (resolved to a commit hash); recorded as given for a directory.
        device: Defaults to CUDA when available.
        budget: ``(r_q, r_c)``; None for the full budget. Validated by the checkpoint's config.
        checkpoint_path: The local directory to load when ``model`` is only the name to record.
        backend: ``"sentence-transformers"`` (mteb's ``MultiVectorWrapper`` loading ``MultiVectorEncoder``),
            ``"transformers"`` (``AutoModel``/``AutoProcessor``), or ``"auto"``: sentence-transformers when the
            checkpoint ships its files (``modules.json``), else transformers. Both give the same embeddings.
        dtype: ``"auto"`` (bfloat16 on GPU, float32 on CPU) or a torch dtype name.
        attn_implementation: Passed to ``from_pretrained`` (e.g. ``"sdpa"``).
        use_instructions: Pass task prompts to the processor as instructions (MMEB's are in the text either way).
        store: A shared :class:`EmbeddingStore`: encode at full budget once and slice (used by the budget sweep).
        encoder: An already loaded backend to share between budgets instead of loading the checkpoint again.
        cache_dir: Hub cache directory.
        name: ``org/name`` to record in results (defaults to the repo id or ``local/<folder>``).
        corpus_chunk_size: Documents per chunk in full-corpus search.
        **meta_kwargs: Passed to :func:`.metaembed_model_meta` (``training_datasets``, ``release_date``...).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        revision: str | None = None,
        device: str | None = None,
        *,
        budget: Sequence[int] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        backend: str = "auto",
        dtype: str | torch.dtype | None = "auto",
        attn_implementation: str | None = None,
        use_instructions: bool = True,
        store: EmbeddingStore | None = None,
        encoder: EncoderBackend | None = None,
        cache_dir: str | os.PathLike | None = None,
        name: str | None = None,
        corpus_chunk_size: int = 50_000,
        **meta_kwargs: Any,
    ) -> None:
        if checkpoint_path is not None:
            name = name or os.fspath(model)
            model = checkpoint_path
        self.checkpoint = resolve_checkpoint(model, revision, name=name, cache_dir=cache_dir)
        if encoder is None:
            encoder = self._load_encoder(backend, device, dtype, attn_implementation)
        self.encoder = encoder
        self.model = getattr(encoder, "encoder", encoder)
        self.config = encoder.config
        self.budget = None if budget is None else self.config.check_budget_pair(budget)
        self.store = store
        self.use_instructions = use_instructions
        self.corpus_chunk_size = corpus_chunk_size
        self.task_corpus = None
        self.model_prompts = None
        self.mteb_model_meta = metaembed_model_meta(self.checkpoint, budget=self.budget, **meta_kwargs)

    def _load_encoder(
        self,
        backend: str,
        device: str | None,
        dtype: str | torch.dtype | None,
        attn_implementation: str | None,
    ) -> EncoderBackend:
        """Loads the checkpoint: through mteb's ``MultiVectorWrapper`` (sentence-transformers) when it ships the
        sentence-transformers files, else with transformers' Auto classes."""
        has_st_files = (self.checkpoint.path / "modules.json").is_file()
        if backend == "auto":
            backend = "sentence-transformers" if has_st_files else "transformers"
        resolved_device = default_device(device)
        kwargs = model_kwargs(resolved_device, dtype, attn_implementation)
        if backend == "transformers":
            return TransformersBackend.load(
                self.checkpoint.path,
                device=resolved_device,
                dtype=dtype,
                attn_implementation=attn_implementation,
            )
        if backend != "sentence-transformers":
            raise ValueError(
                f"Unknown backend {backend!r}; choose auto, transformers or sentence-transformers."
            )
        if not has_st_files:
            raise ValueError(
                f"{self.checkpoint.source} has no modules.json, so sentence-transformers cannot load it; save it with "
                "metaembed.checkpoint.save_checkpoint, or use backend='transformers'."
            )
        # mteb's own loader: MultiVectorEncoder(path, trust_remote_code=True, ...) and the model's prompts.
        super().__init__(
            str(self.checkpoint.path),
            device=str(resolved_device),
            trust_remote_code=True,
            model_kwargs=kwargs,
        )
        return SentenceTransformersBackend(self.model)

    # ------------------------------------------------------------------------------------------------ budgets
    def at_budget(self, budget: Sequence[int] | None) -> MetaEmbedWrapper:
        """The same loaded model and store at another budget (no reload)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.budget = None if budget is None else self.config.check_budget_pair(budget)
        clone.task_corpus = None
        experiment = None if clone.budget is None else {"budget": clone.budget}
        clone.mteb_model_meta = self.mteb_model_meta.model_copy(update={"experiment_kwargs": experiment})
        return clone

    def _side_budget(self, role: str) -> int | None:
        if self.budget is None:
            return None
        return self.budget[0] if role == "query" else self.budget[1]

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    # ------------------------------------------------------------------------------------------------ encoding
    def instruction_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str | None:
        """The instruction the processor gets: ``""`` for MMEB (inline), the task prompt, or None (its default)."""
        if task_metadata.name in MMEB_TASK_CLASSES:
            return ""
        if not self.use_instructions:
            return None
        prompt = task_metadata.prompt
        if isinstance(prompt, dict):
            prompt = prompt.get(prompt_type.value) if prompt_type is not None else None
        elif prompt_type != PromptType.query:
            prompt = None
        return prompt or None

    def encode_dataset(
        self,
        dataset: Any,
        *,
        role: str,
        budget: int | None,
        instruction: str | None,
        batch_size: int = 32,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Encodes an mteb query/corpus dataset (``text`` and/or ``image`` columns) into ``[n, r, d]``."""
        dataset = undecoded(dataset)
        starts = range(0, len(dataset), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"Encoding {role}s")
        chunks = [
            self.encoder.encode(
                dataset_items(dataset, start, min(start + batch_size, len(dataset))),
                role=role,
                budget=budget,
                instruction=instruction,
                batch_size=batch_size,
            )
            for start in starts
        ]
        return torch.cat(chunks)

    def _encode(  # type: ignore[override]
        self,
        inputs: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        role = "query" if prompt_type == PromptType.query else "candidate"
        dataset = inputs.dataset
        instruction = self.instruction_for(task_metadata, prompt_type)
        side = self._side_budget(role)
        encode_kwargs = {
            "role": role,
            "instruction": instruction,
            "batch_size": int(kwargs.get("batch_size", 32)),
            "show_progress_bar": bool(kwargs.get("show_progress_bar", False)),
        }
        if self.store is None or "id" not in dataset.column_names:
            return self.encode_dataset(dataset, budget=side, **encode_kwargs)
        key = (task_metadata.name, hf_split, role, instruction, _ids_digest(dataset["id"]))
        full = self.store.get(key)
        if full is None:
            full = self.store.put(key, self.encode_dataset(dataset, budget=None, **encode_kwargs))
        else:
            logger.debug("Reusing %s embeddings of %s/%s from the store", role, task_metadata.name, hf_split)
        return full if side is None else full[:, :side]

    # ------------------------------------------------------------------------------------------------ scoring
    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """MaxSim of every query against every document, ``[n_q, n_d]``, computed on the model's device."""
        from metaembed.modeling_metaembed import maxsim_scores

        queries, documents = torch.as_tensor(embeddings1), torch.as_tensor(embeddings2)
        queries = queries.unsqueeze(0) if queries.ndim == 2 else queries
        documents = documents.unsqueeze(0) if documents.ndim == 2 else documents
        return maxsim_scores(queries.to(self.device), documents)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """MaxSim of matched pairs ``(q_i, d_i)``, ``[n]``."""
        queries = torch.as_tensor(embeddings1).to(self.device).float()
        documents = torch.as_tensor(embeddings2).to(self.device).float()
        return torch.einsum("nqd,ncd->nqc", queries, documents).amax(dim=-1).sum(dim=-1)

    def _rerank_documents(  # type: ignore[override]
        self,
        *,
        query_idx_to_id: dict[int, str],
        query_embeddings: Any,
        top_ranked: dict[str, list[str]],
        top_k: int,
        task_metadata: TaskMetadata,
        hf_subset: str,
        hf_split: str,
        encode_kwargs: dict[str, Any],
        timer: TimingStack,
        num_proc: int | None = None,
    ) -> dict[str, list[tuple[float, str]]]:
        """Scores each query against its own candidate list (``top_ranked``), block-wise on the model's device."""
        if self.task_corpus is None:
            raise ValueError("Corpus must be set before reranking.")
        corpus = self.task_corpus
        with timer("Encoding corpus", split=hf_split, subset=hf_subset):
            documents = self._encode(
                create_dataloader(
                    corpus,
                    task_metadata=task_metadata,
                    prompt_type=PromptType.document,
                    batch_size=encode_kwargs.get("batch_size", 32),
                    num_proc=num_proc,
                ),
                task_metadata=task_metadata,
                hf_split=hf_split,
                hf_subset=hf_subset,
                prompt_type=PromptType.document,
                **encode_kwargs,
            )
        doc_index = {doc_id: index for index, doc_id in enumerate(corpus["id"])}
        query_ids = [query_idx_to_id[i] for i in range(len(query_idx_to_id))]
        missing = [qid for qid in query_ids if qid not in top_ranked]
        if missing:
            logger.warning(
                "No candidate list for %d queries (e.g. %s); they rank nothing.", len(missing), missing[0]
            )
        try:
            lists = [[doc_index[doc] for doc in top_ranked.get(qid, [])] for qid in query_ids]
        except KeyError as error:
            raise ValueError(
                f"{task_metadata.name}: a candidate list names {error.args[0]!r}, not in the corpus."
            ) from error
        with timer("Computing similarity", split=hf_split, subset=hf_subset):
            ranked = rank_candidate_lists(
                torch.as_tensor(query_embeddings), documents, lists, top_k=top_k, device=self.device
            )
        corpus_ids = list(corpus["id"])
        return {
            qid: [(score, corpus_ids[index]) for score, index in zip(scores, indices)]
            for qid, (scores, indices) in zip(query_ids, ranked)
        }


__all__ = ["EmbeddingStore", "MetaEmbedWrapper", "dataset_items", "undecoded"]
