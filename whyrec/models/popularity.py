"""Most-popular baseline: ``score(u, i) = |N_i|``, the training degree of item
``i``, the same for every user. No trainable parameters."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor

from .base import CUDA, Recommender

__all__ = ["Popularity"]


class Popularity(Recommender):
    """Args: ``train``: ``(n_users, n_items)`` scipy sparse interaction
    matrix (any stored non-zero counts once).

    ``item_counts`` ``(n_items,)`` float32 is a (persistent) buffer so that a
    checkpoint restores the model; :meth:`embeddings` is not defined."""

    trainable = False
    capabilities = frozenset({CUDA})

    def __init__(self, train):
        if not sp.issparse(train):
            raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
        n_users, n_items = train.shape
        super().__init__(n_users, n_items)
        csr = train.tocsr().copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
        counts = np.bincount(csr.indices, minlength=n_items).astype(np.float32)
        self.register_buffer("item_counts", torch.from_numpy(counts))

    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("Popularity has no embeddings: scores are item training degrees "
                                  "(use score_users / forward)")

    def score_vectors(self, user_vectors: Tensor) -> Tensor:
        raise NotImplementedError("Popularity has no embedding space")

    def score_users(self, users: LongTensor) -> Tensor:
        """``(b, n_items)``: every row is ``item_counts``."""
        u = self._ids(users).reshape(-1)
        return self.item_counts.unsqueeze(0).expand(u.numel(), -1).clone()

    def forward(self, users: LongTensor, items: LongTensor) -> Tensor:
        return self.item_counts[self._ids(items)]
