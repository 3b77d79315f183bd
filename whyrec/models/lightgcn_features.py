"""LightGCN with side features (seed 000): layer-0 embeddings from an id embedding plus a
linear projection of the node's named feature vector.

Model::

    E_u^(0) = P_u + X_u W_u          (users:  X_u (n_users, f_u), W_u (f_u, d))
    E_m^(0) = P_m + X_m W_m          (items:  X_m (n_items, f_m), W_m (f_m, d))
    E       = Σ_{k=0..K} α_k Â^k E^(0) = S E^(0),      S = Σ_k α_k Â^k   (N × N, symmetric)
    ŷ(u, m) = E_u · E_m

``X`` are the dataset's feature matrices as loaded (binary indicators: one-hot gender, age
bucket, occupation, zip region; multi-hot genres; one-hot release decade), NOT rescaled, so an
Integrated-Gradients input is a readable 0/1 vector; ``W`` absorbs the scale. ``features``
selects which side uses them (``"user,item"``, ``"user"``, ``"item"``, ``"none"``; ``none`` is
plain LightGCN). Trainable parameters: ``user_emb`` (P_u), ``item_emb`` (P_m), ``user_proj``
(W_u) and ``item_proj`` (W_m) for the sides in use. The feature matrices are non-persistent
buffers: they live in the run's ``extras.npz``, not in the weights file.

Everything else (propagation, caching, BPR batches, fold-in) is :class:`LightGCN`'s, run on
the layer-0 matrix above (:meth:`_emb0`).

Integrated Gradients over the features of one pair (:mod:`whyrec.explain.features`)
-------------------------------------------------------------------------------------
IG's input is ``x = concat(X_u[u], X_m[m])`` of the explained pair; every other node's
features are held fixed. Because propagation is linear in ``E^(0)``, changing row ``u`` of
``E^(0)`` by ``δ_u = (x_u − X_u[u]) W_u`` and row ``m`` by ``δ_m = (x_m − X_m[m]) W_m``
changes the final embeddings by ``S[:, u] δ_u + S[:, m] δ_m`` — every node moves, but the
score only reads rows ``u`` and ``m``, so exactly::

    e_u(x) = E_u + S_uu δ_u + S_um δ_m,      e_m(x) = E_m + S_mu δ_u + S_mm δ_m

with three scalars ``S_uu, S_um = S_mu, S_mm`` per pair (:meth:`pair_operator`: K sparse
products with the two indicator columns). ``ŷ(x)`` is therefore a quadratic in ``x`` and IG
steps cost a few small dense products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor, nn

from ..graph import propagate_final, scores_with_histories
from .base import FEATURES
from .lightgcn import LightGCN, LightGCNConfig

__all__ = ["LightGCNFeaturesConfig", "LightGCNFeatures", "parse_features"]

FEATURE_CHOICES = ("user,item", "user", "item", "none")


def parse_features(value) -> tuple[bool, bool]:
    """``"user,item"`` / ``"item,user"`` / ``"user"`` / ``"item"`` / ``"none"`` -> (use_user, use_item)."""
    text = str(value if value is not None else "none").strip().lower().replace(" ", "")
    parts = {p for p in text.split(",") if p}
    if parts == {"none"} or not parts:
        return False, False
    if not parts <= {"user", "item"}:
        raise ValueError(f"--features must be one of {', '.join(FEATURE_CHOICES)}, got {value!r}")
    return "user" in parts, "item" in parts


@dataclass
class LightGCNFeaturesConfig(LightGCNConfig):
    """:class:`LightGCNConfig` plus ``features`` (which sides use their feature matrix),
    ``proj_init_std`` (std of the normal initialisation of ``W``) and the training objective
    (read by the recipe's trainer): ``loss`` ``"bpr"`` or ``"bce"``, ``bce_negatives`` (sampled
    unobserved items per observed rating for BCE, 0 or 1) -- see
    :mod:`whyrec.train.bce`."""

    features: str = "user,item"
    proj_init_std: float = 0.01
    loss: str = "bpr"
    bce_negatives: int = 1


class LightGCNFeatures(LightGCN):
    """LightGCN whose layer-0 rows are ``P + X W`` (module docstring).

    Args:
        n_users, n_items: sizes.
        config: :class:`LightGCNFeaturesConfig`.
        graph: as for :class:`LightGCN`.
        user_features: ``(n_users, f_u)`` array or ``None``; required when the config uses
            user features.
        item_features: ``(n_items, f_m)`` array or ``None``; likewise.
    """

    def __init__(self, n_users: int, n_items: int, config: Optional[LightGCNFeaturesConfig] = None,
                 graph=None, user_features=None, item_features=None):
        config = config or LightGCNFeaturesConfig()
        use_user, use_item = parse_features(config.features)
        super().__init__(n_users, n_items, config, graph=None)
        self.use_user, self.use_item = use_user, use_item
        self.register_buffer("x_user", None, persistent=False)
        self.register_buffer("x_item", None, persistent=False)
        self.user_proj: Optional[nn.Linear] = None
        self.item_proj: Optional[nn.Linear] = None
        if self.use_user:
            xu = self._check_matrix(user_features, n_users, "user")
            self.x_user = xu
            self.user_proj = nn.Linear(xu.shape[1], config.dim, bias=False)
            nn.init.normal_(self.user_proj.weight, std=config.proj_init_std)
        if self.use_item:
            xm = self._check_matrix(item_features, n_items, "item")
            self.x_item = xm
            self.item_proj = nn.Linear(xm.shape[1], config.dim, bias=False)
            nn.init.normal_(self.item_proj.weight, std=config.proj_init_std)
        self._train_csr: Optional[sp.csr_matrix] = None
        if graph is not None:
            self.set_graph(graph)

    @staticmethod
    def _check_matrix(values, n: int, side: str) -> Tensor:
        if values is None:
            raise ValueError(f"this dataset has no {side} features; train with --features "
                             f"{'item' if side == 'user' else 'user'} or --features none")
        arr = np.asarray(values, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise ValueError(f"{side} feature matrix has shape {arr.shape}, expected ({n}, f) with f >= 1")
        return torch.from_numpy(np.ascontiguousarray(arr))

    # ------------------------------------------------------------------ #
    def set_graph(self, graph) -> "LightGCNFeatures":
        if sp.issparse(graph):
            self._train_csr = sp.csr_matrix(graph, dtype=np.float32)
        return super().set_graph(graph)

    @property
    def has_features(self) -> bool:
        return self.use_user or self.use_item

    @property
    def capabilities(self) -> frozenset:
        """LightGCN's, plus :data:`~whyrec.models.base.FEATURES` when features are on for a side."""
        return LightGCN.capabilities | {FEATURES} if self.has_features else LightGCN.capabilities

    def user_layer0(self) -> Tensor:
        e = self.user_emb.weight
        if self.use_user:
            e = e + self.x_user @ self.user_proj.weight.T
        return e

    def item_layer0(self) -> Tensor:
        e = self.item_emb.weight
        if self.use_item:
            e = e + self.x_item @ self.item_proj.weight.T
        return e

    def layer0(self) -> tuple[Tensor, Tensor]:
        """Layer-0 embeddings ``P + X W`` ``(n_users, d)``, ``(n_items, d)``."""
        return self.user_layer0(), self.item_layer0()

    def _emb0(self) -> Tensor:
        return torch.cat([self.user_layer0(), self.item_layer0()], 0)

    def _version(self) -> tuple:
        extra = tuple((p.weight._version, p.weight.data_ptr()) for p in (self.user_proj, self.item_proj)
                      if p is not None)
        return super()._version() + extra + (id(self.x_user), id(self.x_item))

    def projections(self) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """``W_u`` ``(f_u, d)`` and ``W_m`` ``(f_m, d)`` (``None`` for a side without features)."""
        wu = self.user_proj.weight.T if self.user_proj is not None else None
        wm = self.item_proj.weight.T if self.item_proj is not None else None
        return wu, wm

    # ------------------------------------------------------------------ #
    # exact per-pair operator for feature IG
    # ------------------------------------------------------------------ #
    def propagation_columns(self, nodes: LongTensor) -> Tensor:
        """``S[:, nodes]`` ``(N, len(nodes))`` with ``S = Σ_k α_k Â^k`` (K sparse products with
        the indicator columns; ``S`` is symmetric so these are also rows)."""
        adj = self._require_graph()
        nodes = self._ids(nodes).reshape(-1)
        n = self.n_users + self.n_items
        x = torch.zeros(n, nodes.numel(), dtype=adj.dtype, device=adj.device)
        x[nodes, torch.arange(nodes.numel(), device=adj.device)] = 1.0
        with torch.no_grad():
            return propagate_final(adj, x, self.n_layers, self.alphas)

    def pair_operator(self, users: LongTensor, items: LongTensor, chunk: int = 512) -> Tensor:
        """``(b, 3)``: ``S_uu``, ``S_um`` (= ``S_mu``) and ``S_mm`` for each pair (``items`` are
        item indices), in chunks of ``chunk`` pairs."""
        users, items = self._ids(users).reshape(-1), self._ids(items).reshape(-1)
        out = []
        for s in range(0, users.numel(), chunk):
            u, m = users[s:s + chunk], items[s:s + chunk] + self.n_users
            b = u.numel()
            cols = self.propagation_columns(torch.cat([u, m]))
            ar = torch.arange(b, device=cols.device)
            out.append(torch.stack([cols[u, ar], cols[m, ar], cols[m, b + ar]], 1))
        return torch.cat(out, 0) if out else torch.zeros(0, 3)

    # ------------------------------------------------------------------ #
    # faithfulness: re-score users from a changed history
    # ------------------------------------------------------------------ #
    def score_histories(self, histories: sp.csr_matrix, users: Optional[LongTensor] = None) -> Tensor:
        """Scores ``(b, n_items)`` when user ``users[r]``'s training items are replaced by row
        ``r`` of ``histories``: the edges are changed in the training graph, the normalized
        adjacency is rebuilt and the trained layer-0 rows (features included) are propagated
        again -- the same definition as LightGCN's in :func:`whyrec.explain.faithfulness.rescore`."""
        if users is None:
            raise ValueError("LightGCNFeatures.score_histories needs the users whose histories change")
        if self._train_csr is None:
            raise RuntimeError("score_histories needs the training matrix (build the model with graph=train)")
        users = np.asarray(torch.as_tensor(users).cpu()).reshape(-1)
        histories = sp.csr_matrix(histories)
        with torch.no_grad():
            emb0 = self._emb0().detach()
        return scores_with_histories(emb0, self._train_csr, self.n_layers, self.alphas, users, histories)

    def extra_repr(self) -> str:
        feats = ",".join(s for s, on in (("user", self.use_user), ("item", self.use_item)) if on) or "none"
        return super().extra_repr() + f", features={feats}"
