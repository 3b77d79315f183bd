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

Exactness and cost
------------------
``E(t) = Σ_k α_k Â(t)^k E^(0)`` is a polynomial of degree ≤ K in ``t``, so ``ŷ(t)`` has degree ≤ 2K
and the IG integrand along the straight path ``t = α·1`` has degree ≤ 2K − 1 in α: a
Gauss–Legendre rule with ``n ≥ K`` nodes integrates it exactly, and completeness
``Σ_j IG_j = ŷ(t=1) − ŷ(t=0)`` holds to rounding (float64 here). Rows ``u`` and ``m`` of
``S(t) E^(0)`` (``S(t) = Σ_k α_k Â(t)^k`` symmetric) are obtained by propagating the indicator
vectors ``e_u`` and ``e_m`` through ``Â(t) x = Â x + star(t − 1) x`` -- one sparse product with the
trained ``Â`` plus a rank-2 update on the user's edges -- with one column pair per quadrature
node, all nodes in one batch; the gradient w.r.t. ``t`` comes from one backward pass (the
symmetric sparse backward of :mod:`whyrec.graph`). One explanation is ``2nK`` sparse
matrix–vector products.

:func:`history_importances` ``(run, user_idx, item_idx, steps=None) -> {history item index:
attribution}`` is the faithfulness interface (``importances`` is the same function);
``steps=None`` uses the exact minimum ``n = K`` nodes.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..graph import sym_spmm

__all__ = ["HistoryContext", "history_context", "history_attributions", "edge_scaled_scores",
           "history_importances", "importances", "explain_run", "render_text", "plot"]


class HistoryContext:
    """What history IG needs from a trained LightGCN-type model, in float64: ``adj``, ``emb0``
    ``(N, d)`` layer-0 rows, ``alphas``, ``n_users``."""

    def __init__(self, model):
        if getattr(model, "adj", None) is None or not hasattr(model, "_emb0") or not hasattr(model, "alphas"):
            raise ValueError(f"history attribution needs a LightGCN-type model (a graph and layer-0 embeddings); "
                             f"{type(model).__name__} has none")
        self.model = model
        self.version = model._version()
        self.adj = model.adj.to(torch.float64)
        with torch.no_grad():
            self.emb0 = model._emb0().detach().to(torch.float64)
        self.alphas = [float(a) for a in model.alphas]
        self.n_layers = int(model.n_layers)
        self.n_users = int(model.n_users)
        self.n_items = int(model.n_items)

    def edges(self, user: int) -> tuple[np.ndarray, torch.Tensor]:
        """The user's history item indices and their edge weights ``a_j``."""
        crow = self.adj.crow_indices()
        lo, hi = int(crow[user]), int(crow[user + 1])
        cols = self.adj.col_indices()[lo:hi]
        vals = self.adj.values()[lo:hi]
        return (cols - self.n_users).numpy().astype(np.int64), vals.clone()


def history_context(run_or_model) -> HistoryContext:
    """Cached :class:`HistoryContext` of a run or a model (rebuilt when the weights change)."""
    model = getattr(run_or_model, "model", run_or_model)
    holder = run_or_model
    ctx = getattr(holder, "_history_ctx", None)
    if ctx is None or ctx.model is not model or ctx.version != model._version():
        ctx = HistoryContext(model)
        try:
            holder._history_ctx = ctx
        except AttributeError:  # pragma: no cover
            pass
    return ctx


def edge_scaled_scores(ctx: HistoryContext, user: int, items: Sequence[int], t: torch.Tensor,
                       hist: Optional[np.ndarray] = None, a: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``ŷ(user, items[c])`` on the graph whose user edges are scaled by ``t[c]`` ``(C, |H|)``
    (differentiable w.r.t. ``t``). Returns ``(C,)`` float64."""
    if hist is None or a is None:
        hist, a = ctx.edges(user)
    items = torch.as_tensor(np.asarray(items), dtype=torch.long).reshape(-1)
    C = items.numel()
    N = ctx.n_users + ctx.n_items
    x = torch.zeros(N, 2 * C, dtype=torch.float64)
    ar = torch.arange(C)
    x[user, ar] = 1.0
    x[ctx.n_users + items, C + ar] = 1.0
    hist_nodes = torch.as_tensor(hist + ctx.n_users, dtype=torch.long)
    u_idx = torch.tensor([user])
    s = (t.to(torch.float64) - 1.0) * a.unsqueeze(0)  # (C, H)
    s2 = torch.cat([s, s], 0).T  # (H, 2C)
    out = x * ctx.alphas[0]
    for alpha in ctx.alphas[1:]:
        y = sym_spmm(ctx.adj, x)
        add_u = (s2 * x[hist_nodes]).sum(0, keepdim=True)  # messages from the history into u
        add_h = s2 * x[user].unsqueeze(0)  # messages from u into its history
        y = y.index_add(0, u_idx, add_u).index_add(0, hist_nodes, add_h)
        out = out + alpha * y
        x = y
    rows = out.T @ ctx.emb0  # (2C, d): rows u and m of S(t) E0
    return (rows[:C] * rows[C:]).sum(-1)


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


def history_importances(run, user_idx: int, item_idx: int, steps: Optional[int] = None) -> dict[int, float]:
    """``{history item index: IG attribution}`` of ``ŷ(user, item)`` (faithfulness interface;
    ``steps=None``: the exact minimum of K Gauss–Legendre nodes)."""
    res = history_attributions(history_context(run), user_idx, item_idx, steps=steps)
    return {int(j): float(v) for j, v in zip(res["history"], res["attributions"])}


importances = history_importances


def _title(run, i: int) -> str:
    return run.titles().label(int(i))


def _top_item(run, user_idx: int) -> int:
    from ..recommend import top_item

    return top_item(run, user_idx)


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
    t0 = time.perf_counter()
    ctx = history_context(run)
    u = int(user_idx)
    if ctx.edges(u)[0].size == 0:
        raise ValueError(f"user {run.user_ids[u]} has no training history: there is nothing to attribute the "
                         "recommendation to")
    item = _top_item(run, u) if item_idx is None else int(item_idx)
    res = history_attributions(ctx, u, item, steps=steps)
    attr, hist = res["attributions"], res["history"]
    order = np.argsort(-np.abs(attr), kind="stable")[: int(top)]
    removal = removal_effects(ctx, u, item, order.tolist())
    pos_total = float(attr[attr > 0].sum())
    ratings = run.ratings[u] if getattr(run, "ratings", None) is not None else None
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
            "steps": res["steps"], "n_history": int(len(hist)),
            "baseline": "the user's edges removed (degree normalization held fixed)",
            "because": because, "positive_total": pos_total, "negative_total": float(attr[attr < 0].sum()),
            "attributions": rows, "seconds": time.perf_counter() - t0}


def render_text(result: dict) -> str:
    lines = [f"why user {result['user']} gets {result['item_title']} (id {result['item']}): Integrated Gradients "
             f"over the user's {result['n_history']} history edges ({result['steps']} steps)",
             result["because"],
             f"score {result['score']:.4f}   without the user's edges {result['baseline_score']:.4f}   "
             f"delta {result['delta']:.2e}",
             f"{'rank':>4}  {'attribution':>11}  {'share':>6}  {'removed':>9}  rating  history item"]
    for k, r in enumerate(result["attributions"], 1):
        rating = f"{r['rating']:.0f}" if r.get("rating") else "-"
        lines.append(f"{k:>4}  {r['attribution']:>+11.4f}  {100 * r['share']:>5.1f}%  {r['removal_effect']:>+9.4f}  "
                     f"{rating:>6}  {r['title']} (id {r['item']})")
    lines.append("(removed = exact score change when only that edge is removed)")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Signed horizontal bars of the listed history items' attributions, with the exact
    single-edge removal effect as a marker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["attributions"][::-1]
    fig = Figure(figsize=(8, 0.4 * len(rows) + 1.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    vals = [r["attribution"] for r in rows]
    ax.barh(range(len(rows)), vals, color=["tab:green" if v >= 0 else "tab:red" for v in vals], label="IG attribution")
    ax.scatter([r["removal_effect"] for r in rows], range(len(rows)), color="black", marker="x", zorder=3,
               label="score drop if only this edge is removed")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['title'][:40]}" + (f" ({r['rating']:.0f}★)" if r.get("rating") else "") for r in rows],
                       fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("attribution to the predicted score")
    ax.set_title(f"user {result['user']} → {result['item_title']}\n{result['because']}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
