"""GF-CF: a linear item–item filter plus an ideal low-pass filter (Shen et al., "How Powerful is
Graph Convolution for Recommendation?", CIKM 2021, Eq. 14).

.. math::

    s_u = r_u \\big( \\tilde P + \\alpha\\, D_I^{-1/2} V_k V_k^T D_I^{1/2} \\big),
    \\qquad \\tilde P = \\tilde R^T \\tilde R

with ``r_u`` the user's binary training row, ``R̃ = D_U^{-1/2} R D_I^{-1/2}`` and ``V_k`` the top-``k``
right singular vectors of ``R̃`` (:mod:`whyrec.models.spectral`). ``r_u P̃`` is the linear low-pass
filter (a 2-hop LightGCN-like propagation with no embeddings); the second term keeps exactly the
``k`` smoothest item signals of the degree-normalized row and undoes the normalization.

Scoring runs in torch on the model's device (CPU or CUDA, :mod:`whyrec.models.spectral`); the SVD
that fits ``V_k`` runs on the CPU and the basis is then moved to the device.

Choices the paper leaves open, as the authors' code (yshenaw/GF_CF) makes them: ``k = 256`` and
``α = 0.3`` on Gowalla (the paper's Table 3 setting); items without training users get
``D_I^{1/2} = 0`` (the code divides by zero there); the SVD is randomized by default (``--opt
svd=arpack`` for ARPACK as the code uses). Cost per block of ``b`` users: ``4 nnz(R) b`` for the
linear term, ``2 n_items k b`` for the low-pass term.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.sparse as sp
from torch import Tensor

from .spectral import LinearFilter

__all__ = ["GFCFConfig", "GFCF"]


@dataclass
class GFCFConfig:
    rank: int = 256     #: k, the ideal low-pass filter's cut-off (number of singular vectors)
    alpha: float = 0.3  #: α, weight of the ideal low-pass term
    svd: str = "randomized"


class GFCF(LinearFilter):
    """GF-CF over a training matrix ``train`` ``(n_users, n_items)`` (module docstring)."""

    def __init__(self, train: sp.spmatrix, config: GFCFConfig | None = None):
        self.config = config = config or GFCFConfig()
        super().__init__(train, config)

    def right_factor(self) -> Tensor:
        """``D_I^{1/2} V_k`` ``(n_items, k)`` on the model's device (computed once per setting)."""
        return self._cached("right", lambda: (self.V * self.item_power(0.5).unsqueeze(1)).contiguous())

    def low_rank_factors(self):
        return self.graph.item_power(-0.5), self.right_factor(), float(self.config.alpha)

    def filter_items(self, rows) -> Tensor:
        low = rows.scaled(self.item_power(-0.5)).project(self.V)  # V^T D^-1/2 x, (k, b)
        return rows.propagate().addmm_(self.right_factor(), low, alpha=float(self.config.alpha))
