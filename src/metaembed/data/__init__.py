"""Datasets the project generates itself (never downloaded)."""
