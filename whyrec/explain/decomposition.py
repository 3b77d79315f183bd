"""``--method history`` for the models whose score is linear in the history (``EXACT_HISTORY``: the graph
filters ``gf-cf``, ``bspm``, ``cheby-cf`` and LightGCN's history-only mode): the exact decomposition of a
score over the user's history.

A filter scores ``s(u, t) = Σ_{j ∈ H} F(j, t)`` for the user's binary history ``H``
(:mod:`whyrec.models.spectral`), so the contribution of history item ``j`` is ``F(j, t)``:

* the contributions sum to the score (to float rounding; ``delta`` reports the residual);
* the empty history scores 0 — the baseline is exact, not a reference point IG has to pick;
* removing ``j`` changes the score by exactly ``F(j, t)`` (``removal_effect`` equals the
  contribution; the tests re-score to prove it).

Nothing is approximated and no gradient is taken. One explanation costs one filter pass over
``|H|`` unit rows (:meth:`~whyrec.models.spectral.LinearFilter.history_contributions`).
"""

from __future__ import annotations

import time

import numpy as np

from ..models.base import EXACT_HISTORY, can

__all__ = ["is_filter", "contributions", "explain_filter"]


def is_filter(model) -> bool:
    """Whether ``model`` decomposes its scores exactly over the history (a graph filter)."""
    return can(model, EXACT_HISTORY)


def _history(run, user_idx: int) -> np.ndarray:
    train = run.matrices["train"]
    return train.indices[train.indptr[user_idx]:train.indptr[user_idx + 1]].astype(np.int64)


def contributions(run, user_idx: int, item_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """``(history item indices, F(j, item))`` for the user's training history. The user's whole
    ``(|H|, n_items)`` block is computed once and kept for the next call about the same user (the
    faithfulness benchmark asks for each of a user's ten recommendations in turn)."""
    from . import run_cache

    cache = run_cache(run, "decomposition")
    u = int(user_idx)
    if cache.get("user") != u:
        hist = _history(run, u)
        cache.clear()
        cache.update(user=u, history=hist,
                     block=run.model.history_contributions(hist, np.arange(run.n_items)).double().cpu().numpy())
    return cache["history"], cache["block"][:, int(item_idx)].copy()


def explain_filter(run, user_idx: int, item: int, top: int = 10) -> dict:
    """The history explanation's JSON (the same keys as Integrated Gradients' for LightGCN), exact."""
    from .history import _title, because_text

    t0 = time.perf_counter()
    u = int(user_idx)
    hist, attr = contributions(run, u, item)
    if hist.size == 0:
        raise ValueError(f"user {run.user_ids[u]} has no training history: there is nothing to attribute the "
                         "recommendation to")
    score = float(run.model.score_users([u])[0, int(item)])
    order = np.argsort(-np.abs(attr), kind="stable")[: int(top)]
    pos_total = float(attr[attr > 0].sum())
    ratings = run.ratings
    rows = []
    for p in order:
        j = int(hist[p])
        r = float(ratings[u, j]) if ratings is not None else None
        rows.append({"item": int(run.item_ids[j]), "index": j, "title": _title(run, j), "rating": r or None,
                     "attribution": float(attr[p]), "share": float(attr[p]) / pos_total if pos_total else 0.0,
                     "removal_effect": float(attr[p]), "edge_weight": 1.0})
    support = [p for p in np.argsort(-attr, kind="stable")[:2] if attr[p] > 0]
    delta = float(attr.sum() - score)
    return {"method": "history", "exact": True, "user": int(run.user_ids[u]), "item": int(run.item_ids[item]),
            "item_title": _title(run, item), "score": score, "baseline_score": 0.0, "delta": delta,
            "relative_delta": abs(delta) / abs(score) if score else 0.0, "steps": 0, "n_history": int(hist.size),
            "history_share": 1.0,  # a filter's score is a function of the history alone
            "baseline": "an empty history (the score is linear in the history: it scores 0)",
            "because": because_text([_title(run, int(hist[p])) for p in support]), "positive_total": pos_total,
            "negative_total": float(attr[attr < 0].sum()), "attributions": rows,
            "seconds": time.perf_counter() - t0}
