"""``--method history``: attribute ŷ(u, m) to the user's past interactions ("because you liked
X and Y") with Integrated Gradients over the weights of the user's edges in the normalized
adjacency. Works for every LightGCN-type run (``lightgcn``, ``lightgcn-features``,
``lightgcn-aligned``): anything with ``adj``, ``n_layers``, ``alphas`` and layer-0 rows.

Input, baseline, path
---------------------
For the user's training items ``j ∈ H`` (the history) let ``a_j = Â[u, j] = 1/sqrt(d_u d_j)``.
IG's input is one scale per history edge, ``t ∈ [0, 1]^|H|``, applied symmetrically::

    Â(t)[u, j] = Â(t)[j, u] = t_j · a_j          (every other entry of Â unchanged)

``t = 1`` is the trained graph; the baseline ``t = 0`` removes all of the user's edges. The
degree normalization is **held fixed** (``a_j`` keeps its ``d_u, d_j``): we attribute the
score to the messages that actually flow along the edges, and the path stays inside the
model's own operator. (Re-normalizing along the path would make ``1/sqrt(d_u)`` blow up as the
last edge fades and mix "fewer messages" with "louder remaining messages".) Layer-0 embeddings
(features included) and all other edges are fixed.

Exactness
---------
``E(t) = Σ_k α_k Â(t)^k E^(0)`` is a polynomial of degree ≤ K in ``t``, so ``ŷ(t)`` has degree ≤ 2K
and the IG integrand along the straight path ``t = α·1`` has degree ≤ 2K − 1 in α: a
Gauss–Legendre rule with ``n ≥ K`` nodes integrates it exactly, and completeness
``Σ_j IG_j = ŷ(t=1) − ŷ(t=0)`` holds to rounding (float64 here).

Cost: a rank-2 update, never a propagation per graph
----------------------------------------------------
``Â(t) = Â + Δ`` with ``Δ = e_u sᵀ + s e_uᵀ``, ``s_j = (t_j − 1) a_j`` on the history. Telescoping
``P^k − Â^k = Σ_{a<k} Â^{k−1−a} Δ P^a`` (``P = Â(t)``) gives, for ``w_a = P^a e_x`` (``x ∈ {u, m}``)::

    (P^k E0)[x] = E^(k)[x] + Σ_{a<k} (s·w_a) E^(k−1−a)[u] + (w_a)_u · sᵀ E^(k−1−a)[H]

with ``E^(c) = Â^c E0`` the trained model's own layers, and the two scalars follow the same
recursion (``(w_a)_u = (Â^a e_x)_u + Σ_{b<a} (s·w_b)(Â^{a−1−b} e_u)_u + (w_b)_u s·(Â^{a−1−b} e_u)_H``,
``s·w_a = s·(Â^a e_x)_H + Σ_{b<a} (s·w_b) s·(Â^{a−1−b} e_u)_H + (w_b)_u sᵀ(Â^{a−1−b})_{HH} s``).
So one explanation needs ``Â^i e_u`` and ``Â^i e_m`` for ``i < K`` (2(K − 1) sparse
matrix–vector products, shared by every ``t``) and the history block ``(Â^i)_{HH}`` for ``i ≤ K − 2``
(the identity for ``i = 0``, zero for odd ``i`` on a bipartite graph, one sparse product for
``i = 2``, so nothing at all for K ≤ 3); after that any number of edge scalings -- the IG nodes, the
baseline, each leave-one-edge-out -- costs ``O(K² |H| + K |H| d)`` each, and IG's gradient is
autograd through those few small products.  Tested against the scaled adjacency built densely.

:func:`history_importances` ``(run, user_idx, item_idx, steps=None) -> {history item index:
attribution}`` is the faithfulness interface (``importances`` is the same function);
``steps=None`` uses the exact minimum ``n = K`` nodes.
"""

from __future__ import annotations

import functools
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..graph import sym_spmm
from ..models.base import GRAPH, can
from .decomposition import contributions, explain_filter, is_filter
from .explanation import history_share

__all__ = ["HistoryContext", "history_context", "history_attributions", "edge_scaled_scores",
           "history_importances", "importances", "explain_run", "describe", "details"]


class HistoryContext:
    """What history IG needs from a trained LightGCN-type model, in float64 on the CPU (whatever
    device the model is on: an explanation is one user's small exact computation): ``adj``, ``emb0``
    ``(N, d)`` layer-0 rows, ``alphas``, ``n_users``."""

    def __init__(self, model):
        if not can(model, GRAPH):
            raise ValueError("history attribution needs a LightGCN-type model (one that declares GRAPH: a "
                             "normalized graph and layer-0 embeddings); this model propagates no graph")
        if model.adj is None:  # GRAPH declares .adj; a model built without graph= has not been given one yet
            raise ValueError("history attribution needs the model's graph: it has none set (set_graph(train))")
        self.model = model
        self.version = model.weights_version()
        self.adj = model.adj.to("cpu", torch.float64)
        with torch.no_grad():
            self.emb0 = torch.cat(model.layer0(), 0).detach().to("cpu", torch.float64)
        self.alphas = [float(a) for a in model.alphas]
        self.n_layers = int(model.n_layers)
        self.n_users = int(model.n_users)
        self.n_items = int(model.n_items)
        self._layers: Optional[list] = None
        self._basis: Optional[tuple] = None

    def layers(self) -> list[torch.Tensor]:
        """The trained layers ``[E^(0), ..., E^(K)]`` ``(N, d)`` in float64 (computed once)."""
        if self._layers is None:
            with torch.no_grad():
                out = [self.emb0]
                for _ in range(self.n_layers):
                    out.append(sym_spmm(self.adj, out[-1]))
            self._layers = out
        return self._layers

    def basis(self, user: int, items: np.ndarray, hist: np.ndarray) -> "_Basis":
        """The ``t``-independent part of :func:`edge_scaled_scores` (the last one is kept: an
        explanation asks for the same user and item several times)."""
        key = (user, tuple(int(i) for i in items))
        cached = self._basis  # read once: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, _Basis(self, user, np.asarray(items, dtype=np.int64), hist))
            self._basis = cached
        return cached[1]

    def edges(self, user: int) -> tuple[np.ndarray, torch.Tensor]:
        """The user's history item indices and their edge weights ``a_j``."""
        crow = self.adj.crow_indices()
        lo, hi = int(crow[user]), int(crow[user + 1])
        cols = self.adj.col_indices()[lo:hi]
        vals = self.adj.values()[lo:hi]
        return (cols - self.n_users).numpy().astype(np.int64), vals.clone()


def history_context(run) -> HistoryContext:
    """The run's cached :class:`HistoryContext` (rebuilt when the weights change: :func:`run_cache`)."""
    from . import run_cache

    cache = run_cache(run, "history")
    if "ctx" not in cache:
        cache["ctx"] = HistoryContext(run.model)
    return cache["ctx"]


class _Basis:
    """The ``t``-independent quantities of one user and a few items (module docstring): ``GH``
    ``(K, X, H)`` = ``(Â^i e_x)_H``, ``Gu`` ``(K, X)`` = ``(Â^i e_x)_u`` for ``x`` = the user (column 0)
    and the items; ``M[i]`` the ``(H, H)`` block ``(Â^i)_{HH}`` (``None``: zero; ``i = 0``: identity);
    ``Lx`` ``(K+1, X, d)``, ``LH`` ``(K+1, H, d)``: rows of the trained layers ``E^(k)``."""

    def __init__(self, ctx: "HistoryContext", user: int, items: np.ndarray, hist: np.ndarray):
        K, U = ctx.n_layers, ctx.n_users
        nodes = torch.as_tensor(np.concatenate([[user], U + items]), dtype=torch.long)
        hnodes = torch.as_tensor(hist + U, dtype=torch.long)
        g = torch.zeros(ctx.adj.shape[0], len(nodes), dtype=torch.float64)
        g[nodes, torch.arange(len(nodes))] = 1.0
        GH, Gu = [], []
        for i in range(K):
            if i:
                g = sym_spmm(ctx.adj, g)
            GH.append(g[hnodes].T)
            Gu.append(g[user])
        self.GH = torch.stack(GH) if K else torch.zeros(0, len(nodes), len(hist), dtype=torch.float64)
        self.Gu = torch.stack(Gu) if K else torch.zeros(0, len(nodes), dtype=torch.float64)
        self.M: list = [None] * max(0, K - 1)
        if K >= 4:  # even powers i >= 2 only (i = 0 is the identity, odd ones vanish between items)
            q = torch.zeros(ctx.adj.shape[0], len(hist), dtype=torch.float64)
            q[hnodes, torch.arange(len(hist))] = 1.0  # (Â^0)_{:,H}
            for i in range(2, K - 1, 2):
                q = sym_spmm(ctx.adj, q)  # (Â^{i/2})_{:,H}
                self.M[i] = q.T @ q
        layers = ctx.layers()
        self.Lx = torch.stack([E[nodes] for E in layers])
        self.LH = torch.stack([E[hnodes] for E in layers])


def edge_scaled_scores(ctx: HistoryContext, user: int, items: Sequence[int], t: torch.Tensor,
                       hist: Optional[np.ndarray] = None, a: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``ŷ(user, items[c])`` on the graph whose user edges are scaled by ``t[c]`` ``(C, |H|)``
    (degree normalization held fixed; differentiable w.r.t. ``t``). Returns ``(C,)`` float64.

    Exact, by the rank-2 recursion of the module docstring: no propagation per row of ``t``."""
    if hist is None or a is None:
        hist, a = ctx.edges(user)
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    uniq, inv = np.unique(items, return_inverse=True)
    B = ctx.basis(int(user), uniq, hist)
    K = ctx.n_layers
    C = len(items)
    s = (t.to(torch.float64) - 1.0) * a.to(torch.float64).unsqueeze(0)  # (C, H)
    xcol = torch.stack([torch.zeros(C, dtype=torch.long), torch.as_tensor(inv, dtype=torch.long) + 1], 1)  # (C, 2)
    s_gu = [s @ B.GH[i, 0] for i in range(K)]  # s·(Â^i e_u)_H, (C,)
    gu_u = [B.Gu[i, 0] for i in range(K)]  # (Â^i e_u)_u
    sMs = []
    for i in range(max(0, K - 1)):
        if i == 0:
            sMs.append((s * s).sum(-1))
        elif B.M[i] is None:
            sMs.append(torch.zeros(C, dtype=torch.float64))
        else:
            sMs.append(((s @ B.M[i]) * s).sum(-1))
    w_u, w_s = [], []  # (w_a)_u and s·w_a, each (C, 2)
    for k in range(K):
        uk = B.Gu[k][xcol]
        sk = (B.GH[k][xcol] * s.unsqueeze(1)).sum(-1)
        for b in range(k):
            i = k - 1 - b
            uk = uk + w_s[b] * gu_u[i] + w_u[b] * s_gu[i].unsqueeze(1)
            sk = sk + w_s[b] * s_gu[i].unsqueeze(1) + w_u[b] * sMs[i].unsqueeze(1)
        w_u.append(uk)
        w_s.append(sk)
    sE = [s @ B.LH[c] for c in range(K)]  # sᵀ E^(c)[H], (C, d)
    e = 0.0
    for k, alpha in enumerate(ctx.alphas):
        y = B.Lx[k][xcol]  # (C, 2, d)
        for a_ in range(k):
            c = k - 1 - a_
            y = y + w_s[a_].unsqueeze(-1) * B.Lx[c, 0] + w_u[a_].unsqueeze(-1) * sE[c].unsqueeze(1)
        e = e + alpha * y
    return (e[:, 0] * e[:, 1]).sum(-1)


@functools.lru_cache(maxsize=64)
def _nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


def history_attributions(ctx: HistoryContext, user: int, item: int, steps: Optional[int] = None) -> dict:
    """IG of ``ŷ(user, item)`` over the user's edge scales (module docstring).

    Returns ``history`` (item indices), ``weights`` (``a_j``), ``attributions`` (float64 numpy,
    aligned with ``history``), ``score`` (t = 1), ``baseline_score`` (t = 0), ``delta``
    (Σ attributions − (score − baseline_score)) and ``steps`` (quadrature nodes used)."""
    user, item = int(user), int(item)
    hist, a = ctx.edges(user)
    if len(hist) == 0:
        raise ValueError("this user has no training history: there is nothing to attribute the score to")
    n = max(1, ctx.n_layers) if steps is None else int(steps)
    if n < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    alpha, w = _nodes(n)
    H = len(hist)
    t = torch.tensor(alpha, dtype=torch.float64).unsqueeze(1).repeat(1, H).requires_grad_(True)
    with torch.enable_grad():
        y = edge_scaled_scores(ctx, user, [item] * n, t, hist, a)
        (g,) = torch.autograd.grad(y.sum(), t)
    attr = (torch.tensor(w, dtype=torch.float64).unsqueeze(1) * g).sum(0).numpy()  # (x - x') = 1
    with torch.no_grad():
        ends = edge_scaled_scores(ctx, user, [item, item], torch.stack([torch.ones(H), torch.zeros(H)]).double(),
                                  hist, a)
    score, base = float(ends[0]), float(ends[1])
    return {"history": hist, "weights": a.numpy(), "attributions": attr, "score": score, "baseline_score": base,
            "delta": float(attr.sum() - (score - base)), "steps": n}


def removal_effects(ctx: HistoryContext, user: int, item: int, which: Sequence[int]) -> np.ndarray:
    """Exact ``ŷ(full) − ŷ(edge j removed)`` for history positions ``which`` (normalization fixed)."""
    hist, a = ctx.edges(user)
    which = list(which)
    if not which:
        return np.zeros(0)
    t = torch.ones(len(which) + 1, len(hist), dtype=torch.float64)
    t[torch.arange(len(which)) + 1, torch.as_tensor(which)] = 0.0
    with torch.no_grad():
        y = edge_scaled_scores(ctx, user, [item] * (len(which) + 1), t, hist, a)
    return (y[0] - y[1:]).numpy()


def prepare(run) -> None:
    """Build the run's float64 context and trained layers now (``whyrec serve`` start-up)."""
    if not is_filter(run.model):  # the filters' decomposition needs nothing up front
        history_context(run).layers()


def history_importances(run, user_idx: int, item_idx: int, steps: Optional[int] = None) -> dict[int, float]:
    """``{history item index: IG attribution}`` of ``ŷ(user, item)`` (faithfulness interface;
    ``steps=None``: the exact minimum of K Gauss–Legendre nodes). For a graph filter: the exact
    contributions (:mod:`whyrec.explain.decomposition`)."""
    if is_filter(run.model):
        hist, contrib = contributions(run, user_idx, item_idx)
        return {int(j): float(v) for j, v in zip(hist, contrib)}
    res = history_attributions(history_context(run), user_idx, item_idx, steps=steps)
    return {int(j): float(v) for j, v in zip(res["history"], res["attributions"])}


importances = history_importances


def _title(run, i: int) -> str:
    return run.titles().label(int(i))


def because_text(names: list[str]) -> str:
    if not names:
        return "No single past interaction supports this recommendation."
    if len(names) == 1:
        return f"Because you liked {names[0]}."
    return f"Because you liked {', '.join(names[:-1])} and {names[-1]}."


def explain_run(run, user_idx: int, item_idx=None, steps: Optional[int] = None, top: int = 10, **_options) -> dict:
    """JSON-ready history explanation of ``ŷ(user, item)`` (default item: the top recommendation):
    the ``top`` history items by |attribution| with their rating, share and the exact score
    change when that one edge alone is removed."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    from . import default_item

    if is_filter(run.model):  # exact decomposition, no IG needed
        u = int(user_idx)
        return explain_filter(run, u, default_item(run, u) if item_idx is None else int(item_idx), top=top)
    t0 = time.perf_counter()
    ctx = history_context(run)
    u = int(user_idx)
    if ctx.edges(u)[0].size == 0:
        raise ValueError(f"user {run.user_ids[u]} has no training history: there is nothing to attribute the "
                         "recommendation to")
    item = default_item(run, u) if item_idx is None else int(item_idx)
    res = history_attributions(ctx, u, item, steps=steps)
    attr, hist = res["attributions"], res["history"]
    order = np.argsort(-np.abs(attr), kind="stable")[: int(top)]
    removal = removal_effects(ctx, u, item, order.tolist())
    pos_total = float(attr[attr > 0].sum())
    ratings = run.ratings[u] if run.ratings is not None else None
    rows = []
    for k, p in enumerate(order):
        j = int(hist[p])
        r = float(ratings[0, j]) if ratings is not None else None
        rows.append({"item": int(run.item_ids[j]), "index": j, "title": _title(run, j), "rating": r or None,
                     "attribution": float(attr[p]), "share": float(attr[p]) / pos_total if pos_total else 0.0,
                     "removal_effect": float(removal[k]), "edge_weight": float(res["weights"][p])})
    support = [p for p in np.argsort(-attr, kind="stable")[:2] if attr[p] > 0]
    because = because_text([_title(run, int(hist[p])) for p in support])
    diff = res["score"] - res["baseline_score"]
    return {"method": "history", "user": int(run.user_ids[u]), "item": int(run.item_ids[item]),
            "item_title": _title(run, item), "score": res["score"], "baseline_score": res["baseline_score"],
            "delta": res["delta"], "relative_delta": abs(res["delta"]) / abs(diff) if diff else 0.0,
            # how much of the score depends on the history at all: the rest is the user's free layer-0
            # embedding (their learned profile), which no history explanation can name
            "history_share": history_share(res["score"], res["baseline_score"]),
            "steps": res["steps"], "n_history": int(len(hist)),
            "baseline": "the user's edges removed (degree normalization held fixed)",
            "because": because, "positive_total": pos_total, "negative_total": float(attr[attr < 0].sum()),
            "attributions": rows, "seconds": time.perf_counter() - t0}


def describe(result: dict) -> dict:
    """The common shape (:mod:`whyrec.explain.explanation`): the listed history items by attribution,
    additive over the baseline ``ŷ`` without the user's edges (IG) or 0 (a filter's exact decomposition)."""
    from .explanation import HISTORY, Contribution

    return {"contributions": [Contribution(HISTORY, r["title"], float(r["attribution"]), r["item"])
                              for r in result["attributions"]],
            "baseline": result["baseline_score"], "additive": True, "statement": result["because"],
            "stats": {"history share": result["history_share"], "delta": result["delta"],
                      "history items": result["n_history"]}}


def details(result: dict) -> list[str]:
    """How the contributions were computed, and each listed item's exact single-removal effect."""
    how = ("the exact decomposition of the score over the history" if result.get("exact") else
           f"Integrated Gradients over the user's history edges ({result['steps']} Gauss-Legendre steps)")
    effects = ", ".join(f"{r['title']} {r['removal_effect']:+.4f}" for r in result["attributions"][:5])
    return [f"{how}; baseline: {result['baseline']}",
            f"score change when only that {'item' if result.get('exact') else 'edge'} is removed: {effects}"]
