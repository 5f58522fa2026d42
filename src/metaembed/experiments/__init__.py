"""Reproducible experiments (the MMR ablation on generated compositional data)."""
