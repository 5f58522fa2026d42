"""The scoring benchmark behind ``metaembed bench scoring``: the paper's efficiency table, with peers.

For every budget ``(r_q, r_c)`` it measures, in one run and on one device:

- **ours**: :meth:`MetaEmbedIndex.search` (MaxSim + top-10) for one query, and per query in a batch of
  ``Q`` queries;
- **plain GEMM**: the same FLOPs as one GEMM per candidate slot with no max (the batched ceiling),
  timed in alternation with our batch so both see the same machine load;
- **sentence-transformers** ``util.similarity.maxsim`` and a **naive chunked einsum** (the
  colpali-engine / pylate loop), one query each, on contiguous item-major bf16 copies of the same data,
  timed in alternation with our one-query search so all three see the same machine load;
- the card's **ceilings**: bf16 GEMM TFLOP/s and copy GB/s (read + write), from which the memory floor
  of one query (index bytes / copy bandwidth) follows.

Peers that are slow (sentence-transformers on a CPU takes seconds per query) are timed on the first
``n`` candidates, ``n`` chosen so one run takes about ``peer_seconds``, and scaled by ``N / n``; the
JSON says so per row (``*_candidates_timed``, ``*_extrapolated``) and the table marks such numbers ``*``.
For int8 / float8 indexes it also reports the memory, one-query speed and top-10 overlap against the
bf16 index of the same data.

Example:
    >>> config = ScoringBenchmarkConfig(candidates=64, dim=32, queries=2, budgets=((1, 1),), repeats=1)
    >>> result = run_scoring_benchmark(config)
    >>> sorted(result["rows"][0])[:3]
    ['batch_fraction_of_gemm_peak', 'batch_queries', 'batch_tflops']
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch

from ..index import MetaEmbedIndex
from ..scoring import DEFAULT_BUDGETS, DEFAULT_CHUNK_BYTES, Budget, validate_budget
from .peers import naive_einsum_maxsim, plain_gemm, st_maxsim
from .synthetic import SyntheticCorpus
from .timing import measure_copy_gbps, measure_gemm_tflops, time_call, time_interleaved

logger = logging.getLogger(__name__)

__all__ = ["ScoringBenchmarkConfig", "evaluate_targets", "format_table", "run_scoring_benchmark"]

_DEVICE_DEFAULTS = {
    # candidates, dim, batch queries, repeats, peer seconds, peer copy cap (bytes)
    "cpu": (10_000, 2048, 32, 5, 2.0, 4 * 2**30),
    "cuda": (100_000, 3584, 1000, 10, 5.0, 16 * 2**30),
}


@dataclass
class ScoringBenchmarkConfig:
    """What to measure; None picks the device's default (CPU: N=10k, d=2048, Q=32; CUDA: N=100k,
    d=3584, Q=1000).

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        candidates: Number of candidates ``N``.
        dim: Vector dimension ``d``.
        queries: Batch size ``Q`` of the batched measurement.
        dtype: Storage dtype of our index (the peers always use bf16).
        budgets: Budgets to measure; the index stores ``max r_c`` vectors per candidate.
        repeats: Timed runs per measurement (median reported).
        peer_seconds: Target duration of one timed peer run (longer runs are subsampled, see above).
        peer_max_bytes: Largest item-major copy made for a peer (more candidates are subsampled too).
        chunk_bytes: Memory budget of one scoring block (default: 256 MiB on CPU, 1 GiB on CUDA).
        strategy: Scoring GEMM layout (``auto``, ``slots`` or ``stacked``), see
            :func:`metaembed.scoring.iter_block_scores`.
        seed: Seed of the synthetic data.
    """

    device: str = "cpu"
    candidates: int | None = None
    dim: int | None = None
    queries: int | None = None
    dtype: str = "bfloat16"
    budgets: Sequence[Budget] = DEFAULT_BUDGETS
    repeats: int | None = None
    peer_seconds: float | None = None
    peer_max_bytes: int | None = None
    chunk_bytes: int | None = None
    strategy: str = "auto"
    seed: int = 0
    resolved: dict[str, Any] = field(default_factory=dict, repr=False)

    def resolve(self) -> ScoringBenchmarkConfig:
        """Fills the device defaults in place and checks the values; returns self."""
        if self.device not in _DEVICE_DEFAULTS:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device here.")
        n, dim, queries, repeats, peer_seconds, peer_bytes = _DEVICE_DEFAULTS[self.device]
        self.candidates = self.candidates or n
        self.dim = self.dim or dim
        self.queries = self.queries or queries
        self.repeats = self.repeats or repeats
        self.peer_seconds = self.peer_seconds or peer_seconds
        self.peer_max_bytes = self.peer_max_bytes or peer_bytes
        self.chunk_bytes = self.chunk_bytes or DEFAULT_CHUNK_BYTES * (4 if self.device == "cuda" else 1)
        if min(self.candidates, self.dim, self.queries, self.repeats) < 1:
            raise ValueError("candidates, dim, queries and repeats must be positive.")
        self.budgets = [tuple(b) for b in self.budgets]
        if not self.budgets:
            raise ValueError("Give at least one budget.")
        for budget in self.budgets:
            validate_budget(budget, max_query_vectors=10**6, max_candidate_vectors=10**6)
        return self


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


class _PeerPlanner:
    """Picks how many candidates a peer is timed on (``peer_seconds`` and ``peer_max_bytes`` bound it)."""

    def __init__(self, config: ScoringBenchmarkConfig, slots: torch.Tensor, device: torch.device) -> None:
        self.config, self.slots, self.device = config, slots, device

    def plan(
        self, peer: Callable[[torch.Tensor, torch.Tensor], Any], query: torch.Tensor, r_c: int
    ) -> tuple[Callable[[], Any], int]:
        """Returns a call of ``peer`` on the first ``n`` candidates (item-major, contiguous) and ``n``."""
        total = self.slots.shape[1]
        per_candidate = r_c * self.slots.shape[2] * self.slots.element_size()
        budget = self.config.peer_max_bytes
        if self.device.type == "cuda":  # leave room for the indexes already on the card
            budget = min(budget, int(0.4 * torch.cuda.mem_get_info(self.device)[0]))
        cap = max(1, min(total, budget // per_candidate))

        def runner(n: int) -> Callable[[], Any]:
            candidates = self.slots[:r_c, :n].transpose(0, 1).contiguous()  # item-major, as peers store it
            return lambda: peer(query, candidates)

        pilot = min(cap, 256)
        estimate = time_call(runner(pilot), device=self.device, repeats=1, warmup=1)
        projected_seconds = estimate.min_ms / 1e3 * total / pilot
        n = (
            total
            if projected_seconds <= self.config.peer_seconds
            else int(total * self.config.peer_seconds / projected_seconds)
        )
        n = max(pilot, min(n, cap))
        return runner(n), n


def run_scoring_benchmark(config: ScoringBenchmarkConfig) -> dict[str, Any]:
    """Runs the benchmark and returns the JSON-ready result (see the module docstring).

    Returns:
        ``{"device", "gemm_tflops", "copy_gbps", "rows": [...], "targets": [...], ...}``.
    """
    config.resolve()
    device = torch.device(config.device)
    n, dim, batch = config.candidates, config.dim, config.queries
    max_rq = max(b[0] for b in config.budgets)
    max_rc = max(b[1] for b in config.budgets)
    logger.info("Measuring this device's ceilings (bf16 GEMM rate, copy bandwidth)...")
    gemm_tflops = measure_gemm_tflops(device)
    copy_gbps = measure_copy_gbps(device)
    logger.info("bf16 GEMM %.3f TFLOP/s, copy %.1f GB/s", gemm_tflops, copy_gbps)

    logger.info("Generating %d candidates x %d vectors x d=%d (bf16) on %s...", n, max_rc, dim, device)
    corpus = SyntheticCorpus(dim, seed=config.seed, device=device)
    slots = corpus.candidates(n, max_rc, dtype=torch.bfloat16)
    queries = corpus.queries(batch, max_rq, dtype=torch.bfloat16)
    reference = MetaEmbedIndex.from_budget_major(slots, device=device, chunk_bytes=config.chunk_bytes)
    index = reference
    if config.dtype != reference.dtype:
        logger.info("Quantizing the index to %s...", config.dtype)
        index = MetaEmbedIndex.from_budget_major(
            slots, dtype=config.dtype, device=device, chunk_bytes=config.chunk_bytes
        )
    peer_planner = _PeerPlanner(config, slots, device)
    plain_out = torch.empty(
        batch * max_rq,
        max(1, min(n, config.chunk_bytes // (batch * max_rq * 2))),
        dtype=torch.bfloat16,
        device=device,
    )
    rows = []
    for r_q, r_c in config.budgets:
        budget = (r_q, r_c)
        logger.info("Budget %s: ours, one query, in alternation with the peers...", budget)
        one = queries[:1, :r_q]
        st_run, st_n = peer_planner.plan(st_maxsim, one, r_c)
        einsum_run, einsum_n = peer_planner.plan(naive_einsum_maxsim, one, r_c)
        ours_one, st_timing, einsum_timing = time_interleaved(
            [partial(index.search, one, budget, k=10), st_run, einsum_run],
            device=device,
            repeats=config.repeats,
            max_seconds=6 * config.peer_seconds,
        )
        del st_run, einsum_run  # the peers' item-major copies
        st_ms, einsum_ms = st_timing.min_ms * n / st_n, einsum_timing.min_ms * n / einsum_n
        logger.info("Budget %s: ours, a batch of %d, in alternation with a plain GEMM...", budget, batch)
        flat = queries[:, :r_q].reshape(batch * r_q, dim)
        ours_batch, plain = time_interleaved(
            [
                partial(index.search, queries[:, :r_q], budget, k=10),
                partial(plain_gemm, flat, slots[:r_c], plain_out[: batch * r_q]),
            ],
            device=device,
            repeats=4,
            max_seconds=20,
        )
        flops = 2 * r_q * r_c * dim * n
        index_bytes = index.nbytes(r_c)
        ideal_bytes = n * r_c * dim * index.prefix(1)[0][0].element_size()
        floor_ms = index_bytes / (copy_gbps * 1e9) * 1e3
        batch_ms = ours_batch.min_ms / batch
        row: dict[str, Any] = {
            "budget": [r_q, r_c],
            "gflops_per_query": flops / 1e9,
            "index_bytes": index_bytes,
            "ideal_index_bytes": ideal_bytes,
            "index_overhead": (index_bytes - ideal_bytes) / ideal_bytes,
            "ours_one_query_ms": ours_one.min_ms,
            "ours_one_query_median_ms": ours_one.median_ms,
            "ours_batch_ms_per_query": batch_ms,
            "ours_batch_median_ms_per_query": ours_batch.median_ms / batch,
            "batch_queries": batch,
            "plain_gemm_ms_per_query": plain.min_ms / batch,
            "batch_vs_plain_gemm": _ratio(batch_ms, plain.min_ms / batch),
            "batch_tflops": flops / (batch_ms * 1e-3) / 1e12,
            "batch_fraction_of_gemm_peak": flops / (batch_ms * 1e-3) / 1e12 / gemm_tflops,
            "memory_floor_ms": floor_ms,
            "one_query_vs_floor": _ratio(ours_one.min_ms, floor_ms),
            "st_maxsim_one_query_ms": st_ms,
            "st_candidates_timed": st_n,
            "st_extrapolated": st_n < n,
            "st_over_ours": _ratio(st_ms, ours_one.min_ms),
            "einsum_one_query_ms": einsum_ms,
            "einsum_candidates_timed": einsum_n,
            "einsum_extrapolated": einsum_n < n,
            "einsum_over_ours": _ratio(einsum_ms, ours_one.min_ms),
        }
        if index is not reference:
            bf16_one = time_call(
                partial(reference.search, one, budget, k=10),
                device=device,
                repeats=config.repeats,
                max_seconds=5,
            )
            ours_top = index.search(queries[:, :r_q], budget, k=10).positions
            bf16_top = reference.search(queries[:, :r_q], budget, k=10).positions
            overlap = [len(set(a) & set(b)) / 10 for a, b in zip(ours_top.tolist(), bf16_top.tolist())]
            row.update(
                {
                    "bf16_one_query_ms": bf16_one.min_ms,
                    "speedup_vs_bf16": _ratio(bf16_one.min_ms, ours_one.min_ms),
                    "bf16_index_bytes": reference.nbytes(r_c),
                    "memory_ratio_vs_bf16": index_bytes / reference.nbytes(r_c),
                    "top10_overlap_vs_bf16": sum(overlap) / len(overlap),
                }
            )
        rows.append(row)
    result = {
        "device": config.device,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sentence_transformers": _version("sentence_transformers"),
        "dtype": index.dtype,
        "strategy": config.strategy,
        "candidates": n,
        "dim": dim,
        "queries": batch,
        "gemm_tflops": gemm_tflops,
        "copy_gbps": copy_gbps,
        "rows": rows,
        "config": {k: v for k, v in asdict(config).items() if k != "resolved"},
        "notes": [
            "ours = MetaEmbedIndex.search (MaxSim + top-10); peers return scores only.",
            "Peers run on contiguous item-major bf16 copies; *_extrapolated rows were timed on the first "
            "*_candidates_timed candidates and scaled linearly to N.",
            "memory floor = index bytes / measured copy bandwidth (read + write bytes).",
            "Times are the best of the timed runs (a shared machine only ever adds time); *_median_* "
            "fields hold the medians.",
        ],
    }
    result["targets"] = evaluate_targets(result)
    return result


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for this device, each with the measured value and whether it is met."""
    rows = result["rows"]
    by_budget = {tuple(r["budget"]): r for r in rows}
    targets = []

    def add(name: str, value: float | None, threshold: float, at_least: bool) -> None:
        met = value is not None and (value >= threshold if at_least else value <= threshold)
        targets.append({"target": name, "value": value, "threshold": threshold, "met": met})

    add("index memory within 1% of N*r_c*d*bytes", max(r["index_overhead"] for r in rows), 0.01, False)
    if result["device"] == "cpu":
        add(
            "one query >= 20x faster than ST maxsim (every budget)",
            min(r["st_over_ours"] for r in rows),
            20,
            True,
        )
        add(
            "batched <= 1.3x plain GEMM time (every budget)",
            max(r["batch_vs_plain_gemm"] for r in rows),
            1.3,
            False,
        )
    else:
        add(
            "one query <= 1.15x memory floor (every budget)",
            max(r["one_query_vs_floor"] for r in rows),
            1.15,
            False,
        )
        if (16, 64) in by_budget:
            add(
                f"batch of {result['queries']} >= 75% of bf16 GEMM rate at (16,64)",
                by_budget[(16, 64)]["batch_fraction_of_gemm_peak"],
                0.75,
                True,
            )
    if result["dtype"] == "float8_e4m3":
        add(
            "fp8 top-10 overlap vs bf16 >= 0.99 (every budget)",
            min(r["top10_overlap_vs_bf16"] for r in rows),
            0.99,
            True,
        )
        add("fp8 memory <= 0.51x bf16", max(r["memory_ratio_vs_bf16"] for r in rows), 0.51, False)
        if (16, 64) in by_budget and result["device"] == "cuda":
            add(
                "fp8 one query >= 1.7x faster than bf16 at (16,64)",
                by_budget[(16, 64)]["speedup_vs_bf16"],
                1.7,
                True,
            )
    return targets


def _fmt(value: float | None, digits: int = 2, star: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return text + ("*" if star else "")


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table with ratios to each peer and the targets."""
    lines = [
        f"metaembed bench scoring: {result['device']} ({result['device_name']}, {result['threads']} threads), "
        f"torch {result['torch']}, sentence-transformers {result['sentence_transformers']}",
        f"N={result['candidates']} candidates, d={result['dim']}, index dtype {result['dtype']}, "
        f"batch Q={result['queries']}",
        f"ceilings measured in this run: bf16 GEMM {result['gemm_tflops']:.3f} TFLOP/s, "
        f"copy {result['copy_gbps']:.1f} GB/s (read+write)",
        "",
    ]
    quantized = "speedup_vs_bf16" in result["rows"][0]
    header = [
        "budget",
        "GFLOP/q",
        "index MiB",
        "ours 1q ms",
        "ours batch ms/q",
        "plain GEMM ms/q",
        "batch/GEMM",
        "% GEMM peak",
        "floor ms",
        "1q/floor",
        "ST 1q ms",
        "ST/ours",
        "einsum 1q ms",
        "einsum/ours",
    ]
    if quantized:
        header += ["bf16 1q ms", "vs bf16", "mem vs bf16", "top10 overlap"]
    table = [header]
    for r in result["rows"]:
        cells = [
            f"({r['budget'][0]},{r['budget'][1]})",
            _fmt(r["gflops_per_query"], 3),
            _fmt(r["index_bytes"] / 2**20, 1),
            _fmt(r["ours_one_query_ms"]),
            _fmt(r["ours_batch_ms_per_query"], 3),
            _fmt(r["plain_gemm_ms_per_query"], 3),
            _fmt(r["batch_vs_plain_gemm"]) + "x",
            _fmt(100 * r["batch_fraction_of_gemm_peak"], 0) + "%",
            _fmt(r["memory_floor_ms"]),
            _fmt(r["one_query_vs_floor"]) + "x",
            _fmt(r["st_maxsim_one_query_ms"], 1, r["st_extrapolated"]),
            _fmt(r["st_over_ours"], 1) + "x",
            _fmt(r["einsum_one_query_ms"], 1, r["einsum_extrapolated"]),
            _fmt(r["einsum_over_ours"], 1) + "x",
        ]
        if quantized:
            cells += [
                _fmt(r["bf16_one_query_ms"]),
                _fmt(r["speedup_vs_bf16"]) + "x",
                _fmt(r["memory_ratio_vs_bf16"], 3) + "x",
                _fmt(r["top10_overlap_vs_bf16"], 3),
            ]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    extrapolated = [r for r in result["rows"] if r["st_extrapolated"] or r["einsum_extrapolated"]]
    if extrapolated:
        lines.append("")
        for r in extrapolated:
            parts = []
            if r["st_extrapolated"]:
                parts.append(f"ST on {r['st_candidates_timed']}")
            if r["einsum_extrapolated"]:
                parts.append(f"einsum on {r['einsum_candidates_timed']}")
            lines.append(
                f"* ({r['budget'][0]},{r['budget'][1]}): timed {', '.join(parts)} of {result['candidates']} "
                "candidates, scaled linearly."
            )
    lines.append("")
    lines.append(
        "ours = MetaEmbedIndex.search (MaxSim + top-10), peers = scores only; 1q = one query; best of the timed runs."
    )
    for target in result["targets"]:
        status = "MET" if target["met"] else "NOT MET"
        lines.append(f"target: {target['target']}: {_fmt(target['value'], 3)} -> {status}")
    return "\n".join(lines)
