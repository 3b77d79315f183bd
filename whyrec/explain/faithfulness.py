"""Faithfulness yardstick (seed 002 §5.4.1, Figure 5): remove what an explanation names as
most important and measure how much the recommendations get worse.

Protocol (one explainer ``M``, removal counts ``m``, ``runs`` repetitions):

1. Every test user ``u`` (a user with test items and a training history) gets their top-10
   recommendations ``T_u`` (training items masked), and ``recall = Recall@10`` is the mean
   over users, scored through the same re-scoring path as step 3 with nothing removed.
2. The explainer scores each history item ``j ∈ N_u`` for each ``t ∈ T_u``; each ``t``'s
   scores are normalized to sum 1 over the history (so the ten recommendations weigh the
   same; an explanation that is all zero contributes nothing) and summed over ``T_u``.
3. The ``m`` history items with the largest total are removed from the user's input
   (ties broken by item index); the model re-scores the user from the reduced input
   **without retraining** (see :func:`rescore`), the original training items are still
   masked, and ``recall′`` = Recall@10 against the same test items.
4. ``shift = (recall − recall′) / recall`` (the seed's measure), with both recalls averaged over the users
   whose history has more than ``m`` items (at least one input must remain; a user with
   fewer is left out at that ``m`` and ``n_users`` says how many were used). If no test
   user has more than ``m`` history items, that ``m`` is an error.
   We also report ``top10_kept``: the mean share of ``T_u`` still in the user's top 10 after the
   removal. ``shift`` mixes two things -- did the explanation name what the recommendations rest
   on, and were those recommendations hits -- while ``top10_kept`` asks only the first: a faithful
   explainer's removals knock its own recommendations out (low ``top10_kept``) even for a model
   whose recall does not drop (we see this with LightGCN on Last.fm, ``docs/resolved.md``).
5. Repeated ``runs`` times with seeds ``seed, seed+1, …``; ``shift`` is the mean and
   ``std`` the standard deviation (ddof 0) over runs. Deterministic explainers
   (``intrinsic``, ``paths``) give the same removal every run, so their ``std`` is 0;
   ``random`` draws a fresh uniform random permutation of the history per user and run.

Explainers plug in through the registry (:data:`whyrec.explain.EXPLAINERS`, ``ranks_history``); their
``importances`` has the signature::

    importances(run, user_idx: int, item_idx: int) -> dict[int, float]

(``run``: :class:`whyrec.run.Run`; keys are the user's history item *indices*, values any
real importance, larger = more important; items left out count as 0). ``history`` points at
``whyrec.explain.history:importances`` (Integrated Gradients over graph edges); adding a
method is one line in the registry.

What "remove an input" means, per model (:func:`rescore`):

* ``resolved`` / ``vae``: drop the item from ``N_u`` and re-encode the user (eq. 5–7, 11–12,
  means) — the user's representation is recomputed from the reduced history; nothing else
  changes (item and entity encodings, decoder dictionary, other users).
* ``nmf``: fold the reduced history in by non-negative least squares against the fitted ``H``
  (``W_u`` is recomputed, ``H`` fixed).
* ``lightgcn``: delete the user–item edges from the training graph, rebuild the normalized
  adjacency and propagate again with the trained layer-0 embeddings (exact for the changed
  graph, per user).
* other models (``mf``, ``pop``): their scores do not depend on the history at inference,
  so removal is undefined: error.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
import torch

from ..models.base import GRAPH, RESCORE, can
from . import EXPLAINERS

__all__ = ["IMPORTANCE_FUNCTIONS", "importance_function", "rescore", "evaluate_faithfulness",
           "render_text", "plot", "plot_many", "METHODS", "CURVE_METRICS", "METRICS", "evaluate_curves",
           "render_curves", "plot_curves", "paired_test"]

#: explainer name -> "module:function" with ``importances(run, user_idx, item_idx) -> {j: score}``: the
#: registry's explainers that rank history items (:data:`whyrec.explain.EXPLAINERS`)
IMPORTANCE_FUNCTIONS: dict[str, str] = {name: f"{e.module}:importances" for name, e in EXPLAINERS.items()
                                        if e.ranks_history}
METHODS = ("intrinsic", "random", "paths", "history", "counterfactual")
K = 10


def importance_function(method: str) -> Optional[Callable]:
    """The importance function of ``method`` (``None`` for ``random``); :class:`ValueError`
    for an unknown or unavailable method."""
    if method == "random":
        return None
    if method not in IMPORTANCE_FUNCTIONS:
        raise ValueError(f"unknown faithfulness method {method!r}; choose one of: "
                         f"{', '.join(['random', *IMPORTANCE_FUNCTIONS])}")
    EXPLAINERS[method].load()  # unavailable: an error now, not in the middle of the benchmark
    return EXPLAINERS[method].importances


def _lightgcn_rescore(model, train: sp.csr_matrix, users: np.ndarray, histories: sp.csr_matrix) -> torch.Tensor:
    from ..graph import scores_with_histories

    emb0 = torch.cat([model.user_emb.weight, model.item_emb.weight], 0).detach()
    return scores_with_histories(emb0, train, model.n_layers, model.alphas, users, histories)


def rescore(run, users: np.ndarray, histories: sp.csr_matrix) -> torch.Tensor:
    """Scores ``(len(users), n_items)`` of ``users`` when their inputs are ``histories``
    (rows of a binary ``(len(users), n_items)`` matrix), without retraining (module docstring)."""
    model = run.model
    if can(model, RESCORE):
        return model.score_histories(histories, users=torch.as_tensor(np.asarray(users), dtype=torch.long))
    if can(model, GRAPH):
        return _lightgcn_rescore(model, run.matrices["train"], np.asarray(users), histories)
    raise ValueError(f"a {run.config.get('model')} model's scores do not depend on the user's history at inference, "
                     "so removing history items is undefined; faithfulness supports resolved, vae, nmf and lightgcn runs")


def _top_masked(scores: torch.Tensor, train_rows: sp.csr_matrix, k: int = K) -> np.ndarray:
    s = scores.detach().float().cpu().clone()
    coo = train_rows.tocoo()
    s[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))] = -float("inf")
    return torch.topk(s, k, dim=1).indices.numpy()


def _kept(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per row, the share of ``before``'s items still in ``after`` (both ``(n, k)``)."""
    return np.array([np.isin(a, b).mean() for a, b in zip(after, before)])


def _recall(top: np.ndarray, test_rows: sp.csr_matrix) -> np.ndarray:
    """Per row, Recall of the ranked items ``top`` ``(n, k)`` against row ``r`` of ``test_rows``."""
    out = np.zeros(len(top))
    for r in range(len(top)):
        tests = test_rows[r].indices
        out[r] = np.isin(top[r], tests).sum() / max(1, len(tests))
    return out


def _users_progress(n: int, desc: str, progress: bool):
    """``range(n)``, with a tqdm bar when ``progress``."""
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, unit="user")


def history_and_top(run, train: sp.csr_matrix, u: int) -> tuple[np.ndarray, np.ndarray, int]:
    """User ``u``'s training history, their scores through the re-scoring path (float64
    ``(n_items,)``) and the index of their top recommendation (history masked)."""
    hist = train.indices[train.indptr[u]:train.indptr[u + 1]].astype(np.int64)
    with torch.no_grad():
        full = rescore(run, np.array([u]), _rows([hist], run.n_items)).double().cpu().numpy()[0]
    masked = full.copy()
    masked[hist] = -np.inf
    return hist, full, int(np.argmax(masked))


def _rows(indices_list, n_items: int) -> sp.csr_matrix:
    indptr = np.r_[0, np.cumsum([len(x) for x in indices_list])]
    idx = np.concatenate([np.asarray(x, np.int64) for x in indices_list]) if len(indices_list) else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(len(indices_list), n_items))


def evaluate_faithfulness(run, method: str, removes=(1, 2, 5, 10), runs: int = 5, seed: int = 2020,
                          users=None, progress: bool = False) -> dict:
    """The yardstick of the module docstring on the run's test users (or ``users``, indices).

    Returns ``{"method", "k": 10, "runs", "n_test_users", "results": [{"removed": m, "shift":
    mean, "std": std, "recall_before": …, "recall_after": …, "n_users": …}, …]}``."""
    removes = sorted({int(m) for m in removes})
    if not removes or removes[0] < 1:
        raise ValueError(f"--remove takes positive counts, got {removes}")
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, got {runs}")
    fn = importance_function(method)
    train, test = run.matrices["train"], run.matrices["test"]
    if users is None:
        users = np.flatnonzero(np.diff(test.indptr) > 0)
    users = np.asarray(users, np.int64)
    hist_len = np.diff(train.indptr)[users]
    users = users[hist_len > 0]
    if len(users) == 0:
        raise ValueError("no test user has both a training history and test items")
    hist = [train[u].indices.copy() for u in users]
    longest = max(len(h) for h in hist)
    too_big = [m for m in removes if m >= longest]
    if too_big:
        raise ValueError(f"--remove {too_big[0]} is not smaller than every test user's history (longest: {longest} "
                         f"items; at least one input must remain)")
    # 1. original recommendations and recall
    from ..evaluate import top_k_items

    model = run.model
    train_rows, test_rows = train[users], test[users]
    with torch.no_grad():
        top, _ = top_k_items(model.score_users, train, K, users)
        # the baseline is the same re-scoring path with nothing removed (for resolved/vae and
        # lightgcn it equals score_users; for nmf it is the NNLS fold-in of the full history)
        base_scores = rescore(run, users, train_rows)
    top_before = _top_masked(base_scores, train_rows)
    rec_before = _recall(top_before, test_rows)
    # 2. importance per user (deterministic methods: once)
    totals = None
    if fn is not None:
        totals = []
        for r in _users_progress(len(users), f"explain ({method})", progress):
            u = int(users[r])
            tot = {int(j): 0.0 for j in hist[r]}
            for t in top[r]:
                imp = fn(run, u, int(t))
                vals = np.array([max(0.0, float(imp.get(int(j), 0.0))) for j in hist[r]])
                s = vals.sum()
                if s > 0:
                    for j, v in zip(hist[r], vals / s):
                        tot[int(j)] += float(v)
            totals.append(tot)
    shifts = {m: [] for m in removes}
    afters = {m: [] for m in removes}
    kept = {m: [] for m in removes}
    n_users = {}
    for run_i in range(runs):
        rng = np.random.default_rng(seed + run_i)
        orders = []
        for r in range(len(users)):
            h = np.sort(hist[r])
            if totals is None:
                orders.append(rng.permutation(h))
            else:
                score = np.array([totals[r][int(j)] for j in h])
                orders.append(h[np.lexsort((h, -score))])
        for m in removes:
            keep = np.array([len(h) > m for h in hist])
            sel = np.flatnonzero(keep)
            n_users[m] = int(len(sel))
            reduced = _rows([orders[r][m:] for r in sel], run.n_items)
            new_scores = rescore(run, users[sel], reduced)
            top_after = _top_masked(new_scores, train_rows[sel])
            after = _recall(top_after, test_rows[sel])
            kept[m].append(float(_kept(top_before[sel], top_after).mean()))
            before = rec_before[sel].mean()
            shifts[m].append(float((before - after.mean()) / before) if before > 0 else 0.0)
            afters[m].append(float(after.mean()))
        if totals is not None and run_i == 0 and runs > 1:
            for m in removes:  # deterministic: every run is the same removal
                shifts[m] = shifts[m] * runs
                afters[m] = afters[m] * runs
                kept[m] = kept[m] * runs
            break
    results = []
    for m in removes:
        sel = np.array([len(h) > m for h in hist])
        results.append({"removed": m, "shift": float(np.mean(shifts[m])), "std": float(np.std(shifts[m])),
                        "recall_before": float(rec_before[sel].mean()), "recall_after": float(np.mean(afters[m])),
                        "n_users": n_users[m], "top10_kept": float(np.mean(kept[m])),
                        "top10_kept_std": float(np.std(kept[m]))})
    return {"method": method, "run": str(run.path), "model": run.config.get("model"), "k": K, "runs": runs,
            "seed": seed, "n_test_users": int(len(users)), "results": results}


def render_text(result: dict) -> str:
    lines = [f"faithfulness of {result['method']} on {result['model']} ({result['n_test_users']} test users, "
             f"Recall@{result['k']}, {result['runs']} runs)",
             f"{'removed':>8} {'shift':>8} {'std':>8} {'recall':>8} {'recall′':>8} {'users':>6} {'top-10 kept':>12}"]
    for r in result["results"]:
        lines.append(f"{r['removed']:>8} {r['shift']:>8.4f} {r['std']:>8.4f} {r['recall_before']:>8.4f} "
                     f"{r['recall_after']:>8.4f} {r['n_users']:>6} {r['top10_kept']:>12.3f}")
    return "\n".join(lines)


def plot_many(results: list[dict], path, title: str = "") -> None:
    """One line per method against the number of removed items: the seed's Figure 5 (``shift``) and,
    where the results have it, the share of the original top 10 still recommended."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_kept = all("top10_kept" in r for res in results for r in res["results"])
    fig = Figure(figsize=(9.6 if with_kept else 5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if with_kept else 1, 1)
    ax2 = fig.add_subplot(1, 2, 2) if with_kept else None
    for res in results:
        xs = [r["removed"] for r in res["results"]]
        line = ax.errorbar(xs, [r["shift"] for r in res["results"]], yerr=[r["std"] for r in res["results"]],
                           marker="o", capsize=3, label=res["method"])
        if ax2 is not None:
            ax2.errorbar(xs, [r["top10_kept"] for r in res["results"]],
                         yerr=[r.get("top10_kept_std", 0.0) for r in res["results"]], marker="o", capsize=3,
                         label=res["method"], color=line.lines[0].get_color())
    ax.set_xlabel("history items removed per user")
    ax.set_ylabel("shift = (recall − recall′) / recall @10")
    ax.set_title(title or f"faithfulness ({results[0].get('model', '')})", fontsize=9)
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend(fontsize=8)
    if ax2 is not None:
        ax2.set_xlabel("history items removed per user")
        ax2.set_ylabel("share of the top 10 still recommended")
        ax2.set_ylim(0, 1.02)
        ax2.set_title("lower = the removed items carried the recommendations", fontsize=9)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(result: dict, path) -> None:
    plot_many([result], path)


# ---------------------------------------------------------------------------------------------- #
# per recommendation: deletion / insertion curves, fidelity, knock-out, flip size
# ---------------------------------------------------------------------------------------------- #
#: metrics of :func:`evaluate_curves`; ``shift`` is the seed's recall shift above (:func:`evaluate_faithfulness`)
CURVE_METRICS = ("deletion", "insertion", "knockout", "fidelity", "flip")
METRICS = (*CURVE_METRICS, "shift")


#: explainers whose explanation is a set (the items with a positive importance), scored by PN/PS
SET_METHODS = ("counterfactual",)


def _order(fn, run, u: int, t: int, hist: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """The user's history, most important first by ``fn`` (``None``: a uniform random permutation;
    ties broken by item index), and the items of positive importance (the explanation set)."""
    h = np.sort(hist)
    if fn is None:
        return rng.permutation(h), h[:0]
    imp = fn(run, int(u), int(t))
    score = np.array([float(imp.get(int(j), 0.0)) for j in h])
    return h[np.lexsort((h, -score))], h[score > 0]


def evaluate_curves(run, method: str, max_remove: int = 10, ks=(1, 10), fidelity_m: Optional[int] = None,
                    flip_max: int = 20,
                    users=None, n_users: Optional[int] = None, seed: int = 2020, progress: bool = False) -> dict:
    """Per-recommendation faithfulness of ``method`` (module docstring of :mod:`whyrec.explain.faithfulness`
    for the re-scoring; ``docs/explanations.md`` for the definitions).

    For each explained user ``u`` (test users with more than ``max_remove`` history items, or ``users``;
    the first ``n_users`` of them) and ``t`` = their top-1 item (training items masked, scored through
    :func:`rescore` with the full history), the explainer orders the history (``order``) and the model
    re-scores, exactly:

    * **deletion**: the history without ``order[:m]``, ``m = 1..max(max_remove, flip_max)`` (at most
      ``|H| − 1``): ``t``'s rank and its score relative to the full-history score ``s₀``; the
      ``deletion_area`` is the mean over ``m = 1..max_remove`` of ``s_m / s₀`` (lower = more faithful);
    * **insertion**: only ``order[:m]`` kept, ``m = 1..max_remove``; ``insertion_area`` the mean of
      ``s_m / s₀`` (higher = more faithful);
    * **fidelity** at ``m = fidelity_m`` (default ``min(5, max_remove)``; PyG's definitions, for ``t``'s score and for the decision
      "``t`` is in the top ``K``"): ``fidelity_plus = (s₀ − s_del) / |s₀|``, ``fidelity_minus =
      (s₀ − s_ins) / |s₀|`` and, per ``K``, ``fidelity_plus@K`` = share of users whose ``t`` leaves the top ``K``
      when the explanation is removed, ``fidelity_minus@K`` = share whose ``t`` is not in the top ``K`` when only
      the explanation is kept;
    * **knockout@K** per ``m``: the share of users whose ``t`` is out of the top ``K`` after ``m`` removals;
    * **flip@K**: per user the fewest removals, in the explainer's order, after which ``t`` is out of the
      top ``K`` (none within ``flip_max``: not flipped); the summary gives the share flipped and the median
      size over the flipped users. For ``counterfactual`` the order starts with its verified set.
    * **PN@K / PS@K** (CountER's probabilities of necessity and sufficiency, for the explainers whose
      explanation is a set ``E_u``, :data:`SET_METHODS`; ``None`` for the others): over the explained items
      with ``∅ ≠ E_u ⊊ H``, ``PN@K`` = the share whose ``t`` leaves the top ``K`` when ``E_u`` is removed,
      ``PS@K`` = the share whose ``t`` stays in the top ``K`` when only ``E_u`` is kept.

    Returns summaries and ``per_user`` rows (``user``, ``item``, ``n_history``, ``deletion_rank``,
    ``deletion_score``, ``insertion_rank``, ``insertion_score``, ``flip``) for paired tests."""
    if fidelity_m is None and isinstance(max_remove, (int, np.integer)) and not isinstance(max_remove, bool):
        fidelity_m = min(5, max_remove)
    for name, v in (("--max-remove", max_remove), ("--fidelity-m", fidelity_m), ("--max-size", flip_max)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"--k takes positive integers, got {ks}")
    if fidelity_m > max_remove:
        raise ValueError(f"--fidelity-m {fidelity_m} is larger than --max-remove {max_remove}")
    fn = importance_function(method)
    train, test = run.matrices["train"], run.matrices["test"]
    if users is None:
        users = np.flatnonzero((np.diff(test.indptr) > 0) & (np.diff(train.indptr) > max_remove))
    users = np.asarray(users, np.int64)
    users = users[np.diff(train.indptr)[users] > max_remove]
    if n_users is not None:
        users = users[: int(n_users)]
    if len(users) == 0:
        raise ValueError(f"no test user has more than --max-remove {max_remove} history items")
    from .counterfactual import ranks

    M, F = int(max_remove), max(int(max_remove), int(flip_max))
    rng = np.random.default_rng(seed)
    rows = []
    for r in _users_progress(len(users), f"curves ({method})", progress):
        u = int(users[r])
        hist, full, t = history_and_top(run, train, u)
        order, eset = _order(fn, run, u, t, hist, rng)
        eset = eset if method in SET_METHODS and 0 < len(eset) < len(hist) else hist[:0]
        n_del = min(F, len(hist) - 1)
        lists = [order[m:] for m in range(1, n_del + 1)] + [order[:m] for m in range(1, M + 1)]
        if len(eset):  # PN/PS: the history without the set, and the set alone
            lists += [np.setdiff1d(hist, eset), eset]
        with torch.no_grad():
            sc = rescore(run, np.full(len(lists), u), _rows(lists, run.n_items)).double().cpu().numpy()
        rk = ranks(sc, t, hist)
        s0 = float(full[t])
        norm = abs(s0) if s0 != 0 else 1.0
        d_rank, d_score = rk[:n_del].tolist(), (sc[:n_del, t] / norm).tolist()
        i_rank, i_score = rk[n_del:n_del + M].tolist(), (sc[n_del:n_del + M, t] / norm).tolist()
        flip = {}
        for k in ks:
            out = np.flatnonzero(np.asarray(d_rank) > k)
            flip[k] = int(out[0]) + 1 if len(out) else None
        rows.append({"user": int(run.user_ids[u]), "item": int(run.item_ids[t]), "n_history": int(len(hist)),
                     "score": s0, "deletion_rank": d_rank, "deletion_score": d_score, "insertion_rank": i_rank,
                     "insertion_score": i_score, "flip": {str(k): v for k, v in flip.items()},
                     "set_size": int(len(eset)) if len(eset) else None,
                     "set_ranks": [int(rk[-2]), int(rk[-1])] if len(eset) else None})  # without E, E alone
    n = len(rows)
    d_score = np.array([x["deletion_score"][:M] for x in rows])
    d_rank = np.array([x["deletion_rank"][:M] for x in rows])
    i_score = np.array([x["insertion_score"] for x in rows])
    i_rank = np.array([x["insertion_rank"] for x in rows])
    del_area, ins_area = d_score.mean(1), i_score.mean(1)
    for x, a, b in zip(rows, del_area, ins_area):
        x["deletion_area"], x["insertion_area"] = float(a), float(b)
    f = fidelity_m - 1
    sgn = np.sign([x["score"] for x in rows])  # (s0 - s) / |s0| = sign(s0) - s / |s0|
    fidelity = {"m": fidelity_m, "fidelity_plus": float(np.mean(sgn - d_score[:, f])),
                "fidelity_minus": float(np.mean(sgn - i_score[:, f]))}
    for k in ks:
        fidelity[f"fidelity_plus@{k}"] = float(np.mean(d_rank[:, f] > k))
        fidelity[f"fidelity_minus@{k}"] = float(np.mean(i_rank[:, f] > k))
    flips = {}
    for k in ks:
        sizes = [x["flip"][str(k)] for x in rows if x["flip"][str(k)] is not None]
        flips[str(k)] = {"flipped": float(len(sizes) / n), "median": float(np.median(sizes)) if sizes else None,
                         "n_flipped": len(sizes)}
    explained = [x for x in rows if x["set_ranks"] is not None]
    pnps = None
    if method in SET_METHODS:
        pnps = {"n_explained": len(explained), "set_size_median":
                float(np.median([x["set_size"] for x in explained])) if explained else None}
        for k in ks:
            pnps[f"PN@{k}"] = float(np.mean([x["set_ranks"][0] > k for x in explained])) if explained else None
            pnps[f"PS@{k}"] = float(np.mean([x["set_ranks"][1] <= k for x in explained])) if explained else None
    return {"method": method, "run": str(run.path or ""), "model": run.config.get("model"),
            "metric": "curves", "pn_ps": pnps, "n_users": n, "max_remove": M, "flip_max": F, "ks": ks, "seed": seed,
            "deletion": {"score": d_score.mean(0).tolist(), "rank_median": np.median(d_rank, 0).tolist(),
                         "area": float(del_area.mean()), "area_std": float(del_area.std())},
            "insertion": {"score": i_score.mean(0).tolist(), "rank_median": np.median(i_rank, 0).tolist(),
                          "area": float(ins_area.mean()), "area_std": float(ins_area.std())},
            "knockout": {str(k): np.mean(d_rank > k, 0).tolist() for k in ks},
            "fidelity": fidelity, "flip": flips, "per_user": rows}


def paired_test(a: dict, b: dict, key: str = "deletion_area") -> dict:
    """Wilcoxon signed-rank test of ``key`` over the users both results explained (``a`` against ``b``,
    typically ``random``): ``{"n", "median_difference", "p_value"}`` (two-sided)."""
    from scipy.stats import wilcoxon

    other = {(x["user"], x["item"]): x[key] for x in b["per_user"]}
    pairs = [(x[key], other[(x["user"], x["item"])]) for x in a["per_user"] if (x["user"], x["item"]) in other]
    if len(pairs) < 2:
        return {"n": len(pairs), "median_difference": None, "p_value": None}
    x, y = np.array(pairs).T
    diff = x - y
    p = float(wilcoxon(x, y).pvalue) if np.any(diff != 0) else 1.0
    return {"n": len(pairs), "median_difference": float(np.median(diff)), "p_value": p}


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render_curves(result: dict) -> str:
    M = result["max_remove"]
    lines = [f"per-recommendation faithfulness of {result['method']} on {result['model']} "
             f"({result['n_users']} users, their top-1 item, up to {M} removals)"]
    metrics = result.get("metrics", CURVE_METRICS)
    if "deletion" in metrics or "insertion" in metrics or "knockout" in metrics:
        head = f"{'m':>4}"
        if "deletion" in metrics:
            head += f" {'del. score':>10} {'del. rank':>9}"
        if "insertion" in metrics:
            head += f" {'ins. score':>10} {'ins. rank':>9}"
        if "knockout" in metrics:
            head += "".join(f" {'out@' + str(k):>7}" for k in result["ks"])
        lines.append(head)
        for m in range(M):
            row = f"{m + 1:>4}"
            if "deletion" in metrics:
                row += f" {result['deletion']['score'][m]:>10.3f} {result['deletion']['rank_median'][m]:>9.0f}"
            if "insertion" in metrics:
                row += f" {result['insertion']['score'][m]:>10.3f} {result['insertion']['rank_median'][m]:>9.0f}"
            if "knockout" in metrics:
                row += "".join(f" {result['knockout'][str(k)][m]:>7.3f}" for k in result["ks"])
            lines.append(row)
    if "deletion" in metrics:
        lines.append(f"deletion area {result['deletion']['area']:.4f} (lower = more faithful)"
                     + (f"; against random: median difference {result['vs_random']['median_difference']:+.4f}, "
                        f"Wilcoxon p = {result['vs_random']['p_value']:.2g} (n = {result['vs_random']['n']})"
                        if result.get("vs_random") and result["vs_random"].get("p_value") is not None else ""))
    if "insertion" in metrics:
        lines.append(f"insertion area {result['insertion']['area']:.4f} (higher = more faithful)")
    if "fidelity" in metrics:
        fd = result["fidelity"]
        lines.append(f"fidelity at m = {fd['m']}: fid+ {fd['fidelity_plus']:.4f}  fid- {fd['fidelity_minus']:.4f}  "
                     + "  ".join(f"fid+@{k} {fd[f'fidelity_plus@{k}']:.3f} fid-@{k} {fd[f'fidelity_minus@{k}']:.3f}"
                                 for k in result["ks"]))
    if "flip" in metrics:
        parts = []
        for k in result["ks"]:
            f = result["flip"][str(k)]
            med = "-" if f["median"] is None else f"{f['median']:g}"
            parts.append(f"K={k}: {100 * f['flipped']:.1f}% of users within {result['flip_max']}, median {med}")
        lines.append("flip (removals in this order until the item leaves the top K): " + "; ".join(parts))
    if result.get("pn_ps"):
        p = result["pn_ps"]
        lines.append(f"PN/PS of the explanation set ({p['n_explained']} users with a set, median size "
                     f"{p['set_size_median'] if p['set_size_median'] is not None else '-'}): "
                     + "  ".join(f"PN@{k} {_num(p[f'PN@{k}'])} PS@{k} {_num(p[f'PS@{k}'])}" for k in result["ks"]))
    if "shift" in result:
        lines.append(render_text(result["shift"]))
    return "\n".join(lines)


def plot_curves(results: list[dict], path, title: str = "") -> None:
    """Deletion and insertion curves (``t``'s relative score) and the knock-out rate, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 3, i) for i in (1, 2, 3)]
    k_show = results[0]["ks"][0]
    for res in results:
        xs = np.arange(1, res["max_remove"] + 1)
        line = axes[0].plot(xs, res["deletion"]["score"], marker="o",
                            label=f"{res['method']} (area {res['deletion']['area']:.3f})")[0]
        c = line.get_color()
        axes[1].plot(xs, res["insertion"]["score"], marker="o", color=c,
                     label=f"{res['method']} (area {res['insertion']['area']:.3f})")
        axes[2].plot(xs, res["knockout"][str(k_show)], marker="o", color=c, label=res["method"])
    axes[0].set_title("deletion: top m removed (lower = more faithful)", fontsize=9)
    axes[1].set_title("insertion: only the top m kept (higher = more faithful)", fontsize=9)
    axes[2].set_title(f"knock-out: share of top-1 items out of the top {k_show}", fontsize=9)
    for ax in axes[:2]:
        ax.set_ylabel("score of the item / full-history score")
    axes[2].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.set_xlabel("m history items")
        ax.legend(fontsize=7)
    fig.suptitle(title or f"per-recommendation faithfulness ({results[0].get('model', '')}, "
                          f"{results[0]['n_users']} users)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
