"""Ranking evaluation: full-ranking top-K metrics (recall, precision, NDCG,
hit rate, MRR, coverage) and top-k recommendation lists."""

from .ranking import METRIC_NAMES, evaluate_ranking, per_user_metrics, top_k_items

__all__ = ["evaluate_ranking", "per_user_metrics", "top_k_items", "METRIC_NAMES"]
