"""Timing and the card's own ceilings (bf16 GEMM rate, copy bandwidth), measured in the run.

Example:
    >>> import torch
    >>> timing = time_call(lambda: torch.ones(4) * 2, device="cpu", repeats=3)
    >>> timing.runs
    3
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Timing",
    "measure_copy_gbps",
    "measure_gemm_tflops",
    "synchronize",
    "time_call",
    "time_interleaved",
]


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated calls, in milliseconds."""

    median_ms: float
    min_ms: float
    runs: int


def synchronize(device: torch.device | str) -> None:
    """Waits for queued GPU work (no-op on the CPU) so wall-clock times cover the kernels."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any],
    *,
    device: torch.device | str,
    repeats: int,
    max_seconds: float = float("inf"),
    warmup: int = 1,
) -> Timing:
    """Times ``fn`` after ``warmup`` untimed calls: up to ``repeats`` runs, fewer past ``max_seconds``.

    At least one timed run is always made. Reports the minimum (what the code costs; contention from
    other processes only adds time) and the median.
    """
    return time_interleaved([fn], device=device, repeats=repeats, max_seconds=max_seconds, warmup=warmup)[0]


def time_interleaved(
    fns: list[Callable[[], Any]],
    *,
    device: torch.device | str,
    repeats: int,
    max_seconds: float = float("inf"),
    warmup: int = 1,
) -> list[Timing]:
    """Times several calls in alternation (a, b, a, b, ...) so each sees the same machine load.

    Use it for ratios between calls (ours vs. a plain GEMM) on a shared machine. Each call first runs
    ``warmup`` times untimed.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)
    times: list[list[float]] = [[] for _ in fns]
    spent = 0.0
    while len(times[0]) < max(1, repeats) and (not times[0] or spent < max_seconds):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            synchronize(device)
            elapsed = time.perf_counter() - start
            bucket.append(elapsed * 1e3)
            spent += elapsed
    return [Timing(median_ms=statistics.median(t), min_ms=min(t), runs=len(t)) for t in times]


def measure_gemm_tflops(device: torch.device | str, *, repeats: int = 5) -> float:
    """The bf16 GEMM rate of this device in TFLOP/s (a large square-ish GEMM, best of ``repeats``)."""
    device = torch.device(device)
    m, k, n = (8192, 8192, 8192) if device.type == "cuda" else (1024, 2048, 8192)
    a = torch.randn(m, k, device=device).to(torch.bfloat16)
    b = torch.randn(k, n, device=device).to(torch.bfloat16)
    out = torch.empty(m, n, device=device, dtype=torch.bfloat16)
    timing = time_call(lambda: torch.mm(a, b, out=out), device=device, repeats=repeats)
    return 2 * m * k * n / (timing.min_ms * 1e-3) / 1e12


def measure_copy_gbps(device: torch.device | str, *, repeats: int = 5) -> float:
    """Device memory copy bandwidth in GB/s, counting bytes read plus bytes written."""
    device = torch.device(device)
    size = 2**30 if device.type == "cuda" else 256 * 2**20
    source = torch.ones(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    timing = time_call(lambda: target.copy_(source), device=device, repeats=repeats)
    return 2 * size / (timing.min_ms * 1e-3) / 1e9
