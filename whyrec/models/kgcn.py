"""KGCN (Wang et al., "Knowledge Graph Convolutional Networks for Recommender
Systems", WWW 2019).

Users ``u``, KG entities ``e`` and KG relations ``r`` each have a trainable
embedding of size d; item ``v`` *is* entity ``v`` (the item index space is the
first ``n_items`` entities, see :mod:`whyrec.data.lastfm`). For a user ``u`` and
an item ``v`` (paper §3, notation of Algorithm 1)::

    π_r^u      = g(u, r) = u · r                     user-relation score
    π̃_{v,e}^u = exp(π_{r_{v,e}}^u) / Σ_{e' ∈ S(v)} exp(π_{r_{v,e'}}^u)
                                                     softmax over the SAMPLED neighbours S(v)
    v_{S(v)}^u = Σ_{e ∈ S(v)} π̃_{v,e}^u e            neighbourhood representation
    sum:       agg(v, v_S) = σ(W (v + v_S) + b)
    concat:    agg(v, v_S) = σ(W concat(v, v_S) + b)
    neighbor:  agg(v, v_S) = σ(W v_S + b)
    ŷ_uv       = u · v^u                             (the logit; the paper's f adds a sigmoid)

with a receptive field of depth H (``n_iter``; Algorithm 1)::

    hop 0 = [v];  hop h+1 = S(e) for each e at hop h   (K^h entries at hop h, repeats kept)
    e^u[0] = e for every entity of the receptive field
    for i = 1..H:                      # iteration i has its own W_i, b_i (shared by the hops)
        for each entity e at hop h = 0..H-i:
            e^u[i] = agg_i(e^u[i-1], Σ_{e' ∈ S(e)} π̃_{e,e'}^u e'^u[i-1])
    v^u = v^u[H]

``σ`` is ReLU for the iterations before the last and tanh for the last one
(the authors' code; the paper only says "nonlinear activation function").

Choices the paper leaves open (all as the authors' TensorFlow code unless said):

* **Neighbour sample** ``S(e)`` of fixed size K (``n_neighbors``), drawn ONCE at
  construction: ``K`` distinct neighbours when ``e`` has at least ``K``, otherwise
  ``K`` draws *with* replacement (the authors' ``construct_adj``). The KG is
  undirected: every triple ``(h, r, t)`` makes ``t`` a neighbour of ``h`` and ``h`` a
  neighbour of ``t``, both through relation ``r``. An entity without any triple
  (none in the Last.fm KG) gets itself K times through an extra trainable "self"
  relation (row ``n_relations`` of ``relation_emb``), so that ``v_S = v``; the
  authors' code would fail on such an entity. The sample is drawn with a numpy
  generator seeded by ``config.neighbor_seed`` or, when that is ``None``, by a
  number drawn from torch's global RNG (the CLI seeds it with ``--seed`` just before
  building the model, so the sample is a function of ``--seed`` like the initial
  weights). It is stored in the persistent buffers ``adj_entity`` /
  ``adj_relation``, so a saved model reloads with exactly its training sample.
* **Equations as in the paper**: ``π = u · r`` (a sum) and ``v_S = Σ π̃ e`` (a sum).
  The authors' code uses means instead (``reduce_mean``), i.e. ``u·r / d`` and
  ``(1/K) Σ π̃ e``; this module follows the paper.
* Initialisation: Glorot-uniform for the user, entity and relation embeddings and
  for each ``W_i``, zero biases (the authors' ``xavier_initializer``). No dropout.
* L2 (done by the trainer, :class:`whyrec.train.bce.BCE`): on the batch rows
  returned in :class:`BatchEmbeddings` ``users0``/``pos0``/``neg0`` = the user's
  embedding row and the item's own entity row (not on relations, neighbour
  entities or ``W``; the authors' code penalises the whole matrices and ``W``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import LongTensor, Tensor, nn

from .base import CUDA, BatchEmbeddings, Recommender

__all__ = ["KGCNConfig", "KGCN", "sample_neighbors", "AGGREGATORS"]

AGGREGATORS = ("sum", "concat", "neighbor")


@dataclass
class KGCNConfig:
    """``dim``: d; ``n_neighbors``: K = |S(v)|; ``n_iter``: H, the depth of the
    receptive field; ``aggregator``: ``sum`` | ``concat`` | ``neighbor``;
    ``neighbor_seed``: seed of the neighbour sample (``None``: drawn from torch's
    global RNG); ``eval_budget``: about how many floats one chunk of
    :meth:`KGCN.score_users` may hold per intermediate tensor. The L2 weight is a
    training setting (``--reg``)."""

    dim: int = 16
    n_neighbors: int = 8
    n_iter: int = 1
    aggregator: str = "sum"
    neighbor_seed: Optional[int] = None
    eval_budget: int = 1 << 22


def sample_neighbors(kg_triples: np.ndarray, n_entities: int, n_neighbors: int, self_relation: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-size neighbour samples of every entity of an undirected KG.

    Args:
        kg_triples: ``(n, 3)`` int ``(head, relation, tail)``.
        n_entities: number of entities E (ids ``0..E-1``).
        n_neighbors: K.
        self_relation: relation id used for an entity without neighbours.
        rng: numpy generator.

    Returns:
        ``adj_entity``, ``adj_relation``: ``(E, K)`` int64; row ``e`` holds the K
        sampled neighbours of ``e`` and the relation linking each to ``e``. An entity
        with ``n >= K`` neighbours gets K distinct ones (uniformly, without
        replacement), one with ``0 < n < K`` gets K uniform draws with replacement,
        one with none gets ``(e, self_relation)`` K times.
    """
    t = np.asarray(kg_triples, np.int64).reshape(-1, 3)
    k = int(n_neighbors)
    src = np.concatenate([t[:, 0], t[:, 2]])
    dst = np.concatenate([t[:, 2], t[:, 0]])
    rel = np.concatenate([t[:, 1], t[:, 1]])
    deg = np.bincount(src, minlength=n_entities)
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    # edges grouped by source, in random order within each group
    order = np.lexsort((rng.random(len(src)), src))
    pick = np.floor(rng.random((n_entities, k)) * np.maximum(deg, 1)[:, None]).astype(np.int64)
    many = deg >= k
    pick[many] = np.arange(k)  # the first K of a random permutation: K distinct neighbours
    edge = order[np.minimum(start[:, None] + pick, max(len(src) - 1, 0))] if len(src) else None
    adj_entity = np.repeat(np.arange(n_entities, dtype=np.int64)[:, None], k, 1)
    adj_relation = np.full((n_entities, k), int(self_relation), np.int64)
    has = deg > 0
    if has.any():
        adj_entity[has] = dst[edge[has]]
        adj_relation[has] = rel[edge[has]]
    return adj_entity, adj_relation


class KGCN(Recommender):
    """KGCN over ``n_users`` users and ``n_items`` items (= entities ``0..n_items-1``).

    Args:
        n_users, n_items: sizes.
        kg_triples: ``(n, 3)`` int64 ``(head, relation, tail)`` in entity index space.
        n_entities: E (``>= n_items``).
        n_relations: R (relation ids ``0..R-1``).
        config: :class:`KGCNConfig`.

    Attributes:
        user_emb: ``nn.Embedding(n_users, d)`` -- u.
        entity_emb: ``nn.Embedding(E, d)`` -- e (rows ``0..n_items-1`` are the items).
        relation_emb: ``nn.Embedding(R + 1, d)`` -- r; row R is the "self" relation.
        aggregators: ``H`` ``nn.Linear`` s: ``W_i``, ``b_i`` of iteration i
            (``d -> d``; ``2d -> d`` for ``concat``).
        adj_entity, adj_relation: ``(E, K)`` int64 persistent buffers: the sampled
            neighbours S(e) and their relations (:func:`sample_neighbors`).
    """

    capabilities = frozenset({CUDA})

    def __init__(self, n_users: int, n_items: int, kg_triples, n_entities: int, n_relations: int,
                 config: Optional[KGCNConfig] = None):
        super().__init__(n_users, n_items)
        self.config = config = config or KGCNConfig()
        if config.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, got {config.aggregator!r}")
        if config.n_iter < 1 or config.n_neighbors < 1 or config.dim < 1:
            raise ValueError("dim, n_neighbors and n_iter must be >= 1")
        n_entities, n_relations = int(n_entities), int(n_relations)
        triples = np.asarray(kg_triples, np.int64)
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise ValueError(f"kg_triples must be (n, 3), got shape {triples.shape}")
        if n_entities < n_items:
            raise ValueError(f"n_entities ({n_entities}) must be >= n_items ({n_items}): item i is entity i")
        if len(triples):
            ents = triples[:, [0, 2]]
            if ents.min() < 0 or ents.max() >= n_entities:
                raise ValueError(f"kg_triples entity ids must lie in [0, {n_entities})")
            if triples[:, 1].min() < 0 or triples[:, 1].max() >= n_relations:
                raise ValueError(f"kg_triples relation ids must lie in [0, {n_relations})")
        self.n_entities, self.n_relations = n_entities, n_relations
        self.n_iter, self.n_neighbors, self.dim = int(config.n_iter), int(config.n_neighbors), int(config.dim)
        seed = config.neighbor_seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        adj_e, adj_r = sample_neighbors(triples, n_entities, self.n_neighbors, n_relations,
                                        np.random.default_rng(seed))
        self.register_buffer("adj_entity", torch.from_numpy(adj_e))
        self.register_buffer("adj_relation", torch.from_numpy(adj_r))
        d = self.dim
        self.user_emb = nn.Embedding(n_users, d)
        self.entity_emb = nn.Embedding(n_entities, d)
        self.relation_emb = nn.Embedding(n_relations + 1, d)
        d_in = 2 * d if config.aggregator == "concat" else d
        self.aggregators = nn.ModuleList(nn.Linear(d_in, d) for _ in range(self.n_iter))
        for emb in (self.user_emb, self.entity_emb, self.relation_emb):
            nn.init.xavier_uniform_(emb.weight)
        for lin in self.aggregators:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------ #
    # the model
    # ------------------------------------------------------------------ #
    def _aggregate(self, i: int, self_vec: Tensor, neigh: Tensor) -> Tensor:
        """Aggregator of iteration ``i`` (0-based): ``self_vec`` ``(b', N, m, d)``
        (``b'`` 1 or b) and the mixed neighbourhood ``neigh`` ``(b, N, m, d)``."""
        lin = self.aggregators[i]
        agg = self.config.aggregator
        if agg == "sum":
            x = lin(self_vec + neigh)
        elif agg == "concat":
            x = lin(torch.cat([self_vec.expand_as(neigh), neigh], -1))
        else:
            x = lin(neigh)
        return torch.tanh(x) if i == self.n_iter - 1 else torch.relu(x)

    def item_representations(self, user_vecs: Tensor, items: Tensor) -> Tensor:
        """User-specific item representations ``v^u`` (Algorithm 1).

        Args:
            user_vecs: ``(b, d)`` user embeddings u.
            items: ``(b', N)`` item ids with ``b'`` 1 (the same N items for every
                user) or b (N items per user).

        Returns:
            ``(b, N, d)``: ``out[x, n] = v^u`` for ``u = user_vecs[x]`` and
            ``v = items[x or 0, n]``.
        """
        k, d = self.n_neighbors, self.dim
        b = user_vecs.shape[0]
        n = items.shape[1]
        # π_r^u for every relation: (b, R+1)
        pi = user_vecs @ self.relation_emb.weight.T
        rows = torch.arange(b, device=pi.device).view(b, 1, 1)
        ents = [items.unsqueeze(-1)]  # hop h: (b', N, K^h)
        weights = []  # hop h: normalised π̃ of S(e) for e at hop h, (b, N, K^h, K)
        for h in range(self.n_iter):
            e = ents[h]
            rel = self.adj_relation[e].flatten(-2)  # (b', N, K^(h+1))
            ents.append(self.adj_entity[e].flatten(-2))
            weights.append(torch.softmax(pi[rows, rel].view(b, n, -1, k), -1))  # π̃
        vecs = [self.entity_emb(e) for e in ents]  # e^u[0] = e: (b', N, K^h, d)
        for i in range(self.n_iter):
            nxt = []
            for h in range(self.n_iter - i):
                nb = vecs[h + 1]
                nb = nb.view(nb.shape[0], n, -1, k, d)  # (b' or b, N, K^h, K, d)
                if nb.shape[0] == 1 and b > 1:  # first iteration, shared items: cheap batched product
                    mixed = torch.einsum("bnmk,nmkd->bnmd", weights[h], nb[0])
                else:
                    mixed = torch.einsum("bnmk,bnmkd->bnmd", weights[h], nb)  # v_S^u
                nxt.append(self._aggregate(i, vecs[h], mixed))
            vecs = nxt
        return vecs[0].squeeze(2)

    def _pair_scores(self, users: Tensor, items: Tensor) -> Tensor:
        uv = self.user_emb(users)
        return (uv.unsqueeze(1) * self.item_representations(uv, items)).sum(-1)

    # ------------------------------------------------------------------ #
    # interface
    # ------------------------------------------------------------------ #
    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("KGCN has no user-independent item embeddings: v^u depends on the user "
                                  "(use score_users / forward)")

    def score_vectors(self, user_vectors: Tensor) -> Tensor:
        raise NotImplementedError("KGCN scores need a known user (item representations are user-specific)")

    def score_users(self, users: LongTensor) -> Tensor:
        """``(b,)`` -> ``(b, n_items)`` scores ``u · v^u``; items are processed in
        chunks so that each intermediate holds about ``config.eval_budget`` floats."""
        u = self._ids(users).reshape(-1)
        b = u.numel()
        uv = self.user_emb(u)
        per_pair = self.n_neighbors ** (self.n_iter - 1) * (self.n_neighbors + 2 * self.dim)
        chunk = max(1, int(self.config.eval_budget) // max(1, b * per_pair))
        out = []
        for start in range(0, self.n_items, chunk):
            items = torch.arange(start, min(start + chunk, self.n_items), device=u.device).unsqueeze(0)
            out.append((uv.unsqueeze(1) * self.item_representations(uv, items)).sum(-1))
        return torch.cat(out, 1) if out else uv.new_zeros((b, 0))

    def forward(self, users: LongTensor, items: LongTensor) -> Tensor:
        """Scores of pairs: ``(b,)``, ``(b,)`` -> ``(b,)``."""
        u = self._ids(users).reshape(-1)
        return self._pair_scores(u, self._ids(items).reshape(-1, 1)).squeeze(1)

    def batch_embeddings(self, users: LongTensor, pos: LongTensor, neg: LongTensor) -> BatchEmbeddings:
        """``users`` = u ``(b, d)``; ``pos``/``neg`` = ``v^u`` of the positive /
        negative item for that user ``(b, d)`` (so ``users·pos`` is ŷ); ``users0`` = u,
        ``pos0``/``neg0`` = the items' own entity rows e_v (the L2 rows)."""
        u, i, j = self._ids(users).reshape(-1), self._ids(pos).reshape(-1), self._ids(neg).reshape(-1)
        uv = self.user_emb(u)
        reps = self.item_representations(uv, torch.stack([i, j], 1))
        return BatchEmbeddings.from_rows(uv, reps[:, 0], reps[:, 1], uv, self.entity_emb(i), self.entity_emb(j))

    def extra_repr(self) -> str:
        return (f"n_users={self.n_users}, n_items={self.n_items}, n_entities={self.n_entities}, "
                f"n_relations={self.n_relations}, dim={self.dim}, n_neighbors={self.n_neighbors}, "
                f"n_iter={self.n_iter}, aggregator={self.config.aggregator}")
