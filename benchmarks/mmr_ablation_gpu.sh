#!/usr/bin/env bash
# GPU variant of the MMR ablation (issue 7): the same experiment as `metaembed experiment mmr-ablation --preset cpu`
# (single vector vs MetaEmbed with / without MMR, trained from scratch on generated compositional shapes, scored at
# every budget over seeds 0, 1, 2) with the `gpu` preset: a 3.7M-parameter Qwen2.5-VL (hidden 256, 4 decoder
# layers, 4 vision blocks) instead of 0.35M, 112 px images, 3000 steps of batch 64 (the CPU presets: 400 or 1200 of
# 32), 5x the training data and 2.5x the test queries. The content gate of the CPU run applies too. Data loading
# runs in 6 worker processes.
#
# Writes results.json, table.md and mmr_ablation.png under ${OUT:-outputs/mmr_ablation_gpu}/ (the MMEB-layout test
# data under mmeb/). Not yet timed on a GPU: expect roughly 30-60 minutes on one H100 (nine runs of 3000 steps).
# Extra arguments go to the command, e.g. `--seeds 0` for a single-seed check or `--variants mmr no_mmr`.
#
# Usage: benchmarks/mmr_ablation_gpu.sh [extra args]   (PYTHON=/path/to/python picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${OUT:-outputs/mmr_ablation_gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.__version__, torch.cuda.get_device_name())"
"$PYTHON" -m metaembed.cli experiment mmr-ablation --preset gpu --device cuda --output-dir "$OUT" "$@" | tee "$OUT/stdout.txt"
