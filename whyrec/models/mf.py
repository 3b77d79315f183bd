"""Matrix factorisation (BPR-MF, Rendle et al. 2009): ``ŷ_ui = p_u · q_i``.

The LightGCN paper's "MF" baseline is LightGCN with K = 0 layers; this class
is the same model without a graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import LongTensor, Tensor, nn

from .base import CUDA, BatchEmbeddings, DOT, Recommender

__all__ = ["MFConfig", "MF"]


@dataclass
class MFConfig:
    """``dim``: embedding size d; ``init_std``: std of the normal init."""

    dim: int = 64
    init_std: float = 0.1


class MF(Recommender):
    """``user_emb`` ``(n_users, d)`` = P, ``item_emb`` ``(n_items, d)`` = Q;
    ``score(u, i) = P[u] · Q[i]``. Final embeddings = layer-0 embeddings."""

    capabilities = frozenset({DOT, CUDA})

    def __init__(self, n_users: int, n_items: int, config: Optional[MFConfig] = None):
        super().__init__(n_users, n_items)
        self.config = config = config or MFConfig()
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)

    def layer0(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """``(P, Q)``: ``(n_users, d)``, ``(n_items, d)``."""
        return self.user_emb.weight, self.item_emb.weight

    def batch_embeddings(self, users: LongTensor, pos: LongTensor, neg: LongTensor) -> BatchEmbeddings:
        u = self.user_emb(self._ids(users))
        i = self.item_emb(self._ids(pos))
        j = self.item_emb(self._ids(neg))
        return BatchEmbeddings.from_rows(u, i, j, u, i, j)

    def extra_repr(self) -> str:
        return f"n_users={self.n_users}, n_items={self.n_items}, dim={self.config.dim}"
