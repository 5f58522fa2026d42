"""Training a MetaEmbed model on generated (query, positive, hard negative) examples with the MMR loss.

A plain PyTorch loop, the same for every variant of an ablation: only the loss's budget groups differ. The loss is
the project's :func:`metaembed.st_module.losses.mmr_loss` (InfoNCE over MaxSim / tau per group, averaged; every
positive of the batch is a negative for the other queries, and each query also sees its own hard negative).
``groups`` selects the variant:

- MMR: every budget group of the model;
- NoMMR: only the largest group (what ``MMRLoss(mmr=False)`` trains);
- single vector: the one group ``(1, 1)`` of a model with one meta token per side.

Example:
    >>> settings = TrainSettings(steps=2, batch_size=4)
    >>> log = train_metaembed(model, processor, examples, groups=[(1, 1), (2, 4)], settings=settings, seed=0)
    >>> len(log)
    2
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..data.compositional import DEFAULT_IMAGE_SIZE, Example
from ..st_module.losses import mmr_loss

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings shared by every variant.

    Attributes:
        steps: Optimiser steps.
        batch_size: Queries per step; each brings its positive and one hard negative.
        learning_rate: Peak AdamW learning rate (the whole model trains: it starts from random weights).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps; the rate then decays linearly to 0.
        max_grad_norm: Gradient clipping norm.
        temperature: InfoNCE temperature tau of the MMR loss (the paper's 0.03).
        image_size: Edge of the rendered images in pixels.
        num_workers: Data loader processes that render and process batches (0: the training process does it).
        log_every: Log the loss every this many steps.
    """

    steps: int = 500
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    temperature: float = 0.03
    image_size: int = DEFAULT_IMAGE_SIZE
    num_workers: int = 0
    log_every: int = 50

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unique_positive_batches(
    examples: Sequence[Example], batch_size: int, seed: int
) -> Iterator[list[Example]]:
    """Endless batches over shuffled epochs in which no two queries share a positive.

    A repeated positive (two VQA questions answered "red", two images labelled "two red circles") would be both the
    target and an in-batch negative of the same query. An example that would repeat a positive waits for a later
    batch, like sentence-transformers' no-duplicates sampler.

    Example:
        >>> batch = next(unique_positive_batches(examples, 8, seed=0))
        >>> len({e.positive.key for e in batch}) == len(batch)
        True
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if not examples:
        raise ValueError("Cannot train on an empty list of examples.")
    distinct = len({e.positive.key for e in examples})
    if distinct < batch_size:
        raise ValueError(
            f"The examples hold only {distinct} distinct positives, fewer than batch_size={batch_size}; no batch can "
            "avoid repeating a positive."
        )
    rng = random.Random(seed)
    waiting: list[Example] = []
    while True:
        order = list(examples)
        rng.shuffle(order)
        pool = waiting + order
        waiting = []
        batch: list[Example] = []
        keys: set[tuple[str, str]] = set()
        for example in pool:
            if example.positive.key in keys:
                waiting.append(example)
                continue
            batch.append(example)
            keys.add(example.positive.key)
            if len(batch) == batch_size:
                yield batch
                batch, keys = [], set()
        waiting = batch + waiting


class ProcessedBatches(torch.utils.data.IterableDataset):
    """The training stream: batches of :func:`unique_positive_batches`, each with one hard negative per query drawn
    from its list, run through the processor.

    Batch ``i`` is a pure function of ``(seed, i)``, so a `DataLoader` with several workers (each worker processes
    every ``num_workers``-th batch of the same stream, and the loader interleaves them in order) yields exactly the
    batches one process would.

    Yields:
        ``(queries, candidates)`` processor outputs; candidates are the positives then the hard negatives.
    """

    def __init__(
        self, examples: Sequence[Example], processor: Any, batch_size: int, seed: int, image_size: int
    ):
        super().__init__()
        self.examples = examples
        self.processor = processor
        self.batch_size = batch_size
        self.seed = seed
        self.image_size = image_size

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, rank = (info.num_workers, info.id) if info is not None else (1, 0)
        size = self.image_size
        for index, batch in enumerate(unique_positive_batches(self.examples, self.batch_size, self.seed)):
            if index % workers != rank:
                continue
            choice = random.Random(f"{self.seed}/hard-negatives/{index}")
            negatives = []
            for example in batch:
                if not example.hard_negatives:
                    raise ValueError("Every training example needs at least one hard negative.")
                negatives.append(choice.choice(example.hard_negatives))
            queries = self.processor([e.query.to_input(size) for e in batch], role="query")
            candidates = self.processor(
                [e.positive.to_input(size) for e in batch] + [n.to_input(size) for n in negatives],
                role="candidate",
            )
            yield queries, candidates


def _learning_rate_factor(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    remaining = settings.steps - settings.warmup_steps
    return max(0.0, 1.0 - (step - settings.warmup_steps) / max(1, remaining))


def _to_device(batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def train_metaembed(
    model: torch.nn.Module,
    processor: Any,
    examples: Sequence[Example],
    *,
    groups: Sequence[Sequence[int]],
    settings: TrainSettings,
    seed: int,
    device: str | torch.device = "cpu",
) -> list[dict[str, float]]:
    """Trains ``model`` in place with the MMR loss over ``groups``.

    Args:
        model: A `MetaEmbedModel`.
        processor: Its `MetaEmbedProcessor`.
        examples: Training examples; each step uses one hard negative per query, drawn from its list.
        groups: Budget groups `(r_q, r_c)` of the loss, validated by the model's config.
        settings: Optimisation settings.
        seed: Seeds batch order and hard-negative choice (the model's initialisation is seeded by its builder).
        device: Where to train.

    Returns:
        One record per logged step: ``step``, ``loss`` (mean since the last record), ``lr``, ``seconds``.
    """
    config = model.config
    groups = [config.check_budget_pair(tuple(g)) for g in groups]
    query_budget = max(r_q for r_q, _ in groups)
    candidate_budget = max(r_c for _, r_c in groups)
    device = torch.device(device)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "meta_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "meta_tokens" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, settings)
    )
    stream = ProcessedBatches(examples, processor, settings.batch_size, seed, settings.image_size)
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=settings.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    batches = iter(loader)
    log: list[dict[str, float]] = []
    running, counted, start = 0.0, 0, time.perf_counter()
    for step in range(settings.steps):
        queries, candidates = next(batches)
        query_vectors = model(**_to_device(queries, device), role="query", budget=query_budget).embeddings
        candidate_vectors = model(
            **_to_device(candidates, device), role="candidate", budget=candidate_budget
        ).embeddings
        n = query_vectors.shape[0]
        loss = mmr_loss(
            query_vectors,
            candidate_vectors[:n],
            candidate_vectors[n:].unsqueeze(1),
            budgets=groups,
            temperature=settings.temperature,
        )
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"The loss became {loss.item()} at step {step}.")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        counted += 1
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            record = {
                "step": step + 1,
                "loss": running / counted,
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.perf_counter() - start,
            }
            log.append(record)
            logger.info(
                "step %d/%d loss %.4f (%.0fs)", step + 1, settings.steps, record["loss"], record["seconds"]
            )
            running, counted = 0.0, 0
    model.eval()
    return log


__all__ = ["TrainSettings", "train_metaembed", "unique_positive_batches"]
