"""Model cards for MetaEmbed checkpoints: a Jinja template and the generator that fills it."""

from .generator import BudgetScore, build_model_card, save_model_card, scores_from_mapping

__all__ = ["BudgetScore", "build_model_card", "save_model_card", "scores_from_mapping"]
