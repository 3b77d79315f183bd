"""Non-negative matrix factorization baseline (scikit-learn), the seed 002 "NMF" row.

``R ≈ W H`` with ``W ≥ 0`` ``(n_users, k)`` and ``H ≥ 0`` ``(k, n_items)`` fitted on the binary
training matrix by :class:`sklearn.decomposition.NMF` (coordinate descent, Frobenius loss,
``init="nndsvda"``). Seed 002: 16 factors for Last.fm, "L1 and L2 regularizations weighted
equally, with regularization coefficient 0.005" -> ``l1_ratio = 0.5`` and the coefficient
0.005 on the unscaled objective ``½‖R − WH‖² + 0.005 (½‖W‖₁ + ¼‖W‖²) + (same for H)``.
scikit-learn ≥ 1.2 multiplies ``alpha_W`` by ``n_items`` and ``alpha_H`` by ``n_users``, so we
pass ``alpha_W = 0.005 / n_items`` and ``alpha_H = 0.005 / n_users`` (passing 0.005 itself
drives every factor to zero on Last.fm: Recall@10 = 0).
``score(u, i) = W[u] · H[:, i]``. :meth:`score_histories` folds in a changed history by
solving the non-negative least-squares problem ``min_{w ≥ 0} ‖y − w H‖`` for each row
(``H`` fixed, no regularization) — what "removing an input" means for NMF.

Where it computes: ``W`` and ``H`` are buffers that move with ``.to(device)`` (the model declares
:data:`~whyrec.models.base.CUDA`), so scoring (``score_users``, ``forward``, evaluation, top-k) runs
on the model's device, CUDA included. Fitting (scikit-learn's coordinate descent) runs on the CPU and
the factors are then copied to the model's device; the fold-in of :meth:`score_histories` solves its
NNLS problems on the CPU too (:func:`scipy.optimize.nnls` on a CPU copy of ``H``), and the product
``w H`` is then taken on the model's device, where the scores are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .base import CUDA, DOT, RESCORE, Recommender

__all__ = ["NMFConfig", "NMFRecommender"]


@dataclass
class NMFConfig:
    n_components: int = 16
    alpha: float = 0.005
    l1_ratio: float = 0.5
    max_iter: int = 500
    seed: int = 2020


class NMFRecommender(Recommender):
    """``W`` ``(n_users, k)`` and ``H`` ``(k, n_items)`` are persistent buffers (zeros until :meth:`fit_matrix`)
    on the model's device; fitting and the NNLS fold-in run on the CPU (module docstring)."""

    capabilities = frozenset({DOT, RESCORE, CUDA})

    trainable = False  # not trained by BPR; fitted in closed form by fit_matrix

    def __init__(self, n_users: int, n_items: int, config: NMFConfig | None = None):
        super().__init__(n_users, n_items)
        self.config = config = config or NMFConfig()
        self.register_buffer("W", torch.zeros(n_users, config.n_components))
        self.register_buffer("H", torch.zeros(config.n_components, n_items))

    def fit_matrix(self, train: sp.csr_matrix) -> "NMFRecommender":
        from sklearn.decomposition import NMF

        if tuple(train.shape) != (self.n_users, self.n_items):
            raise ValueError(f"train has shape {train.shape}, expected {(self.n_users, self.n_items)}")
        c = self.config
        x = sp.csr_matrix(train, dtype=np.float32)
        x.data[:] = 1.0
        nmf = NMF(n_components=c.n_components, init="nndsvda", solver="cd", beta_loss="frobenius",
                  alpha_W=c.alpha / self.n_items, alpha_H=c.alpha / self.n_users, l1_ratio=c.l1_ratio, max_iter=c.max_iter, random_state=c.seed)
        w = nmf.fit_transform(x)
        self.W.copy_(torch.from_numpy(np.asarray(w, np.float32)))
        self.H.copy_(torch.from_numpy(np.asarray(nmf.components_, np.float32)))
        return self

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.W, self.H.T

    def score_histories(self, histories: sp.csr_matrix, users=None) -> Tensor:
        """Scores ``(b, n_items)`` for changed histories, on the model's device: the NNLS fold-in
        ``w = argmin_{w ≥ 0} ‖y − w H‖`` of each row on the CPU (scipy, float64), then ``w H``."""
        from scipy.optimize import nnls

        h = sp.csr_matrix(histories, dtype=np.float64)
        H = self.H.detach().double().cpu().numpy()
        w = np.zeros((h.shape[0], H.shape[0]), np.float64)
        for r in range(h.shape[0]):
            y = np.asarray(h[r].todense()).ravel()
            w[r], _ = nnls(H.T, y)
        return (torch.from_numpy(w).to(self.H.device) @ self.H.detach().double()).float()

    def extra_repr(self) -> str:
        return f"n_users={self.n_users}, n_items={self.n_items}, k={self.config.n_components}"
