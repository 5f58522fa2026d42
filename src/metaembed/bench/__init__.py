"""Benchmarks of the scoring engine; ``metaembed bench scoring`` runs :mod:`metaembed.bench.scoring`.

- :mod:`~metaembed.bench.scoring`: the budgeted-MaxSim benchmark (ours vs. peers vs. the card's ceilings).
- :mod:`~metaembed.bench.timing`: the timer and the GEMM / copy ceilings measured in the run.
- :mod:`~metaembed.bench.peers`: the implementations compared against.
- :mod:`~metaembed.bench.synthetic`: structured synthetic embeddings (clear rankings, seeded).
"""
