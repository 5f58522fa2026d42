#!/usr/bin/env bash
# One-shot GPU run of `metaembed bench scoring` at the paper's shapes (N=100k candidates, d=3584),
# for a session that has a GPU (none was available when the engine was written: issue 4).
#
# It runs, in order:
#   1. a small placement check on the GPU: resident, CPU-offloaded (streamed) and CPU indexes return
#      the same top-10; fp8 and int8 indexes run on the GPU kernels (a logged warning = a fallback);
#   2. bf16, the paper's five budgets: one query, per query in a batch of 1000, the peers, the ceilings;
#   3. fp8 e4m3 at (1,1) and (16,64): half the memory, >= 1.7x faster one query at (16,64), top-10
#      overlap >= 0.99 against bf16;
#   4. (16,64) batched with the per-slot strategy, for comparison with the default (stacked on CUDA);
#   5. a summary of every target in the JSONs; the script exits 1 if any is not met.
# Writes bench_scoring_cuda_*.json / .txt under ${OUT:-outputs}/. About 5-8 minutes on one H100 80GB;
# the fp8 run holds the bf16 and fp8 indexes together (~69 GB): use an H200 if it runs out of memory.
#
# Usage: benchmarks/gpu_scoring.sh        (PYTHON=/path/to/python picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${OUT:-outputs}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.__version__, torch.cuda.get_device_name())"

echo "== 1. placement and low-precision kernels on the GPU"
"$PYTHON" - <<'PY'
import logging

import torch

from metaembed.bench.synthetic import SyntheticCorpus
from metaembed.index import MetaEmbedIndex

logging.basicConfig(level=logging.WARNING)
corpus = SyntheticCorpus(512, seed=1, device="cuda")
slots, queries = corpus.candidates(5000, 16), corpus.queries(8, 4)
budget = (4, 16)
resident = MetaEmbedIndex.from_budget_major(slots)
offloaded = MetaEmbedIndex.from_budget_major(slots.cpu(), device="cuda", offload=True, chunk_bytes=8 * 2**20)
on_cpu = MetaEmbedIndex.from_budget_major(slots.cpu(), device="cpu")
expected = resident.search(queries, budget, k=10)
assert offloaded.search(queries, budget, k=10).ids == expected.ids, "offloaded (streamed) != resident"
cpu_ids = on_cpu.search(queries.cpu(), budget, k=10).ids
print("cpu vs cuda top-10 agreement:", sum(len(set(a) & set(b)) for a, b in zip(cpu_ids, expected.ids)) / 80)
for dtype in ("float8_e4m3", "int8"):
    index = MetaEmbedIndex.from_budget_major(slots, dtype=dtype)
    got = index.search(queries, budget, k=10).ids
    overlap = sum(len(set(a) & set(b)) for a, b in zip(got, expected.ids)) / 80
    print(f"{dtype} on cuda: top-10 overlap vs bf16 {overlap:.3f}")
    assert overlap >= 0.9, f"{dtype} ranks disagree with bf16"
two_stage = resident.search(queries, first_stage=(1, 1), rerank=budget, candidates=5000, k=10)
assert two_stage.ids == expected.ids, "two-stage with every candidate != exhaustive"
print("placement checks passed")
PY

echo "== 2. bf16, the paper's budgets"
"$PYTHON" -m metaembed.cli bench scoring --device cuda --json "$OUT/bench_scoring_cuda_bf16.json" \
    | tee "$OUT/bench_scoring_cuda_bf16.txt"

echo "== 3. fp8 e4m3 against bf16"
"$PYTHON" -m metaembed.cli bench scoring --device cuda --dtype float8_e4m3 --budgets 1,1 16,64 --queries 100 \
    --json "$OUT/bench_scoring_cuda_fp8.json" | tee "$OUT/bench_scoring_cuda_fp8.txt"

echo "== 4. (16,64) batched with per-slot GEMMs and a running max"
"$PYTHON" -m metaembed.cli bench scoring --device cuda --budgets 16,64 --strategy slots \
    --json "$OUT/bench_scoring_cuda_slots.json" | tee "$OUT/bench_scoring_cuda_slots.txt"

echo "== 5. targets"
"$PYTHON" - "$OUT" <<'PY'
import json
import pathlib
import sys

failed = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("bench_scoring_cuda_*.json")):
    result = json.loads(path.read_text())
    for target in result["targets"]:
        status = "MET" if target["met"] else "NOT MET"
        failed += not target["met"]
        print(f"{path.name}: {target['target']}: {target['value']} -> {status}")
sys.exit(1 if failed else 0)
PY
