"""Uniform negative sampling for BPR, vectorised.

One epoch = one pass over all training interactions ``(u, i)`` in a random
order, each paired with one negative item ``j`` drawn uniformly from the items
``u`` has NOT interacted with in training. All negatives of an epoch are
drawn at once; membership is tested with a binary search over the sorted keys
``u * n_items + i`` of the training matrix, and only the collisions are
redrawn until none remain (rejection sampling = exactly uniform over
non-positives).

Note: the LightGCN authors' PyTorch port (``UniformSample_original``) instead
draws ``n_interactions`` users uniformly and a random positive for each; the
number of samples per epoch is the same, the pass over interactions here
weights users by their degree exactly once per epoch.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

__all__ = ["UniformNegativeSampler"]


class UniformNegativeSampler:
    """Args: ``train``: ``(n_users, n_items)`` scipy sparse binary matrix;
    ``seed``: base seed -- epoch ``e`` uses ``np.random.default_rng([seed, e])``,
    so an epoch's samples do not depend on which epochs were drawn before.
    """

    def __init__(self, train, seed: int = 2020):
        if not sp.issparse(train):
            raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
        csr = train.tocsr()
        if not csr.has_canonical_format or (csr.data.size and not np.all(csr.data)):
            csr = csr.copy()
            csr.sum_duplicates()
            csr.eliminate_zeros()
        self.n_users, self.n_items = csr.shape
        deg = np.diff(csr.indptr)
        if np.any(deg >= self.n_items):
            bad = int(np.flatnonzero(deg >= self.n_items)[0])
            raise ValueError(f"user {bad} interacted with every item: no negative exists")
        self.users = np.repeat(np.arange(self.n_users, dtype=np.int64), deg)
        self.items = csr.indices.astype(np.int64)
        # canonical CSR: rows ascending, columns ascending within a row -> keys sorted
        self.keys = self.users * self.n_items + self.items
        self.seed = int(seed)
        self.n_interactions = len(self.items)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Vectorised membership test ``(u, i) ∈ train`` -> bool array."""
        q = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if self.keys.size == 0:
            return np.zeros(q.shape, dtype=bool)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, self.keys.size - 1)
        return self.keys[pos] == q

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform non-positive item per entry of ``users``."""
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=users.shape, dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, neg))
        while bad.size:
            neg[bad] = rng.integers(0, self.n_items, size=bad.size, dtype=np.int64)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        return neg

    def sample_epoch(self, epoch: int = 0, rng: Optional[np.random.Generator] = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, pos, neg)``, three int64 arrays of length
        ``n_interactions``: every training interaction once, shuffled, with a
        uniform negative each. Deterministic given ``(seed, epoch)``."""
        if rng is None:
            rng = np.random.default_rng([self.seed, int(epoch)])
        perm = rng.permutation(self.n_interactions)
        users = self.users[perm]
        pos = self.items[perm]
        neg = self.negatives(users, rng)
        return users, pos, neg

    def __len__(self) -> int:
        return self.n_interactions
