"""``paths``: a post-hoc, path-based explainer standing in for SEP (seed 002's baseline).

It looks only at the graph, not at the model: a history item ``j`` of user ``u`` explains a
recommended item ``t`` as much as ``t`` is reached from ``j`` by two-step paths
``item – user – item`` (other users who have both) and ``item – entity – item`` (shared
entities). Each path is weighted by the probability that a uniform random walk starting at
``j`` follows it, i.e. the *normalized* path weight::

    w(j → t) = Σ_{m ∈ N(j)} 1/|N(j)| · 1/|N(m)| · [t ∈ N(m)]

where ``N(j)`` are ``j``'s neighbours in the training graph (its users and its entities) and
``N(m)`` the neighbours of the middle node (a user's items, an entity's items). Scores are
then normalized over the history to sum to 1 (all zero when no path exists). Without an
entity graph in the run (e.g. LightGCN/MF runs) only item–user–item paths count.

:func:`importances` follows the faithfulness interface
``importances(run, user_idx, item_idx) -> {history item index: score}``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["importances", "path_matrices", "explain_run", "describe"]


def path_matrices(run) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(P1, P2)``: ``P1`` ``(n_items, n_mid)`` = rows of the item–middle adjacency divided by
    the item's degree; ``P2`` ``(n_mid, n_items)`` = its transpose divided by the middle node's
    degree. ``w(j → t) = (P1 P2)[j, t]``. Cached on the run."""
    from . import run_cache

    cache = run_cache(run, "paths")
    if "mats" in cache:
        return cache["mats"]
    train = sp.csr_matrix(run.matrices["train"], dtype=np.float64)
    blocks = [train.T.tocsr()]
    ie = run.extras.get("item_entity")
    if ie is not None and len(ie):
        ie = np.asarray(ie, np.int64).reshape(-1, 2)
        n_e = int(np.asarray(run.extras["n_entities"]).reshape(-1)[0])
        a = sp.csr_matrix((np.ones(len(ie)), (ie[:, 0], ie[:, 1])), shape=(run.n_items, n_e))
        a.sum_duplicates()
        a.data[:] = 1.0
        blocks.append(a)
    adj = sp.hstack(blocks, format="csr")
    deg_i = np.asarray(adj.sum(1)).ravel()
    deg_m = np.asarray(adj.sum(0)).ravel()
    inv = lambda d: np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)  # noqa: E731
    p1 = (sp.diags(inv(deg_i)) @ adj).tocsr()
    p2 = (sp.diags(inv(deg_m)) @ adj.T.tocsr()).tocsc()
    cache["mats"] = (p1, p2)
    return p1, p2


def importances(run, user_idx: int, item_idx: int) -> dict[int, float]:
    hist = run.matrices["train"][int(user_idx)].indices
    if len(hist) == 0:
        raise ValueError(f"user {run.user_ids[int(user_idx)]} has no training history to explain with")
    p1, p2 = path_matrices(run)
    w = np.asarray((p1[hist] @ p2[:, int(item_idx)]).todense()).ravel()
    tot = w.sum()
    if tot > 0:
        w = w / tot
    return {int(j): float(s) for j, s in zip(hist, w)}


def explain_run(run, user_idx: int, item_idx=None, top: int = 10, **_options) -> dict:
    if item_idx is None:
        from . import default_item

        item_idx = default_item(run, user_idx)
    imp = importances(run, user_idx, item_idx)
    rows = sorted(imp.items(), key=lambda kv: -kv[1])[:top]
    title = (lambda i: str(run.item_titles[i]) if run.item_titles else f"item {int(run.item_ids[i])}")
    return {"method": "paths", "user": int(run.user_ids[int(user_idx)]), "item": int(run.item_ids[int(item_idx)]),
            "item_title": title(int(item_idx)),
            "history": [{"item": int(run.item_ids[j]), "title": title(j), "score": s} for j, s in rows]}


def describe(result: dict) -> dict:
    """The common shape: the history items by normalized path weight (not additive)."""
    from .explanation import HISTORY, Contribution

    return {"contributions": [Contribution(HISTORY, r["title"], float(r["score"]), r["item"])
                              for r in result["history"]],
            "statement": f"Paths in the interaction graph lead from these history items to {result['item_title']} "
                         "(a post-hoc reading of the graph, not of the model)."}
