"""``--method counterfactual``: the smallest set of the user's history items whose removal takes an
item ``t`` out of the user's top ``K`` (ACCENT's question for ``K = 1``: "without these, ``t`` would not
be your first recommendation"; ``K = 10``: "... would not be in your top 10").

Definitions
-----------
The user's *history* ``H`` is their row of the training matrix (what the model reads at inference).
Removing a set ``S ⊆ H`` means re-scoring the user from ``H \\ S`` through the model's own re-scoring
path, :func:`whyrec.explain.faithfulness.rescore` (graph filters: exactly, as a changed row; LightGCN:
the user's edges deleted, the adjacency re-normalized and propagated again with the trained layer-0
embeddings; resolved/vae: the user re-encoded; NMF: the reduced row folded in by NNLS). Nothing is
retrained. Items masked from the ranking (``mask``: every item the user has rated for ``whyrec
explain``, as ``whyrec recommend`` masks them; the training items for the benchmark) stay masked after
the removal. ``t``'s rank is ``1 + #{unmasked i ≠ t : s(i) > s(t)}`` (a tie does not push ``t`` down),
so ``t`` is out of the top ``K`` iff its *margin* ``s(t) − (K-th largest score of the other unmasked
items)`` is negative.

Search
------
* **Graph filters** (``gf-cf``, ``bspm``, ``cheby-cf``) are linear in the history: removing ``S``
  changes every score by ``−Σ_{j∈S} F(j, ·)``, with ``F`` the exact per-item contribution block of
  :mod:`whyrec.explain.decomposition` (one filter pass over ``|H|`` unit rows). For ``K = 1`` this gives
  the **optimum**: ``t`` leaves first place iff some competitor ``i`` overtakes it, and the fewest
  removals that let ``i`` overtake ``t`` are the largest ``g_i(j) = F(j, t) − F(j, i)`` until their sum
  exceeds ``s(t) − s(i)``; the minimum over ``i`` is the smallest set (and when it exceeds ``max_size``,
  no set of at most ``max_size`` items exists -- a proof, not a failed search). For ``K > 1`` the same
  per-competitor counts give a lower bound (``K`` competitors must overtake ``t``: at least the ``K``-th
  smallest count), and a greedy/beam search over the exact block finds a set.
* **Other models** (LightGCN, lightgcn-features, resolved, vae, NMF): candidates are ordered by a
  first-order estimate of how much each item's removal lowers ``t``'s score (history Integrated
  Gradients for LightGCN-type models, whose re-propagation is the costly step; otherwise the exact
  leave-one-out drops, one batched re-scoring of ``|H|`` histories), and a greedy (``beam = 1``) or beam
  search adds one item per step: each step re-scores the ``pool`` best-estimated remaining candidates of
  every kept state **exactly** in one batched call and keeps the ``beam`` states with the lowest margin.

Every reported set is verified by re-scoring the reduced history through :func:`rescore` (for the
filters too: the block only searches). A found set is then made *irreducible*: while dropping one of its
items from the removal still takes ``t`` out of the top ``K`` (verified), that item is put back. The
result says whether the size is proven optimal (filters, ``K = 1``, or a set as small as the lower
bound) and counts the exact re-scorings (``rescorings``: model re-scorings of one history each).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from ..models.base import GRAPH, RESCORE, can

__all__ = ["CounterfactualSearch", "counterfactual_set", "explain_run", "describe", "details", "importances",
           "margins", "ranks", "DEFAULT_MAX_SIZE"]

DEFAULT_K = 1
DEFAULT_MAX_SIZE = 20
DEFAULT_BEAM = 1
DEFAULT_POOL = 10


# ---------------------------------------------------------------------------------------------- #
# ranks and margins
# ---------------------------------------------------------------------------------------------- #
def _masked(scores: np.ndarray, item: int, mask: np.ndarray) -> np.ndarray:
    """Scores ``(n, n_items)`` float64 with the masked items and ``item`` itself at ``-inf``."""
    s = np.array(scores, dtype=np.float64, copy=True, ndmin=2)
    s[:, np.asarray(mask, np.int64)] = -np.inf
    s[:, int(item)] = -np.inf
    return s


def ranks(scores, item: int, mask: Sequence[int]) -> np.ndarray:
    """``item``'s rank per row of ``scores`` ``(n, n_items)``: 1 + the unmasked others scoring strictly higher."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, np.shape(scores)[-1])
    own = scores[:, int(item)].copy()
    others = _masked(scores, item, mask)
    return 1 + (others > own[:, None]).sum(1)


def margins(scores, item: int, mask: Sequence[int], k: int) -> np.ndarray:
    """``s(item) − (k-th largest unmasked other score)`` per row: negative iff ``item`` is out of the top ``k``
    (``+inf`` when fewer than ``k`` other items can be ranked)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, np.shape(scores)[-1])
    own = scores[:, int(item)]
    others = _masked(scores, item, mask)
    if k > others.shape[1]:
        return np.full(len(own), np.inf)
    kth = -np.partition(-others, k - 1, axis=1)[:, k - 1]
    return own - kth


# ---------------------------------------------------------------------------------------------- #
# scorers
# ---------------------------------------------------------------------------------------------- #
def history_rows(history: np.ndarray, removed_sets: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary rows ``history \\ removed`` (positions into ``history``) for each removed set."""
    rows, cols = [], []
    for r, removed in enumerate(removed_sets):
        keep = np.ones(len(history), bool)
        keep[np.asarray(list(removed), np.int64)] = False
        kept = history[keep]
        rows.append(np.full(len(kept), r, np.int64))
        cols.append(kept)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(removed_sets), n_items))


def can_rescore(run) -> bool:
    """Whether the run's model re-scores a changed history at inference (see the module docstring)."""
    model = run.model
    return can(model, RESCORE) or can(model, GRAPH)  # GRAPH: propagated again without the removed edges


def check_run(run) -> None:
    if not can_rescore(run):
        raise ValueError(f"a {run.config.get('model')} model's scores do not depend on the user's history at "
                         "inference, so no set of history items can change them; counterfactual explanations "
                         "need a graph filter, lightgcn, resolved, vae or nmf run")


class CounterfactualSearch:
    """The search for one ``(user, item)`` (module docstring).

    ``history``: the user's history item indices; ``mask``: item indices kept out of the ranking.
    :meth:`rescore` re-scores removal sets exactly (counted in :attr:`rescorings`)."""

    def __init__(self, run, user: int, item: int, mask: Optional[Sequence[int]] = None,
                 history: Optional[np.ndarray] = None):
        from .decomposition import _history, is_filter

        check_run(run)
        self.run, self.user, self.item = run, int(user), int(item)
        self.history = np.asarray(_history(run, self.user) if history is None else history, np.int64)
        self.mask = np.asarray(self.history if mask is None else mask, np.int64)
        self.n_items = int(run.n_items)
        self.linear = is_filter(run.model)
        self.rescorings = 0
        self._block: Optional[np.ndarray] = None
        full = self.rescore([()])[0]
        self.scores_before = full

    # exact re-scoring ------------------------------------------------------------------------- #
    def rescore(self, removed_sets: Sequence[Sequence[int]], chunk: int = 256) -> np.ndarray:
        """Exact scores ``(len(removed_sets), n_items)`` float64 of the history without each set."""
        from .faithfulness import rescore

        out = []
        for lo in range(0, len(removed_sets), chunk):
            part = removed_sets[lo:lo + chunk]
            rows = history_rows(self.history, part, self.n_items)
            s = rescore(self.run, np.full(len(part), self.user, np.int64), rows)
            out.append(s.detach().double().cpu().numpy())
            self.rescorings += len(part)
        return np.concatenate(out) if out else np.zeros((0, self.n_items))

    def margins(self, scores: np.ndarray, k: int) -> np.ndarray:
        return margins(scores, self.item, self.mask, k)

    def ranks(self, scores: np.ndarray) -> np.ndarray:
        return ranks(scores, self.item, self.mask)

    # the linear filters' exact block ----------------------------------------------------------- #
    def block(self) -> np.ndarray:
        """``F(j, ·)`` ``(|H|, n_items)`` float64: each history item's exact contribution to every score."""
        if self._block is None:
            self._block = self.run.model.history_contributions(self.history, np.arange(self.n_items)).double().cpu().numpy()
        return self._block

    def block_scores(self, removed_sets: Sequence[Sequence[int]]) -> np.ndarray:
        F = self.block()
        base = F.sum(0)
        return np.stack([base - F[list(s)].sum(0) if len(s) else base for s in removed_sets])

    def competitor_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear models: for every item ``i``, the fewest removals after which ``i`` scores above ``t``
        (``0`` when it already does, a huge number when no removal set does it; masked items and ``t``
        itself: huge) and the order of history positions that achieves it (``(|H|, n_items)`` argsort)."""
        F = self.block()
        t = self.item
        s = F.sum(0)
        G = F[:, [t]] - F  # removing j lowers s(t) - s(i) by G[j, i]
        order = np.argsort(-G, axis=0, kind="stable")
        gains = np.take_along_axis(G, order, 0)
        gains = np.where(gains > 0, gains, 0.0)
        cum = np.vstack([np.zeros((1, G.shape[1])), np.cumsum(gains, 0)])  # cum[n] = best gain with n removals
        d = s[t] - s
        big = len(self.history) + 1
        reached = cum > d[None, :]
        counts = np.where(reached.any(0), reached.argmax(0), big)
        counts[self.mask] = big
        counts[t] = big
        return counts, order


# ---------------------------------------------------------------------------------------------- #
# estimates that order the candidates (non-linear models)
# ---------------------------------------------------------------------------------------------- #
def _estimates(search: CounterfactualSearch) -> tuple[np.ndarray, str]:
    """First-order estimate of how much removing each history item alone lowers ``t``'s margin."""
    run, u, t = search.run, search.user, search.item
    model = run.model
    if can(model, GRAPH):
        from .history import history_importances

        imp = history_importances(run, u, t)
        return np.array([imp.get(int(j), 0.0) for j in search.history]), "history Integrated Gradients"
    k = 1
    base = search.margins(search.scores_before[None], k)[0]
    loo = search.rescore([(p,) for p in range(len(search.history))])
    return base - search.margins(loo, k), "leave-one-out margin drops (exact)"


# ---------------------------------------------------------------------------------------------- #
# the search
# ---------------------------------------------------------------------------------------------- #
def _beam_search(score: Callable, children_of: Callable, margin: Callable, max_size: int, beam: int,
                 accept: Callable) -> tuple[Optional[tuple], list]:
    """Grow removal sets one item per step. ``children_of(state)`` lists candidate positions to add;
    ``score(sets)`` their scores, ``margin(scores)`` their margins; a set whose margin is negative is
    offered to ``accept(set)`` (exact verification) in increasing margin order. Returns the accepted set
    (or ``None``) and the best state of the last step ``(set, margin)``."""
    states = [()]
    best = [((), float("inf"))]
    for _size in range(1, max_size + 1):
        children, seen = [], set()
        for st in states:
            for c in children_of(st):
                child = tuple(sorted((*st, int(c))))
                if child not in seen:
                    seen.add(child)
                    children.append(child)
        if not children:
            break
        m = margin(score(children))
        order = np.argsort(m, kind="stable")
        for p in order:
            if m[p] >= 0:
                break
            if accept(children[p]):
                return children[p], [(children[p], float(m[p]))]
        states = [children[p] for p in order[:beam]]
        best = [(children[p], float(m[p])) for p in order[:beam]]
    return None, best


def counterfactual_set(run, user: int, item: int, k: int = DEFAULT_K, max_size: int = DEFAULT_MAX_SIZE,
                       beam: int = DEFAULT_BEAM, pool: int = DEFAULT_POOL, mask: Optional[Sequence[int]] = None,
                       search: Optional[CounterfactualSearch] = None) -> dict:
    """Search the smallest removal set taking ``item`` out of ``user``'s top ``k`` (module docstring).

    Returns index-level results: ``found``, ``removed`` (history item indices, the largest estimated
    effect on ``t`` first), ``rank_before/after``, ``score_before/after``, ``margin_before/after``, ``optimal``,
    ``lower_bound``, ``exists`` (``False`` when proven impossible within ``max_size``), ``rescorings``,
    ``search``, ``estimate``."""
    k, max_size, beam, pool = _check_int("k", k), _check_int("max_size", max_size), _check_int("beam", beam), \
        _check_int("pool", pool)
    cf = search or CounterfactualSearch(run, user, item, mask=mask)
    H = len(cf.history)
    out = {"k": k, "max_size": max_size, "beam": beam, "n_history": H, "optimal": False, "lower_bound": None,
           "exists": None}
    before = cf.scores_before
    out["rank_before"] = int(cf.ranks(before[None])[0])
    out["score_before"] = float(before[cf.item])
    out["margin_before"] = float(cf.margins(before[None], k)[0])

    key = np.zeros(H)  # how the removed items are listed: most important first

    def finish(removed, scores, found):
        removed = sorted(removed, key=lambda p: (-key[p], p))
        out.update(found=found, removed=[int(cf.history[p]) for p in removed], size=len(removed) if found else None,
                   rank_after=int(cf.ranks(scores[None])[0]), score_after=float(scores[cf.item]),
                   margin_after=float(cf.margins(scores[None], k)[0]), rescorings=cf.rescorings)
        return out

    if out["rank_before"] > k:  # already out: the empty set
        out.update(search="none needed", estimate=None, already_out=True, optimal=True, lower_bound=0, exists=True)
        return finish((), before, True)
    out["already_out"] = False
    if H == 0:
        out.update(search="none (no history)", estimate=None, exists=False, lower_bound=None)
        return finish((), before, False)

    verified: dict = {}

    def accept(removed) -> bool:
        s = cf.rescore([removed])[0]
        ok = bool(cf.margins(s[None], k)[0] < 0)
        if ok:
            verified[tuple(sorted(removed))] = s
        return ok

    limit = min(max_size, H)
    found = None
    if cf.linear:
        counts, order = cf.competitor_counts()
        key = cf.block()[:, cf.item]
        bound = int(np.partition(counts, k - 1)[k - 1]) if k <= len(counts) else H + 1
        out["lower_bound"] = bound if bound <= H else None
        out["estimate"] = "exact decomposition (linear filter)"
        if bound > limit:  # proven: no set of at most max_size items (or none at all) exists
            out.update(search="exact bound (linear filter)", exists=False)
            return finish((), before, False)
        if k == 1:
            i_star = int(np.argmin(counts))
            cand = tuple(int(p) for p in order[: int(counts[i_star]), i_star])
            out["search"] = "exact optimum (linear filter)"
            if accept(cand):
                found = cand
                out["optimal"] = True
        if found is None:
            out["search"] = f"{'greedy' if beam == 1 else f'beam {beam}'} over the exact decomposition"

            def children_of(st):
                rest = [p for p in range(H) if p not in st]
                sc = cf.block_scores([tuple(sorted((*st, p))) for p in rest])
                m = cf.margins(sc, k)
                return [rest[q] for q in np.argsort(m, kind="stable")[:max(pool, beam)]]

            found, best = _beam_search(cf.block_scores, children_of, lambda s: cf.margins(s, k), limit, beam, accept)
    else:
        est, how = _estimates(cf)
        key = est
        out["estimate"] = how
        ranked = [int(p) for p in np.argsort(-est, kind="stable")]
        out["search"] = f"{'greedy' if beam == 1 else f'beam {beam}'} with exact re-scoring of the {pool} " \
                        "best-estimated candidates per step"

        def children_of(st):
            return [p for p in ranked if p not in st][:pool]

        found, best = _beam_search(cf.rescore, children_of, lambda s: cf.margins(s, k), limit, beam, accept)
    if found is None:
        state = best[0][0] if best else ()
        scores = cf.rescore([state])[0]
        out["best_removed"] = [int(cf.history[p]) for p in state]
        out["best_rank"] = int(cf.ranks(scores[None])[0])
        return finish((), before, False)
    # irreducible: put back any item whose removal is not needed (verified each time)
    found = tuple(sorted(found))
    scores = verified[found]
    while len(found) > 1 and not out["optimal"]:
        subsets = [tuple(p for p in found if p != q) for q in found]
        sc = cf.rescore(subsets)
        m = cf.margins(sc, k)
        q = int(np.argmin(m))
        if m[q] >= 0:
            break
        found, scores = subsets[q], sc[q]
    if out["lower_bound"] is not None and len(found) <= out["lower_bound"]:
        out["optimal"] = True
    out["exists"] = True
    return finish(found, scores, True)


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------- #
# the explanation
# ---------------------------------------------------------------------------------------------- #
def _names(names: list[str], most: int = 4) -> str:
    if len(names) > most:
        return f"{', '.join(names[:most - 1])} and {len(names) - most + 1} more of your history items"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _where(k: int) -> str:
    return "your first recommendation" if k == 1 else f"in your top {k}"


def statement(result: dict) -> str:
    title, k = result["item_title"], result["k"]
    if result.get("already_out"):
        return f"{title} is already not {_where(k)} (rank {result['rank_before']})."
    if result["found"]:
        verb = "would not be"
        return f"Without {_names([r['title'] for r in result['removed']])}, {title} {verb} {_where(k)}."
    if result.get("exists") is False:
        lb = result.get("lower_bound")
        why = f": at least {lb} of your {result['n_history']} history items would have to go" if lb else \
            ": no removal of your history items can do it"
        return f"No set of at most {result['max_size']} of your history items takes {title} out of " \
               f"{'first place' if k == 1 else f'your top {k}'}{why}."
    return f"The search found no set of at most {min(result['max_size'], result['n_history'])} of your history " \
           f"items that takes {title} out of {'first place' if k == 1 else f'your top {k}'} " \
           f"(best: rank {result.get('best_rank', result['rank_after'])})."


def explain_run(run, user_idx: int, item_idx=None, k: Optional[int] = None, max_size: Optional[int] = None,
                beam: Optional[int] = None, pool: Optional[int] = None, **_options) -> dict:
    """JSON-ready counterfactual explanation of ``item_idx`` (default: the user's top recommendation)."""
    from .decomposition import _history
    from . import default_item
    from .history import _title

    t0 = time.perf_counter()
    k = DEFAULT_K if k is None else k
    max_size = DEFAULT_MAX_SIZE if max_size is None else max_size
    beam = DEFAULT_BEAM if beam is None else beam
    pool = DEFAULT_POOL if pool is None else pool
    for name, v in (("k", k), ("max_size", max_size), ("beam", beam), ("pool", pool)):
        _check_int(name, v)
    check_run(run)
    u = int(user_idx)
    hist = _history(run, u)
    if hist.size == 0:
        raise ValueError(f"user {run.user_ids[u]} has no training history: there is nothing to remove")
    item = default_item(run, u) if item_idx is None else int(item_idx)
    seen = run.matrices["seen"]
    mask = seen.indices[seen.indptr[u]:seen.indptr[u + 1]].astype(np.int64)
    if item in set(mask.tolist()):
        raise ValueError(f"user {run.user_ids[u]} has already interacted with {_title(run, item)} (id "
                         f"{run.item_ids[item]}): it is not among their recommendations, so there is no "
                         "recommendation to take away")
    res = counterfactual_set(run, u, item, k=k, max_size=max_size, beam=beam, pool=pool, mask=mask)
    ratings = run.ratings
    removed = []
    for j in res["removed"]:
        r = float(ratings[u, j]) if ratings is not None else None
        removed.append({"item": int(run.item_ids[j]), "index": int(j), "title": _title(run, j), "rating": r or None})
    out = {"method": "counterfactual", "user": int(run.user_ids[u]), "item": int(run.item_ids[item]),
           "item_title": _title(run, item), **res, "removed": removed}
    if "best_removed" in res:
        out["best_removed"] = [{"item": int(run.item_ids[j]), "index": int(j), "title": _title(run, j)}
                               for j in res["best_removed"]]
    out["verified"] = bool(res["found"] and (res.get("already_out") or res["rank_after"] > res["k"]))
    out["statement"] = statement(out)
    out["because"] = out["statement"]
    out["seconds"] = time.perf_counter() - t0
    return out


def importances(run, user_idx: int, item_idx: int) -> dict[int, float]:
    """Faithfulness interface: the counterfactual set for leaving first place, ranked in the order it was
    built (the first removed item most important); the rest of the history 0."""
    res = counterfactual_set(run, user_idx, item_idx, k=1, max_size=DEFAULT_MAX_SIZE,
                             mask=run.matrices["train"][int(user_idx)].indices)
    n = len(res["removed"])
    return {int(j): float(n - r) for r, j in enumerate(res["removed"])}


def describe(result: dict) -> dict:
    """The common shape: the removal set in the order the search ranked it (each value 1: a member of the
    set), the statement, ``t``'s rank before and after; the score is ``t``'s before the removal."""
    from .explanation import HISTORY, Contribution

    stats = {"top k": result["k"], "set size": result["size"], "history items": result["n_history"],
             "verified": result["verified"]}
    after = result["rank_after"] if result["found"] else result.get("best_rank", result["rank_after"])
    compare = {"rank now": result["rank_before"],
               ("rank without them" if result["found"] else "best rank reached"): after}
    return {"contributions": [Contribution(HISTORY, r["title"], 1.0, r["item"]) for r in result["removed"]],
            "score": result["score_before"], "statement": result["statement"], "stats": stats, "compare": compare}


def details(result: dict) -> list[str]:
    lines = []
    if result["found"] and not result.get("already_out"):
        lines.append(f"score {result['score_before']:.4f} -> {result['score_after']:.4f}   "
                     + ("proven smallest" if result["optimal"] else "irreducible: no item of it can be kept"))
    elif not result["found"]:
        lines.append(f"best rank reached: {result.get('best_rank', result['rank_after'])}")
    lines.append(f"search: {result['search']}; candidates ordered by {result['estimate'] or '-'}; "
                 f"{result['rescorings']} exact re-scorings; verified: {result['verified']}")
    return lines
