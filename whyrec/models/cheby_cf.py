"""ChebyCF: graph spectral filtering with Chebyshev interpolation (Kim et al., "Graph Spectral
Filtering with Chebyshev Interpolation for Recommendation", SIGIR 2025, §4).

With the item graph's normalized Laplacian ``L = I - P̃`` rescaled to ``[-1, 1]``,
``L̃ = 2L/λ_max - I = I - 2P̃`` (``λ_max = 2`` is taken as the bound, as the paper), a user's
degree-normalized row ``x̂ = r ⊙ d_I^{-β}`` is filtered by

.. math::

    s_u = \\Big( \\sum_{k=0}^{K} c_k\\, T_k(\\tilde L)\\, \\hat x
          + \\alpha\\, \\hat x V_\\eta V_\\eta^T \\Big) \\odot d_I^{\\beta}

where ``T_k`` are Chebyshev polynomials (``T_0 = 1, T_1 = x, T_{k+1} = 2x T_k - T_{k-1}``, applied
by the three-term recurrence: ``K`` propagations ``P̃ X`` per block of users), ``V_η`` the top-``η``
right singular vectors of ``R̃`` (the ideal pass filter) and the coefficients ``c_k`` interpolate
the *plateau* transfer function on ``x ∈ [-1, 1]``::

    h(x) = 1/2 + 1/2 (-x)^φ   for x < 0     (low frequencies, λ(P̃) > 1/2: kept)
    h(x) = 1/2 - 1/2   x ^φ   for x ≥ 0     (high frequencies: removed)

``c_k = 2/(K+1) Σ_j h_j T_k(x_j)`` (``c_0`` halved) over the ``K + 1`` Chebyshev nodes
``x_j = cos((K + 1.5 - j)/(K + 1) π)``, ``j = 1..K+1``.

Choices the paper leaves open, as the authors' code (chanwoo0806/ChebyCF) makes them: the target
values ``h_j`` are taken at the Chebyshev–Lobatto points ``cos((K - j)/K π)``, ``j = 0..K``
(ascending, like the nodes), rounded to 3 decimals, and interpolated at the nodes ``x_j`` above
— so the interpolant passes through ``(x_j, h(lobatto_j))``, a slightly shifted plateau (``nodes=
"code"``, the default, reproduces their numbers; ``nodes="exact"`` evaluates ``h`` at the nodes
themselves). Gowalla: ``K = 8, φ = 1.5, η = 512, α = 0.2, β = 0.4`` (their config file). Items
without training users get ``d^{±β} = 0``.

Scoring runs in torch on the model's device (CPU or CUDA, :mod:`whyrec.models.spectral`): the
recurrence's propagations and the ideal pass term; the SVD that fits ``V_η`` runs on the CPU and the
basis is then moved to the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from torch import Tensor

from .spectral import LinearFilter

__all__ = ["ChebyCFConfig", "ChebyCF", "chebyshev_coefficients", "plateau"]

NODES = ("code", "exact")


@dataclass
class ChebyCFConfig:
    order: int = 8          #: K, Chebyshev order (propagations per block)
    flatness: float = 1.5   #: φ of the plateau
    rank: int = 512         #: η, the ideal pass filter's number of singular vectors
    alpha: float = 0.2      #: weight of the ideal pass filter
    beta: float = 0.4       #: degree normalization power
    nodes: str = "code"     #: where the plateau is sampled (module docstring)
    svd: str = "randomized"


def plateau(x: np.ndarray, flatness: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < 0, 0.5 + 0.5 * np.abs(x) ** flatness, 0.5 - 0.5 * np.abs(x) ** flatness)


def chebyshev_coefficients(order: int, flatness: float, nodes: str = "code") -> np.ndarray:
    """``c_0..c_K`` of the interpolated plateau (module docstring)."""
    K = int(order)
    if K < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    if nodes not in NODES:
        raise ValueError(f"nodes must be one of {', '.join(NODES)}, got {nodes!r}")
    j = np.arange(1, K + 2)
    x = np.cos((K + 1 + 0.5 - j) / (K + 1) * math.pi)
    if nodes == "code":
        lob = np.round(np.cos((K - np.arange(K + 1)) / max(K, 1) * math.pi), 3) if K else np.array([-1.0])
        h = np.round(plateau(lob, flatness), 3)
    else:
        h = plateau(x, flatness)
    T = np.polynomial.chebyshev.chebvander(x, K)  # (K+1 nodes, K+1 orders)
    c = (2.0 / (K + 1)) * (T * h[:, None]).sum(0)
    c[0] /= 2
    return c


class ChebyCF(LinearFilter):
    """ChebyCF over a training matrix ``train`` ``(n_users, n_items)`` (module docstring)."""

    def __init__(self, train: sp.spmatrix, config: ChebyCFConfig | None = None):
        self.config = config = config or ChebyCFConfig()
        chebyshev_coefficients(config.order, config.flatness, config.nodes)  # validates them
        super().__init__(train, config)

    @property
    def coefficients(self) -> np.ndarray:
        c = self.config
        return self._cached("coefficients", lambda: chebyshev_coefficients(c.order, c.flatness, c.nodes))

    def laplacian(self, X: Tensor) -> Tensor:
        """``L̃ X = X - 2 P̃ X``."""
        return self.propagate(X).mul_(-2.0).add_(X)

    def low_rank_factors(self):
        return self.graph.item_power(-self.config.beta), self.right_factor(), float(self.config.alpha)

    def right_factor(self) -> Tensor:
        """``D_I^{β} V_η`` ``(n_items, η)`` on the model's device (computed once per setting)."""
        return self._cached("right", lambda: (self.V * self.item_power(self.config.beta).unsqueeze(1)).contiguous())

    def filter_items(self, rows) -> Tensor:
        c = self.config
        post = self.item_power(c.beta).unsqueeze(1)
        xn = rows.scaled(self.item_power(-c.beta))        # x̂ = x ⊙ d^-β, sparse
        coeffs = self.coefficients
        prev = xn.dense()                                 # T_0(L̃) x̂
        out = prev * float(coeffs[0])
        if len(coeffs) > 1:
            cur = xn.propagate().mul_(-2.0).add_(prev)    # T_1(L̃) x̂ = x̂ - 2 P̃ x̂, first product sparse
            out.add_(cur, alpha=float(coeffs[1]))
            for ck in coeffs[2:]:                         # T_{k+1} = 2 L̃ T_k - T_{k-1}
                prev, cur = cur, self.laplacian(cur).mul_(2.0).sub_(prev)
                out.add_(cur, alpha=float(ck))
        if c.alpha:
            out.addmm_(self.V, xn.project(self.V), alpha=float(c.alpha))
        return out.mul_(post)
