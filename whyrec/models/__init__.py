"""Recommender models: one per module, all :class:`~whyrec.models.base.Recommender` s."""

from .base import BatchEmbeddings, Recommender
from .lightgcn import LightGCN, LightGCNConfig
from .mf import MF, MFConfig
from .popularity import Popularity

__all__ = ["Recommender", "BatchEmbeddings", "LightGCN", "LightGCNConfig", "MF", "MFConfig",
           "Popularity"]
