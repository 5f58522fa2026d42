"""Gathered negatives: two gloo processes give the one-process loss and gradients on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import distributed_mmr_worker as worker
import pytest
import torch

# float32 sums taken in another order (per-rank halves, all-reduce) differ from one process by a few ulps: the
# largest gradient difference measured here is 2.7e-8 absolute (1.5e-5 of that tensor's largest entry).
RTOL, ATOL = 1e-5, 2e-7


@pytest.mark.timeout(600)
def test_two_process_gloo_run_matches_one_process(tmp_path):
    from metaembed.st_module import metaembed_module_class

    metaembed_module_class()  # resolves the shipped module once, so the two ranks only read the module cache
    output = tmp_path / "distributed.pt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(Path(worker.__file__)),
            str(output),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    distributed = torch.load(output)

    encoder = worker.build_encoder()
    loss, gradients = worker.loss_and_gradients(encoder, slice(None), gather=False)
    torch.testing.assert_close(distributed["loss"], loss, rtol=RTOL, atol=ATOL)
    assert set(distributed["gradients"]) == set(gradients)
    assert gradients["0.model.meta_tokens.weight"].abs().sum() > 0
    for name, gradient in gradients.items():
        torch.testing.assert_close(distributed["gradients"][name], gradient, rtol=RTOL, atol=ATOL, msg=name)

    # Without gathering, each rank would see only its own 4 positives: a different loss.
    half, _ = worker.loss_and_gradients(encoder, slice(0, 4), gather=False)
    assert not torch.allclose(half, loss, rtol=1e-3)


@pytest.mark.timeout(600)
def test_metaembed_train_runs_under_torchrun(tmp_path):
    """`torchrun -m metaembed.cli train` (what `accelerate launch` does on one node): two CPU processes under DDP,
    positives gathered across them, one merged checkpoint written by rank 0."""
    import json

    from sentence_transformers import MultiVectorEncoder

    from metaembed.checkpoint import save_checkpoint
    from metaembed.testing import build_tiny_metaembed

    model, processor = build_tiny_metaembed("qwen2", num_query_meta_tokens=2, num_candidate_meta_tokens=4)
    save_checkpoint(model, processor, tmp_path / "start")
    rows = [
        {
            "query": f"question {i} on topic {i % 5}",
            "positive": f"answer {i} on topic {i % 5}",
            "negatives": [f"x{i}"],
        }
        for i in range(32)
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": str(tmp_path / "start"),
        "output_dir": str(tmp_path / "out"),
        "data": {"train": str(tmp_path / "pairs.jsonl")},
        "lora": {"r": 4, "alpha": 8},
        "training": {
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
            *("-m", "metaembed.cli", "train", "--config", str(tmp_path / "cfg.json")),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        timeout=540,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("gather_across_devices=True over 2 process(es)") == 2, result.stderr[-4000:]
    encoder = MultiVectorEncoder(str(tmp_path / "out"), trust_remote_code=True, device="cpu")
    assert encoder.encode_query(["question 1"], budget=1)[0].shape == (1, 64)
