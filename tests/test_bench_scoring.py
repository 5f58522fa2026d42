"""`metaembed bench scoring` on tiny shapes: the CLI runs, and the JSON and table carry every field."""

from __future__ import annotations

import json

import pytest

from metaembed.bench.scoring import evaluate_targets
from metaembed.cli import main

ROW_FIELDS = {
    "budget",
    "gflops_per_query",
    "index_bytes",
    "ours_one_query_ms",
    "ours_batch_ms_per_query",
    "st_maxsim_one_query_ms",
    "einsum_one_query_ms",
    "plain_gemm_ms_per_query",
    "batch_vs_plain_gemm",
    "memory_floor_ms",
    "st_over_ours",
    "einsum_over_ours",
    "st_candidates_timed",
    "st_extrapolated",
}
TINY = ["--candidates", "96", "--dim", "32", "--queries", "3", "--repeats", "1", "--peer-seconds", "0.05"]


def test_cli_writes_json_and_prints_the_table(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    assert (
        main(["bench", "scoring", "--device", "cpu", *TINY, "--budgets", "1,1", "2,4", "--json", str(path)])
        == 0
    )
    result = json.loads(path.read_text())
    assert result["device"] == "cpu"
    assert result["gemm_tflops"] > 0 and result["copy_gbps"] > 0
    assert [row["budget"] for row in result["rows"]] == [[1, 1], [2, 4]]
    for row in result["rows"]:
        assert set(row) >= ROW_FIELDS
        r_q, r_c = row["budget"]
        assert row["gflops_per_query"] == pytest.approx(2 * r_q * r_c * 32 * 96 / 1e9)
        assert row["index_bytes"] == 96 * r_c * 32 * 2  # bf16, exact
        assert (
            row["ours_one_query_ms"] > 0
            and row["st_maxsim_one_query_ms"] > 0
            and row["einsum_one_query_ms"] > 0
        )
        assert row["st_over_ours"] == pytest.approx(row["st_maxsim_one_query_ms"] / row["ours_one_query_ms"])
    assert {t["target"] for t in result["targets"]} >= {"batched <= 1.3x plain GEMM time (every budget)"}
    table = capsys.readouterr().out
    assert "ST/ours" in table and "(2,4)" in table and "bf16 GEMM" in table


def test_quantized_index_is_compared_to_bf16(tmp_path):
    path = tmp_path / "fp8.json"
    assert main(["bench", "scoring", *TINY, "--dtype", "fp8", "--budgets", "2,4", "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["memory_ratio_vs_bf16"] == pytest.approx((32 + 4) / 64)  # one byte per value plus a scale
    # The benchmark's data has topic structure, so a sound fp8 index keeps bf16's top 10 (the GPU target is >= 0.99).
    assert row["top10_overlap_vs_bf16"] >= 0.99
    assert row["bf16_one_query_ms"] > 0


def test_bad_budget_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "scoring", "--budgets", "16"])
    assert "r_q,r_c" in capsys.readouterr().err


def test_gpu_targets_are_evaluated():
    rows = [
        {
            "budget": [16, 64],
            "index_overhead": 0.0005,
            "one_query_vs_floor": 1.1,
            "batch_fraction_of_gemm_peak": 0.8,
            "top10_overlap_vs_bf16": 0.995,
            "memory_ratio_vs_bf16": 0.5003,
            "speedup_vs_bf16": 1.5,
        }
    ]
    targets = evaluate_targets({"device": "cuda", "dtype": "float8_e4m3", "queries": 1000, "rows": rows})
    met = {t["target"]: t["met"] for t in targets}
    assert met["one query <= 1.15x memory floor (every budget)"]
    assert met["batch of 1000 >= 75% of bf16 GEMM rate at (16,64)"]
    assert met["fp8 top-10 overlap vs bf16 >= 0.99 (every budget)"]
    assert not met["fp8 one query >= 1.7x faster than bf16 at (16,64)"]
