"""One rank of the gathered-negatives check (run by tests/test_distributed_loss.py through torchrun).

Every rank builds the same seeded tiny MetaEmbed model, takes its slice of a fixed global batch, computes the MMR
loss with `gather_across_devices=True` and its gradients, and averages the gradients over ranks as DDP does. Rank 0
saves the averaged loss and gradients. Imported by the test, the same functions give the one-process reference.
"""

from __future__ import annotations

import os
import sys

import torch

QUERIES = [f"question number {i} about the {w} module" for i, w in enumerate("abcdefgh")]
POSITIVES = [f"the {w} module answers question {i}" for i, w in enumerate("abcdefgh")]
NEGATIVES = [f"an unrelated sentence {i} on {w}" for i, w in enumerate("hgfedcba")]
BUDGETS = [(1, 1), (2, 4), (4, 8)]


def build_encoder():
    from metaembed.st_module import build_multi_vector_encoder
    from metaembed.testing import build_tiny_metaembed

    model, processor = build_tiny_metaembed(
        "qwen2", num_query_meta_tokens=4, num_candidate_meta_tokens=8, seed=3
    )
    return build_multi_vector_encoder(model, processor, device="cpu")


def loss_and_gradients(encoder, rows: slice, gather: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from metaembed.st_module import MMRLoss

    columns = [(QUERIES[rows], "query"), (POSITIVES[rows], "document"), (NEGATIVES[rows], "document")]
    features = [encoder.preprocess(texts, task=task) for texts, task in columns]
    loss = MMRLoss(encoder, budgets=BUDGETS, temperature=0.05, gather_across_devices=gather)(features)
    encoder.zero_grad()
    loss.backward()
    gradients = {
        name: p.grad.detach().clone() for name, p in encoder.named_parameters() if p.grad is not None
    }
    return loss.detach(), gradients


def main(output: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = len(QUERIES) // world
    encoder = build_encoder()
    loss, gradients = loss_and_gradients(encoder, slice(rank * per_rank, (rank + 1) * per_rank), gather=True)
    dist.all_reduce(loss)
    for gradient in gradients.values():
        dist.all_reduce(gradient)  # DDP's average: the sum over ranks divided by the world size
    if rank == 0:
        torch.save({"loss": loss / world, "gradients": {k: g / world for k, g in gradients.items()}}, output)
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()
    # The results are saved and both ranks are past the barrier. Skip interpreter teardown: on a fresh CI machine
    # a rank once aborted there ("terminate called without an active exception", gloo threads racing C++ static
    # destructors), failing a run whose numbers were complete.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1])
