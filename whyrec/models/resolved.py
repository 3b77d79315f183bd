"""The explainable recommender of seed 002 ("Explainable Recommender Systems via
Resolving Learning Representations", CIKM 2020, §4), with the choices the text
leaves open written down (also in ``docs/resolved.md``).

Graph: users ``u``, items ``t``, entities ``e`` (:mod:`whyrec.data.entities`);
``N_u`` the user's training items, ``N_t`` the item's entities, ``N_e`` the items
of an entity. ``D`` is the size of one segment, ``C1`` the number of entity
factors, ``C2`` the number of item factors.

Encoder (eq. 4–12)::

    p(e, c) = softmax_c( cos(z_e^slf, f_c^ent) / γ )                 (9)   c = 1..C1
    p(t, c) = softmax_c( cos(z_t^slf, f_c^itm) / γ )                 (10)  c = 1..C2
    z_t^{ent,c} ~ N( g_μ^ent(y_t^c), g_σ^ent(y_t^c) ),  y_t^c = Σ_{e∈N_t} p(e,c)/|N_t| z_e^slf     (6, 11)
    z_u^{itm,c} ~ N( g_μ^itm(x_u^c), g_σ^itm(x_u^c) ),  x_u^c = Σ_{t∈N_u} p(t,c)/|N_u| z_t^slf     (7, 12)
    z_u^{ent,c} = Σ_{t∈N_u} 1/|N_u| z_t^{ent,c}                                                      (7)
    z_t = z_t^slf ∥ z_t^{ent,1..C1},   z_u = [z_u^slf ∥] z_u^{itm,1..C2} ∥ z_u^{ent,1..C1}            (4, 5)

Decoder (eq. 13 without its first term, §5.1 decoder dictionary)::

    S(u, t) = Σ_{c≤C2} p(t, c) exp(⟨z_u^{itm,c}, d_t⟩) + Σ_{c≤C1} exp(⟨z_u^{ent,c}, d_t^{ent,c}⟩)
    p(t | u) = S(u, t) / Σ_{t'} S(u, t')          (normalized over all items: a multinomial)

``score(u, t) = log S(u, t)`` (the logit of the softmax; ranking by it equals ranking by
``p(t | u)``).  ELBO (eq. 14) per user: ``Σ_{t∈N_u} log p(t|u) − β KL`` (see
:mod:`whyrec.train.elbo`).

Choices the text leaves open (each is a field of :class:`ResolvedConfig` where it
could matter):

* ``g`` ("a nonlinear mapping module"): one per aggregation type (entity→item,
  item→user), shared by the factors: ``h = tanh(W_1 x + b_1)``, ``g_μ = W_μ h + b_μ``,
  ``log σ² = W_σ h + b_σ`` (clamped to [-10, 4]) — Mult-VAE's encoder shape.
* Self segments: ``z_t^slf ~ N(μ_t, diag exp(ℓ_t))`` with ``μ_t`` and ``ℓ_t`` free per-item
  parameters (the item self segment of eq. 11); affiliations ``p(t, c)`` use ``μ_t``.
  Entity self embeddings ``z_e^slf`` are deterministic parameters (eq. 11–12 only put
  distributions on user and item segments). With the first decoder term dropped
  nothing reads the user self segment ``z_u^slf``, so it is only allocated with
  ``first_term=True`` (then ``exp(⟨z_u^slf, d_t^slf⟩)`` is added to ``S``, a free
  per-user Gaussian like the item self segment).
* ``z_u^{ent,c}`` is an average of item segments; it is Gaussian with mean
  ``Σ μ_t^{ent,c}/|N_u|`` and variance ``Σ σ_t^{ent,c}²/|N_u|²`` and is sampled from that
  (independently per user).
* Entity–entity links (none in the shared Last.fm KG): the paper learns deeper
  entities "via normal GCNs"; here one mean-aggregation step ``z_e ← mean(z_e ∪
  {z_e' : e' ~ e})`` is applied to the entity self embeddings before eq. 6.
* Items with no entity get ``y_t = 0``; users with no training item get ``x_u = 0`` and
  ``z_u^{ent} = 0`` (the model cannot say anything personal about them; the
  explainers refuse them).
* Evaluation and explanations use the means (no sampling).

``C = 1`` (``n_factors=1``) gives the non-disentangled VAE ablation (the seed's VGAE row):
one segment per aggregation, the softmax over one factor is identically 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import LongTensor, Tensor, nn

from .base import CUDA, INTRINSIC, RESCORE, Recommender

__all__ = ["ResolvedConfig", "Resolved", "Segments"]


@dataclass
class ResolvedConfig:
    """Hyper-parameters; defaults are the seed's Table 1 for Last.fm.

    ``dim``: D, size of one segment; ``n_factors``: C (``n_entity_factors`` C1 and
    ``n_item_factors`` C2 default to it); ``gamma``: γ of eq. 9–10; the ELBO's terms (used by
    :class:`whyrec.train.elbo.ELBO`): ``beta`` the final KL weight and ``anneal_epochs`` the
    epochs over which it grows linearly from 0 (KL annealing as in Mult-VAE; the seed does not
    say). The optimisation settings (Table 1: lr 2e-4, l2 1e-8, 128 users a batch, 100 epochs,
    evaluation every 5) are a :class:`~whyrec.train.loop.TrainConfig`'s
    (:mod:`whyrec.recipes.resolved`).
    ``input_dropout``: during training each history item is left out of the *encoder's*
    input with this probability (the reconstruction target stays the full history;
    Mult-VAE's denoising; not in the seed). ``first_term``: keep eq. 13's first (plain CF)
    term; ``init_std``: normal init."""

    dim: int = 16
    n_factors: int = 4
    n_entity_factors: Optional[int] = None
    n_item_factors: Optional[int] = None
    gamma: float = 0.1
    beta: float = 0.2
    anneal_epochs: int = 20
    input_dropout: float = 0.0
    first_term: bool = False
    init_std: float = 0.1
    init_logvar: float = -4.0

    @property
    def c1(self) -> int:
        return int(self.n_entity_factors or self.n_factors)

    @property
    def c2(self) -> int:
        return int(self.n_item_factors or self.n_factors)


class Segments(dict):
    """Means (and log-variances) of a batch of users' segments: ``itm_mu`` ``(b, C2, D)``,
    ``ent_mu`` ``(b, C1, D)``, ``itm_logvar``, ``ent_var``, optional ``slf_mu``."""


def _csr_to_torch(m: sp.csr_matrix, device=None) -> Tensor:
    m = m.tocsr().astype(np.float32)
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape, device=device)


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr().astype(np.float32)
    deg = np.asarray(m.sum(1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return sp.diags(inv) @ m


def _binary(m) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


class _G(nn.Module):
    """The nonlinear map g of eq. 6–7 as a Gaussian head (one hidden tanh layer, as the
    Mult-VAE encoder): ``h = tanh(W_1 x + b_1)``, ``μ = W_μ h + b_μ``, ``log σ² = W_σ h + b_σ``."""

    def __init__(self, dim: int, init_logvar: float = -4.0):
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.mu = nn.Linear(dim, dim)
        self.logvar = nn.Linear(dim, dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, init_logvar)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.hidden(x))
        return self.mu(h), self.logvar(h).clamp(-10.0, 4.0)


class Resolved(Recommender):
    """Seed 002's model over ``n_users`` users, ``n_items`` items and an entity graph.

    Args:
        n_users, n_items: sizes.
        train: ``(n_users, n_items)`` scipy binary training matrix (the user–item links,
            i.e. each user's history ``N_u``; may be replaced with :meth:`set_history`).
        item_entity: ``(L, 2)`` int ``(item, entity)`` links.
        n_entities: number of entities.
        entity_entity: ``(M, 2)`` entity–entity links (may be empty).
        config: :class:`ResolvedConfig`.
    """

    capabilities = frozenset({RESCORE, INTRINSIC, CUDA})

    def __init__(self, n_users: int, n_items: int, train, item_entity, n_entities: int,
                 entity_entity=None, config: Optional[ResolvedConfig] = None):
        super().__init__(n_users, n_items)
        self.config = config = config or ResolvedConfig()
        if config.c1 < 1 or config.c2 < 1 or config.dim < 1:
            raise ValueError("dim and the numbers of factors must be >= 1")
        if config.gamma <= 0:
            raise ValueError(f"gamma must be positive, got {config.gamma}")
        n_entities = int(n_entities)
        if n_entities < 1:
            raise ValueError("the resolved model needs at least one entity (an entity side of the graph)")
        D, C1, C2 = config.dim, config.c1, config.c2
        self.n_entities = n_entities
        # --- graph (non-persistent buffers) -------------------------------------------------
        ie = np.asarray(item_entity, np.int64).reshape(-1, 2)
        if len(ie) and (ie[:, 0].min() < 0 or ie[:, 0].max() >= n_items or ie[:, 1].min() < 0
                        or ie[:, 1].max() >= n_entities):
            raise ValueError("item_entity links refer to items or entities out of range")
        self.item_entity_np = ie
        a_ie = sp.csr_matrix((np.ones(len(ie), np.float32), (ie[:, 0], ie[:, 1])), shape=(n_items, n_entities))
        a_ie = _binary(a_ie)
        self.a_ie = a_ie  # binary (n_items, n_entities)
        self.register_buffer("ie_norm", _csr_to_torch(_row_normalize(a_ie)), persistent=False)
        ee = np.zeros((0, 2), np.int64) if entity_entity is None else np.asarray(entity_entity, np.int64).reshape(-1, 2)
        if len(ee):
            a_ee = sp.csr_matrix((np.ones(2 * len(ee), np.float32), (np.r_[ee[:, 0], ee[:, 1]], np.r_[ee[:, 1], ee[:, 0]])),
                                 shape=(n_entities, n_entities))
            a_ee = _binary(a_ee + sp.identity(n_entities, format="csr"))
            self.register_buffer("ee_norm", _csr_to_torch(_row_normalize(a_ee)), persistent=False)
        else:
            self.register_buffer("ee_norm", None, persistent=False)
        self.history: sp.csr_matrix
        self.register_buffer("hist_norm", None, persistent=False)
        self.set_history(train)
        # --- parameters ----------------------------------------------------------------------
        std = config.init_std
        self.item_self = nn.Embedding(n_items, D)          # μ of z_t^slf
        self.item_self_logvar = nn.Embedding(n_items, D)   # log σ² of z_t^slf
        self.entity_self = nn.Embedding(n_entities, D)     # z_e^slf
        self.factor_ent = nn.Parameter(torch.randn(C1, D) * std)  # z_c^ent, eq. 9
        self.factor_itm = nn.Parameter(torch.randn(C2, D) * std)  # z_c^itm, eq. 10
        self.g_ent = _G(D, config.init_logvar)
        self.g_itm = _G(D, config.init_logvar)
        self.dec_item = nn.Embedding(n_items, D)           # decoder dictionary: replaces z_t^slf in eq. 13
        self.dec_item_ent = nn.Embedding(n_items, C1 * D)  # decoder dictionary: replaces z_t^{ent,c}
        for emb in (self.item_self, self.entity_self, self.dec_item, self.dec_item_ent):
            nn.init.normal_(emb.weight, std=std)
        nn.init.constant_(self.item_self_logvar.weight, config.init_logvar)
        if config.first_term:
            self.user_self = nn.Embedding(n_users, D)
            self.user_self_logvar = nn.Embedding(n_users, D)
            self.dec_item_slf = nn.Embedding(n_items, D)
            nn.init.normal_(self.user_self.weight, std=std)
            nn.init.normal_(self.dec_item_slf.weight, std=std)
            nn.init.constant_(self.user_self_logvar.weight, config.init_logvar)

    # ------------------------------------------------------------------ graph
    def set_history(self, train) -> "Resolved":
        """Set the user–item links (each user's ``N_u``) from a ``(n_users, n_items)`` matrix."""
        if not sp.issparse(train):
            raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
        if tuple(train.shape) != (self.n_users, self.n_items):
            raise ValueError(f"interaction matrix has shape {train.shape}, expected {(self.n_users, self.n_items)}")
        self.history = _binary(train)
        dev = self.ie_norm.device
        self.hist_norm = _csr_to_torch(_row_normalize(self.history), device=dev)
        return self

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.config.dim, self.config.c1, self.config.c2

    # ------------------------------------------------------------------ affiliations
    def entity_embeddings(self) -> Tensor:
        """``(n_entities, D)`` entity self embeddings after the optional entity–entity GCN step."""
        z = self.entity_self.weight
        if self.ee_norm is not None:
            z = self.ee_norm @ z
        return z

    def entity_affiliation(self) -> Tensor:
        """``p(e, c)`` ``(n_entities, C1)``, eq. 9 (rows sum to 1)."""
        cos = F.normalize(self.entity_embeddings(), dim=-1) @ F.normalize(self.factor_ent, dim=-1).T
        return torch.softmax(cos / self.config.gamma, dim=-1)

    def item_affiliation(self) -> Tensor:
        """``p(t, c)`` ``(n_items, C2)``, eq. 10 (rows sum to 1)."""
        cos = F.normalize(self.item_self.weight, dim=-1) @ F.normalize(self.factor_itm, dim=-1).T
        return torch.softmax(cos / self.config.gamma, dim=-1)

    # ------------------------------------------------------------------ encoder
    def item_entity_segments(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Item-side factorized entity aggregation, eq. 6 / 11, for all items.

        Returns ``(mu, logvar, y, p_ent)``: ``mu``/``logvar`` ``(n_items, C1, D)`` of
        ``q(z_t^{ent,c})``, ``y`` ``(n_items, C1, D)`` the pre-``g`` aggregate and
        ``p_ent`` ``(n_entities, C1)``."""
        D, C1, _ = self.dims
        p_ent = self.entity_affiliation()
        ze = self.entity_embeddings()
        msg = (p_ent.unsqueeze(-1) * ze.unsqueeze(1)).reshape(self.n_entities, C1 * D)
        y = (self.ie_norm @ msg).reshape(self.n_items, C1, D)
        mu, logvar = self.g_ent(y)
        return mu, logvar, y, p_ent

    def encode(self, hist_norm: Tensor, sample: bool = False, item_parts=None,
               p_itm: Optional[Tensor] = None) -> Segments:
        """User segments from row-normalized histories ``hist_norm`` ``(b, n_items)``
        (a torch sparse CSR or dense tensor whose row ``u`` holds ``1/|N_u|`` on ``N_u``).

        ``sample``: reparameterized samples (training); else means. ``item_parts``: the
        result of :meth:`item_entity_segments` if already computed; ``p_itm`` that of
        :meth:`item_affiliation`."""
        D, C1, C2 = self.dims
        if item_parts is None:
            item_parts = self.item_entity_segments()
        ent_mu_t, ent_logvar_t, _, _ = item_parts
        if p_itm is None:
            p_itm = self.item_affiliation()
        zt = self.item_self.weight
        if sample:
            zt = zt + torch.randn_like(zt) * torch.exp(0.5 * self.item_self_logvar.weight)
        msg = (p_itm.unsqueeze(-1) * zt.unsqueeze(1)).reshape(self.n_items, C2 * D)
        x = (hist_norm @ msg).reshape(-1, C2, D)
        itm_mu, itm_logvar = self.g_itm(x)
        ent_mu = (hist_norm @ ent_mu_t.reshape(self.n_items, C1 * D)).reshape(-1, C1, D)
        sq = hist_norm.to_dense() ** 2 if hist_norm.layout != torch.strided else hist_norm ** 2
        ent_var = (sq @ torch.exp(ent_logvar_t).reshape(self.n_items, C1 * D)).reshape(-1, C1, D)
        seg = Segments(itm_mu=itm_mu, itm_logvar=itm_logvar, ent_mu=ent_mu, ent_var=ent_var, x=x, p_itm=p_itm)
        if sample:
            seg["itm_z"] = itm_mu + torch.randn_like(itm_mu) * torch.exp(0.5 * itm_logvar)
            seg["ent_z"] = ent_mu + torch.randn_like(ent_mu) * torch.sqrt(ent_var + 1e-12)
        else:
            seg["itm_z"], seg["ent_z"] = itm_mu, ent_mu
        return seg

    def _user_self(self, users: Tensor, sample: bool) -> Optional[Tensor]:
        if not self.config.first_term:
            return None
        z = self.user_self(users)
        if sample:
            z = z + torch.randn_like(z) * torch.exp(0.5 * self.user_self_logvar(users))
        return z

    # ------------------------------------------------------------------ decoder
    def decode(self, seg: Segments, items: Optional[Tensor] = None, user_self: Optional[Tensor] = None) -> Tensor:
        """``log S(u, t)`` for the batch's users against ``items`` (default all) ->
        ``(b, n)`` (eq. 13 without its first term unless ``first_term``)."""
        D, C1, C2 = self.dims
        p_itm = seg["p_itm"]
        dec, dec_ent = self.dec_item.weight, self.dec_item_ent.weight
        if items is not None:
            p_itm, dec, dec_ent = p_itm[items], dec[items], dec_ent[items]
        # (b, C, n) layouts: one batched matmul per part, reductions over the small C axis
        a = torch.matmul(seg["itm_z"], dec.T) + torch.log(p_itm.clamp_min(1e-30)).T.unsqueeze(0)
        b = torch.matmul(seg["ent_z"].transpose(0, 1), dec_ent.reshape(-1, C1, D).permute(1, 2, 0))  # (C1, b, n)
        out = torch.logaddexp(torch.logsumexp(a, dim=1), torch.logsumexp(b, dim=0))
        if user_self is not None:
            slf = self.dec_item_slf.weight if items is None else self.dec_item_slf.weight[items]
            out = torch.logaddexp(out, user_self @ slf.T)
        return out

    # ------------------------------------------------------------------ scoring
    def _hist_rows(self, users: Tensor) -> Tensor:
        """Row-normalized history rows of ``users`` as a dense ``(b, n_items)`` tensor."""
        u = users.detach().cpu().numpy()
        sub = _row_normalize(self.history[u])
        dense = torch.from_numpy(np.asarray(sub.todense(), dtype=np.float32))
        return dense.to(self.ie_norm.device)

    def histories_tensor(self, histories: sp.csr_matrix) -> Tensor:
        """Any ``(b, n_items)`` binary histories -> dense row-normalized tensor."""
        h = _binary(histories)
        if h.shape[1] != self.n_items:
            raise ValueError(f"histories have {h.shape[1]} columns, expected {self.n_items}")
        return torch.from_numpy(np.asarray(_row_normalize(h).todense(), np.float32)).to(self.ie_norm.device)

    def score_users(self, users: LongTensor) -> Tensor:
        """``log S(u, t)`` ``(b, n_items)`` from each user's training history (means)."""
        users = self._ids(users).reshape(-1)
        with torch.no_grad():
            seg = self.encode(self._hist_rows(users), sample=False, item_parts=self._item_parts_cached())
            return self.decode(seg, user_self=self._user_self(users, False))

    def score_histories(self, histories: sp.csr_matrix, users: Optional[LongTensor] = None) -> Tensor:
        """Scores ``(b, n_items)`` for arbitrary histories (rows of a ``(b, n_items)`` matrix),
        re-encoded without retraining: this is how an input is *removed* (faithfulness)."""
        with torch.no_grad():
            seg = self.encode(self.histories_tensor(histories), sample=False, item_parts=self._item_parts_cached())
            us = None if users is None else self._user_self(self._ids(users).reshape(-1), False)
            return self.decode(seg, user_self=us)

    def forward(self, users: LongTensor, items: LongTensor) -> Tensor:
        users, items = self._ids(users).reshape(-1), self._ids(items).reshape(-1)
        seg = self.encode(self._hist_rows(users), sample=False)
        full = self.decode(seg, user_self=self._user_self(users, False))
        return full.gather(1, items.unsqueeze(1)).squeeze(1)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """``(users, items)``: users' mean segments ``[z^itm ∥ z^ent]`` ``(n_users, (C2+C1)D)`` and the
        items' decoder dictionary ``[d_t ∥ d_t^ent]`` ``(n_items, (1+C1)D)``. NOTE: scores are NOT
        their dot product (eq. 13 is a sum of exponentials); use :meth:`score_users`."""
        with torch.no_grad():
            seg = self.encode(self.hist_norm, sample=False, item_parts=self._item_parts_cached())
            users = torch.cat([seg["itm_mu"].flatten(1), seg["ent_mu"].flatten(1)], 1)
            items = torch.cat([self.dec_item.weight, self.dec_item_ent.weight], 1)
        return users, items

    def score_vectors(self, user_vectors: Tensor) -> Tensor:
        raise NotImplementedError("Resolved scores are not dot products of one user vector; use score_histories")

    def _weights_key(self) -> tuple:
        """Changes whenever any parameter is modified in place or replaced (keys the caches below)."""
        return tuple((p._version, p.data_ptr()) for p in self.parameters())

    def _item_parts_cached(self):
        key = self._weights_key()
        if getattr(self, "_ip_key", None) != key:
            with torch.no_grad():
                self._ip = tuple(t.detach() for t in self.item_entity_segments())
            self._ip_key = key
        return self._ip

    def _affiliations_cached(self) -> tuple[Tensor, Tensor]:
        """``(p(t, c), p(e, c))`` of the current weights, computed once (inference only)."""
        key = self._weights_key()
        if getattr(self, "_aff_key", None) != key:
            with torch.no_grad():
                self._aff = (self.item_affiliation().detach(), self.entity_affiliation().detach())
            self._aff_key = key
        return self._aff

    def invalidate_cache(self) -> None:
        self._ip_key = None
        self._aff_key = None

    # ------------------------------------------------------------------ explanations (appendix A.1)
    def dominant_factors(self) -> dict[str, np.ndarray]:
        """``{"items": (n_items,), "entities": (n_entities,)}``: argmax_c p(v, c)."""
        p_itm, p_ent = self._affiliations_cached()
        return {"items": p_itm.argmax(1).cpu().numpy(), "entities": p_ent.argmax(1).cpu().numpy()}

    def importance(self, user: int, item: int, history: Optional[np.ndarray] = None) -> dict:
        """Appendix A.1: importance ``s(j, c; u, t)`` of each history item and each entity
        for the recommendation of ``item`` (t) to ``user`` (u), with the decoder dictionary
        (§5.1) standing in for ``z_t^slf`` and ``z_t^{ent,c}`` as in the decoder::

            item j ∈ N_u:   s(j, c) = p(t, c) exp(⟨z_u^{itm,c}, d_t⟩) · p(j, c) / |N_u|
            entity j:       s(j, c) = exp(⟨z_u^{ent,c}, d_t^{ent,c}⟩) · Σ_{m∈N_u} 1(m, j) p(j, c) / (|N_u| |N_m|)
            s(j) = Σ_c s(j, c)

        ``history``: the user's item ids (default: the training history). Returns numpy arrays:
        ``items`` (history ids), ``item_scores`` ``(|N_u|,)``, ``item_factor_scores``
        ``(|N_u|, C2)``, ``entities`` (ids reachable from the history), ``entity_scores``,
        ``entity_factor_scores`` ``(n, C1)``, ``user_item_terms`` ``(C2,)`` =
        ``p(t,c) exp(⟨z_u^{itm,c}, d_t⟩)``, ``user_entity_terms`` ``(C1,)`` and ``score`` = log S(u, t).
        """
        D, C1, C2 = self.dims
        if self.config.first_term:
            raise NotImplementedError("importance is defined for the model without eq. 13's first term")
        if history is None:
            history = self.history[int(user)].indices
        history = np.unique(np.asarray(history, np.int64))
        if len(history) == 0:
            raise ValueError(f"user index {user} has no training history: the resolved model explains a "
                             "recommendation through the user's history items, and there are none")
        n_u = float(len(history))
        t = int(item)
        with torch.no_grad():
            part = self._user_part(history)
            seg, p_itm, ents, reach, p_ent = part
            itm_terms = p_itm[t] * torch.exp(seg["itm_z"][0] @ self.dec_item.weight[t])          # (C2,)
            ent_terms = torch.exp((seg["ent_z"][0] * self.dec_item_ent.weight[t].reshape(C1, D)).sum(-1))  # (C1,)
            item_fs = itm_terms.unsqueeze(0) * p_itm[torch.from_numpy(history)] / n_u            # (|N_u|, C2)
            ent_fs = ent_terms.unsqueeze(0) * p_ent * reach.unsqueeze(1) / n_u                     # (n, C1)
            score = torch.logsumexp(torch.cat([torch.log(itm_terms.clamp_min(1e-30)), torch.log(ent_terms)]), 0)
        return {
            "items": history,
            "item_scores": item_fs.sum(1).cpu().numpy().astype(np.float64),
            "item_factor_scores": item_fs.cpu().numpy().astype(np.float64),
            "entities": ents,
            "entity_scores": ent_fs.sum(1).cpu().numpy().astype(np.float64),
            "entity_factor_scores": ent_fs.cpu().numpy().astype(np.float64),
            "user_item_terms": itm_terms.cpu().numpy().astype(np.float64),
            "user_entity_terms": ent_terms.cpu().numpy().astype(np.float64),
            "score": float(score),
        }

    def _user_part(self, history: np.ndarray):
        """What :meth:`importance` needs from the user alone (cached for the last history):
        segments, ``p(t, c)``, reachable entities, ``Σ_{m∈N_u} 1(m,j)/|N_m|`` and their ``p(j, c)``."""
        key = (history.tobytes(), self._weights_key())
        cached = getattr(self, "_up_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        h = sp.csr_matrix((np.full(len(history), 1.0, np.float32), (np.zeros(len(history), np.int64), history)),
                          shape=(1, self.n_items))
        p_itm, p_ent_all = self._affiliations_cached()
        with torch.no_grad():
            seg = self.encode(self.histories_tensor(h), sample=False, item_parts=self._item_parts_cached(), p_itm=p_itm)
        sub = self.a_ie[history]
        deg = np.asarray(sub.sum(1)).ravel()
        reach = np.asarray((sp.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ sub).sum(0)).ravel()
        ents = np.flatnonzero(reach > 0)
        p_ent = p_ent_all[torch.from_numpy(ents)]
        part = (seg, seg["p_itm"], ents, torch.from_numpy(reach[ents].astype(np.float32)).to(p_ent.device), p_ent)
        self._up_cache = (key, part)
        return part

    def extra_repr(self) -> str:
        D, C1, C2 = self.dims
        return (f"n_users={self.n_users}, n_items={self.n_items}, n_entities={self.n_entities}, D={D}, "
                f"C1={C1}, C2={C2}, gamma={self.config.gamma}")
