"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020).

Model (paper Eq. 3-5, matrix form Eq. 6-9)::

    e_u^(k+1) = Σ_{i ∈ N_u} 1/sqrt(|N_u| |N_i|) · e_i^(k)
    e_i^(k+1) = Σ_{u ∈ N_i} 1/sqrt(|N_i| |N_u|) · e_u^(k)
    e_u = Σ_{k=0..K} α_k e_u^(k),   e_i = Σ_{k=0..K} α_k e_i^(k),   α_k = 1/(K+1)
    ŷ_ui = e_u · e_i

or ``E^(k+1) = Â E^(k)`` with ``Â = D^-1/2 A D^-1/2`` (:mod:`whyrec.graph`).
The only trainable parameters are the layer-0 embeddings ``E^(0)``
(``user_emb``, ``item_emb``), initialised ``N(0, 0.1²)`` as in the authors'
code. The normalized adjacency is a non-persistent buffer: it follows
``.to(device)`` but is not part of the state dict (which therefore holds only
``user_emb.weight`` and ``item_emb.weight`` and can go to safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor, nn

from ..graph import (LARGE_BATCH, ROWS_PROPAGATION_MAX_SHARE, LayerZeroInOrder, LightGCNLocalStep,
                     cached_normalized_adjacency, covers_graph, layer_weights, locality_order, node_degrees,
                     permute_adjacency, propagate, propagate_final, propagate_rows)
from .base import CUDA, DOT, FOLD_IN, GRAPH, BatchEmbeddings, Recommender

__all__ = ["LightGCNConfig", "LightGCN", "PROPAGATION_DTYPES"]

#: what ``LightGCNConfig.propagation_dtype`` takes
PROPAGATION_DTYPES = ("float32", "bfloat16")


@dataclass
class LightGCNConfig:
    """``dim``: embedding size d; ``n_layers``: K; ``alphas``: the K+1 layer
    weights α_k (``None`` = 1/(K+1) each); ``init_std``: std of the normal
    initialisation of the layer-0 embeddings; ``reorder``: training steps propagate
    in a locality order of the nodes (spectral groups, reverse Cuthill-McKee within them,
    :func:`whyrec.graph.locality_order`;
    same results up to float summation order, faster sparse products); ``propagation_dtype``:
    ``"float32"``, or ``"bfloat16"``: a training step's sparse products (a batch covering the graph, in the
    locality order) gather their ``x`` rows in bfloat16 and sum in float32 -- half the bytes per gather, not the
    same arithmetic (:func:`whyrec.graph._horner`); evaluation and :meth:`LightGCN.embeddings` stay float32."""

    dim: int = 64
    n_layers: int = 3
    alphas: Optional[Sequence[float]] = None
    init_std: float = 0.1
    reorder: bool = True
    propagation_dtype: str = "float32"

    def __post_init__(self):
        if self.propagation_dtype not in PROPAGATION_DTYPES:
            raise ValueError(f"propagation_dtype must be one of {', '.join(PROPAGATION_DTYPES)}, "
                             f"got {self.propagation_dtype!r}")


class LightGCN(Recommender):
    """LightGCN over ``n_users`` users and ``n_items`` items.

    Args:
        n_users, n_items: sizes.
        config: :class:`LightGCNConfig`.
        graph: the training graph, either the ``(n_users, n_items)`` scipy
            CSR interaction matrix (normalized through the process-wide cache)
            or an already normalized ``(N, N)`` sparse CSR tensor from
            :func:`whyrec.graph.normalized_adjacency`. May be given later with
            :meth:`set_graph`; needed by everything except :meth:`layer0`.

    Attributes:
        user_emb: ``nn.Embedding(n_users, d)`` -- ``E_users^(0)``.
        item_emb: ``nn.Embedding(n_items, d)`` -- ``E_items^(0)``.
        adj: ``(N, N)`` sparse CSR ``Â`` (non-persistent buffer).
        adj_local, node_order, node_rank: with ``config.reorder``, ``Â`` in the locality
            order (new node ``r`` is node ``node_order[r]``; ``node_rank`` is the inverse), which
            :meth:`batch_embeddings` propagates; built by the first call of it, so that a model
            that only scores never pays for them (non-persistent buffers; ``None`` until then).
        item_degree: ``(n_items,)`` int64 training degree of each item
            (non-persistent buffer, used by :meth:`fold_in`).
    """

    capabilities = frozenset({DOT, GRAPH, FOLD_IN, CUDA})

    def __init__(self, n_users: int, n_items: int, config: Optional[LightGCNConfig] = None,
                 graph=None):
        super().__init__(n_users, n_items)
        self.config = config = config or LightGCNConfig()
        if config.n_layers < 0:
            raise ValueError("n_layers must be >= 0")
        self.n_layers = int(config.n_layers)
        self.alphas = layer_weights(self.n_layers, config.alphas)
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        self.register_buffer("adj", None, persistent=False)
        self.register_buffer("item_degree", None, persistent=False)
        for name in ("adj_local", "node_order", "node_rank"):
            self.register_buffer(name, None, persistent=False)
        self._cache: Optional[list[Tensor]] = None
        self._cache_version: Optional[tuple] = None
        self._final: Optional[Tensor] = None
        self._final_version: Optional[tuple] = None
        if graph is not None:
            self.set_graph(graph)

    # ------------------------------------------------------------------ #
    # graph
    # ------------------------------------------------------------------ #
    def set_graph(self, graph) -> "LightGCN":
        """Set the training graph (scipy interaction matrix or normalized
        sparse CSR tensor); moves it to the model's device. Returns self."""
        n = self.n_users + self.n_items
        dev = self.user_emb.weight.device
        dtype = self.user_emb.weight.dtype
        if sp.issparse(graph):
            if graph.shape != (self.n_users, self.n_items):
                raise ValueError(f"interaction matrix has shape {graph.shape}, expected "
                                 f"{(self.n_users, self.n_items)}")
            adj = cached_normalized_adjacency(graph, dtype=dtype, device=dev)
        elif isinstance(graph, Tensor) and graph.layout == torch.sparse_csr:
            if tuple(graph.shape) != (n, n):
                raise ValueError(f"adjacency has shape {tuple(graph.shape)}, expected {(n, n)}")
            adj = graph.to(device=dev, dtype=dtype)
        else:
            raise TypeError("graph must be a scipy.sparse interaction matrix or a torch.sparse_csr "
                            f"normalized adjacency, got {type(graph).__name__}")
        self.adj = adj
        self.item_degree = node_degrees(adj)[self.n_users:].clone()
        self.adj_local = self.node_order = self.node_rank = None  # built by the first training step
        self.invalidate_cache()
        return self

    def _require_graph(self) -> Tensor:
        if self.adj is None:
            raise RuntimeError("LightGCN has no graph: pass graph= to the constructor or call set_graph(train)")
        return self.adj

    # ------------------------------------------------------------------ #
    # embeddings
    # ------------------------------------------------------------------ #
    def layer0(self) -> tuple[Tensor, Tensor]:
        """Layer-0 (trainable) embeddings ``(n_users, d)``, ``(n_items, d)``."""
        return self.user_emb.weight, self.item_emb.weight

    def _emb0(self) -> Tensor:
        return torch.cat([self.user_emb.weight, self.item_emb.weight], 0)

    def train(self, mode: bool = True) -> "LightGCN":
        """Switching mode (``train()`` / ``eval()``) drops the cached
        propagated embeddings."""
        self.invalidate_cache()
        return super().train(mode)

    def invalidate_cache(self) -> None:
        """Forget cached propagated embeddings. Done automatically on
        ``train()``/``eval()``, ``set_graph`` and ``load_weights``, and when the
        weights are modified in place by ordinary tensor ops (version
        counters); call it after editing weights by other means (e.g. fused
        optimizer kernels, which do not bump version counters) while staying
        in eval mode."""
        self._cache = None
        self._cache_version = None
        self._final = None
        self._final_version = None

    def weights_version(self) -> tuple:
        """The layer-0 weights' versions, plus the graph's identity (the propagated layers' cache key)."""
        return self._version()

    def _version(self) -> tuple:
        w_u, w_i = self.user_emb.weight, self.item_emb.weight
        return (w_u._version, w_i._version, w_u.data_ptr(), w_i.data_ptr(), w_u.device,
                id(self.adj))

    def layer_embeddings(self) -> list[Tensor]:
        """All propagated layers ``[E^(0), ..., E^(K)]``, each ``(N, d)`` (users
        first). In eval mode (or under ``torch.no_grad``) the result is computed
        once, detached, and cached until the weights or the graph change; in
        train mode with grad enabled it is recomputed with autograd."""
        adj = self._require_graph()
        if self.training and torch.is_grad_enabled():
            return propagate(adj, self._emb0(), self.n_layers, self.alphas)[1]
        v = self._version()
        if self._cache is None or self._cache_version != v:
            with torch.no_grad():
                _, layers = propagate(adj, self._emb0(), self.n_layers, self.alphas)
            self._cache = [t.detach() for t in layers]
            self._cache_version = v
        return self._cache

    def _final_all(self) -> Tensor:
        layers = self.layer_embeddings()
        out = layers[0] * self.alphas[0]
        for a, x in zip(self.alphas[1:], layers[1:]):
            out = out + x * a
        return out

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings ``E = Σ_k α_k E^(k)`` split into users ``(n_users,
        d)`` and items ``(n_items, d)``. Cached (see :meth:`layer_embeddings`)
        outside training."""
        if self.training and torch.is_grad_enabled():
            e = propagate_final(self._require_graph(), self._emb0(), self.n_layers, self.alphas)
        else:
            v = self._version()
            if self._final is None or self._final_version != v:
                with torch.no_grad():
                    self._final = self._final_all()
                self._final_version = v
            e = self._final
        return e[: self.n_users], e[self.n_users:]

    def batch_embeddings(self, users: LongTensor, pos: LongTensor, neg: LongTensor) -> BatchEmbeddings:
        """Final and layer-0 rows of a BPR batch, with autograd.

        One propagation per batch (:func:`whyrec.graph.propagate_rows`):
        K-1 full sparse products forward and K-1 backward, plus the last
        layer restricted to the batch's nodes (forward and backward). The
        layer-0 rows are not gathered: the L2 term is one dense weighted pass
        over the table (:meth:`BatchEmbeddings.sq_norm`). With ``config.reorder`` the
        propagation runs in the locality order (``adj_local``) and the batch's ids are mapped
        into it. A batch of more than :data:`whyrec.graph.LARGE_BATCH` triples that covers most of
        the graph gets the final table itself (:meth:`BatchEmbeddings.from_final`), which the BPR
        loss reads in chunks: no ``(b, d)`` blocks, whose memory grows with the batch; in the locality
        order such a batch is one autograd node with its L2 term (:class:`whyrec.graph.LightGCNLocalStep`,
        ``config.propagation_dtype`` its products' gathers)."""
        adj = self._require_graph()
        ids = (self._ids(users), self._ids(pos) + self.n_users, self._ids(neg) + self.n_users)
        rows = torch.cat(ids)
        large = len(users) > LARGE_BATCH and torch.is_grad_enabled()
        covers = None
        if self.config.reorder:  # layer 0 gathered straight into the order; the L2 term reads it there
            if self.adj_local is None:
                self.node_order = locality_order(adj, n_users=self.n_users).to(adj.device)
                self.node_rank = torch.empty_like(self.node_order)
                self.node_rank[self.node_order] = torch.arange(len(self.node_order), device=adj.device)
                self.adj_local = permute_adjacency(adj, self.node_order)
            adj, rows = self.adj_local, self.node_rank.index_select(0, rows)  # (faster than [rows] on the CPU)
            ids = rows.split(len(users))
            u0, i0 = self.layer0()
            if large and u0.requires_grad:
                count = torch.bincount(rows, minlength=adj.shape[0])
                if int(count.count_nonzero()) > ROWS_PROPAGATION_MAX_SHARE * adj.shape[0]:  # covers the graph
                    final, sq, x = LightGCNLocalStep.apply(u0, i0, self.node_order, adj, tuple(self.alphas),
                                                           count.to(u0.dtype),
                                                           self.config.propagation_dtype == "bfloat16")
                    return BatchEmbeddings.from_final(final, ids, x, ids, sq_all=sq)
                covers = False  # only its rows are propagated
            x = LayerZeroInOrder.apply(u0, i0, self.node_order, self.node_rank)
        else:
            x = self._emb0()
        if large and covers is None and x.requires_grad:
            covers = covers_graph(rows, x.shape[0])
            if covers:
                final = propagate_final(adj, x, self.n_layers, self.alphas)
                return BatchEmbeddings.from_final(final, ids, x, ids)  # layer 0 and final: the same order
        fin = propagate_rows(adj, x, self.n_layers, rows, self.alphas, split=len(ids), covers=covers)
        return BatchEmbeddings.from_table(*fin, x, ids)

    # ------------------------------------------------------------------ #
    # new users
    # ------------------------------------------------------------------ #
    def fold_in(self, liked_items, user_layer0: Optional[Tensor] = None) -> Tensor:
        """Final embedding ``(d,)`` of a NEW user from the items they like,
        without retraining (the "Charlie" use case).

        The new user ``c`` is added as a node with an edge to each distinct
        liked item, and the propagation rule is applied to ``c`` only::

            d_c = |L|,  d_i' = deg(i) + 1            (the new edge counts)
            e_c^(0)   = user_layer0 or 0               (no trained embedding)
            e_c^(k+1) = Σ_{i ∈ L} 1/sqrt(d_c d_i') · e_i^(k),  k = 0..K-1
            e_c       = Σ_{k=0..K} α_k e_c^(k)

        with ``e_i^(k)`` the trained item layers. Exact for ``c``'s own update
        rule; approximate because the existing nodes are NOT updated: with
        the real new edges, item ``i``'s degree would become ``deg(i)+1`` in
        *its* normalization too and ``e_i^(k)`` (k >= 1) would receive a
        message from ``c``, which would propagate further to other users and
        items. Those second-order changes are ignored (they are O(1/deg(i))
        per item). ``e_c^(0) = 0`` unless ``user_layer0`` is given, so with
        the default the ``α_0`` term is missing compared with a trained user.

        Args:
            liked_items: item ids (any int sequence / LongTensor; duplicates
                are ignored).
            user_layer0: optional ``(d,)`` layer-0 embedding for the user.

        Returns:
            ``(d,)`` tensor; score items with ``model.score_vectors(e)``.
        """
        adj = self._require_graph()
        items = self._liked(liked_items)
        with torch.no_grad():
            layers = self.layer_embeddings()
            d_c = float(items.numel())
            d_i = self.item_degree.to(adj.device)[items].to(layers[0].dtype) + 1.0
            w = (1.0 / torch.sqrt(d_c * d_i)).unsqueeze(1)  # (|L|, 1)
            nodes = items + self.n_users
            if user_layer0 is None:
                out = torch.zeros(layers[0].shape[1], dtype=layers[0].dtype, device=layers[0].device)
            else:
                out = user_layer0.detach().to(layers[0]) * self.alphas[0]
            for k in range(self.n_layers):
                e_k1 = (w * layers[k][nodes]).sum(0)  # e_c^(k+1)
                out = out + self.alphas[k + 1] * e_k1
        return out

    def fold_in_contributions(self, liked_items, items) -> Tensor:
        """``(|L|, R)``: each liked item's exact term in a folded-in new user's score for ``items``.

        With :meth:`fold_in`'s ``e_c = Σ_k α_{k+1} Σ_{j∈L} w_j e_j^(k)`` (no layer-0 term) and
        ``w_j = 1/sqrt(|L| (deg(j)+1))``, the score is a sum of one term per liked item::

            score(c, r) = e_c · e_r = Σ_{j∈L} w_j Σ_{k=0..K-1} α_{k+1} e_j^(k) · e_r

        Row ``j`` is ``liked_items[j]``'s term; each column sums to ``score_vectors(fold_in(L))`` at
        ``items[r]``. ``liked_items``: ``(|L|,)`` distinct item ids; ``items``: ``(R,)`` item ids.
        """
        liked = self._ids(liked_items).reshape(-1)
        targets = self._ids(items).reshape(-1)
        if liked.numel() == 0 or torch.unique(liked).numel() != liked.numel():
            raise ValueError("fold_in_contributions needs distinct liked items, at least one")
        with torch.no_grad():
            layers = self.layer_embeddings()
            _, item_final = self.embeddings()
            d_i = self.item_degree.to(liked.device)[liked].to(layers[0].dtype) + 1.0
            w = 1.0 / torch.sqrt(float(liked.numel()) * d_i)  # (|L|,)
            nodes = liked + self.n_users
            mixed = sum(float(self.alphas[k + 1]) * layers[k][nodes] for k in range(self.n_layers))  # (|L|, d)
            return w.unsqueeze(1) * (mixed @ item_final[targets].to(mixed).T)

    def _liked(self, liked_items) -> Tensor:
        """The distinct liked item ids, checked (at least one, each in ``[0, n_items)``)."""
        items = torch.unique(self._ids(liked_items).reshape(-1))
        if items.numel() == 0:
            raise ValueError("fold_in needs at least one liked item")
        if int(items.min()) < 0 or int(items.max()) >= self.n_items:
            raise ValueError(f"item ids must lie in [0, {self.n_items})")
        return items

    def extra_repr(self) -> str:
        return (f"n_users={self.n_users}, n_items={self.n_items}, dim={self.config.dim}, "
                f"n_layers={self.n_layers}, graph={'set' if self.adj is not None else 'unset'}")
