"""``shapley``: Shapley values of the user's history items for one recommendation, for every model
that re-scores a changed history exactly and cheaply (``RESCORE``: resolved, vae, NMF, the graph
filters, LightGCN's history-only mode). LightGCN with free user embeddings is left out: each of the
``samples × |H|`` coalitions would be a propagation of the whole graph (~40 s for 4 orders of a
115-item ML-100K history here); ``--method history`` explains it, with its history share.

The value of the coalition ``S ⊆ H`` (the user's training history) is the exact re-scored
``f(S) = ŷ(u, t | history S)`` (:func:`whyrec.explain.faithfulness.rescore`); item ``j``'s Shapley
value (Shapley 1953; as a feature attribution Štrumbelj & Kononenko 2014, "Explaining prediction
models and individual predictions with feature contributions")::

    φ_j = Σ_{S ⊆ H∖{j}} |S|! (|H| − |S| − 1)! / |H|! · ( f(S ∪ {j}) − f(S) )
        = E_π [ f(P_π(j) ∪ {j}) − f(P_π(j)) ]        (P_π(j): the items before j in the order π)

computed by Captum: exactly over all ``|H|!`` orders (``ShapleyValues``) when ``|H| ≤``
:data:`EXACT_MAX`, else by averaging ``samples`` random orders (``ShapleyValueSampling``; Castro,
Gómez & Tejada 2009). In every order the marginal contributions telescope to ``f(H) − f(∅)``, so the
values are **additive exactly, whatever the number of samples**::

    Σ_j φ_j = ŷ(u, t) − ŷ_∅(u, t)

with the baseline ``ŷ_∅`` the score once the whole history is removed: what the model gives the user
from anything but the history (zero for a graph filter and LightGCN's history-only mode; the user's own term for resolved). For a
model linear in the history (the graph filters) every order gives the same marginal contribution
and φ equals the exact decomposition of ``--method history``. Cost: ``samples × |H| + 1`` exact
re-scorings, batched (:data:`BATCH` rows at a time).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .explanation import history_share

__all__ = ["shapley_values", "importances", "explain_run", "describe", "EXACT_MAX", "DEFAULT_SAMPLES"]

#: histories up to this length are attributed exactly (all |H|! orders: 720 at 6)
EXACT_MAX = 6
#: random orders averaged for a longer history
DEFAULT_SAMPLES = 16
#: coalitions re-scored at once
BATCH = 256


def shapley_values(value, n: int, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Shapley values of ``n`` players for the set function ``value``: ``(b, n)`` 0/1 float tensor of
    coalitions -> ``(b,)`` values. Returns ``(φ (n,), value of all, value of none)``: exact for
    ``n ≤`` :data:`EXACT_MAX`, else the mean over ``samples`` random orders (seeded)."""
    from captum.attr import ShapleyValues, ShapleyValueSampling

    if n < 1:
        raise ValueError("no players: the history is empty")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    full, none = torch.ones(1, n, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if n <= EXACT_MAX:
            phi = ShapleyValues(value).attribute(full, baselines=none, perturbations_per_eval=BATCH)
        else:
            phi = ShapleyValueSampling(value).attribute(full, baselines=none, n_samples=int(samples),
                                                        perturbations_per_eval=BATCH)
    ends = value(torch.cat([full, none]))
    return phi[0].detach().double().numpy(), float(ends[0]), float(ends[1])


def _history_value(run, user: int, item: int, history: np.ndarray):
    """``f``: coalitions ``(b, |H|)`` over ``history`` -> ``ŷ(user, item)`` re-scored with those items only."""
    import scipy.sparse as sp

    from .faithfulness import rescore

    def value(coalitions: torch.Tensor) -> torch.Tensor:
        keep = coalitions.detach().cpu().numpy() > 0.5
        rows, cols = np.nonzero(keep)
        hist = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, history[cols])),
                             shape=(len(keep), run.n_items))
        with torch.no_grad():
            s = rescore(run, np.full(len(keep), user, np.int64), hist)
        return s[:, item].detach().to("cpu", torch.float64)

    return value


def _attribute(run, user: int, item: int, samples: int, seed: int):
    from .decomposition import _history

    history = np.asarray(_history(run, user), np.int64)
    if len(history) == 0:
        raise ValueError(f"user {run.user_ids[user]} has no training history: there is nothing to attribute "
                         "the recommendation to")
    phi, score, baseline = shapley_values(_history_value(run, user, item, history), len(history), samples, seed)
    return history, phi, score, baseline


def importances(run, user_idx: int, item_idx: int) -> dict[int, float]:
    """``{history item index: φ_j}`` (the faithfulness benchmark's interface)."""
    history, phi, _, _ = _attribute(run, int(user_idx), int(item_idx), DEFAULT_SAMPLES, 0)
    return {int(j): float(v) for j, v in zip(history, phi)}


def explain_run(run, user_idx: int, item_idx=None, top: int = 10, samples: Optional[int] = None,
                seed: Optional[int] = None, **_options) -> dict:
    """JSON-ready result: every history item's Shapley value (largest first, ``top`` listed), the
    score, the no-history baseline and how the values were computed."""
    import time

    if item_idx is None:
        from . import default_item

        item_idx = default_item(run, user_idx)
    u, t = int(user_idx), int(item_idx)
    samples = DEFAULT_SAMPLES if samples is None else int(samples)
    seed = 0 if seed is None else int(seed)
    t0 = time.perf_counter()
    history, phi, score, baseline = _attribute(run, u, t, samples, seed)
    order = np.argsort(-phi, kind="stable")
    title = (lambda i: str(run.item_titles[i]) if run.item_titles else f"item {int(run.item_ids[i])}")
    exact = len(history) <= EXACT_MAX
    return {
        "method": "shapley", "user": int(run.user_ids[u]), "item": int(run.item_ids[t]), "item_title": title(t),
        "score": score, "baseline": baseline, "history_share": history_share(score, baseline),
        "exact": exact, "samples": None if exact else samples, "seed": None if exact else seed,
        "n_history": int(len(history)), "sum_of_values": float(phi.sum()),
        "history": [{"item": int(run.item_ids[history[p]]), "title": title(int(history[p])), "value": float(phi[p])}
                    for p in order[:top]],
        "rest": float(phi[order[top:]].sum()), "seconds": round(time.perf_counter() - t0, 4),
    }


def describe(result: dict) -> dict:
    """The common shape: history items by Shapley value, additive over the no-history baseline (the
    items not listed summed in one ``other history items`` row)."""
    from .explanation import HISTORY, Contribution

    rows = [Contribution(HISTORY, r["title"], float(r["value"]), r["item"]) for r in result["history"]]
    if result["n_history"] > len(rows):
        rows.append(Contribution(HISTORY, f"{result['n_history'] - len(rows)} other history items", float(result["rest"])))
    how = "exact, over every order" if result["exact"] else f"mean over {result['samples']} random orders"
    return {"contributions": rows, "score": result["score"], "baseline": result["baseline"], "additive": True,
            "statement": f"What each history item adds to {result['item_title']}'s score, averaged over the orders "
                         f"in which the history could be built up (Shapley values, {how}); they sum to the score "
                         "minus the score without any history.",
            "stats": {"n_history": result["n_history"], "history share": result["history_share"]}}
