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

Explainers plug in through :data:`IMPORTANCE_FUNCTIONS`: a name -> ``"module:function"``
whose function has the signature::

    importances(run, user_idx: int, item_idx: int) -> dict[int, float]

(``run``: :class:`whyrec.run.Run`; keys are the user's history item *indices*, values any
real importance, larger = more important; items left out count as 0). ``history`` points at
``whyrec.explain.history:importances`` (Integrated Gradients over graph edges); adding a
method is one line here.

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

import importlib
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["IMPORTANCE_FUNCTIONS", "importance_function", "rescore", "evaluate_faithfulness",
           "render_text", "plot", "plot_many", "METHODS"]

#: explainer name -> "module:function" with ``importances(run, user_idx, item_idx) -> {j: score}``
IMPORTANCE_FUNCTIONS: dict[str, str] = {
    "intrinsic": "whyrec.explain.intrinsic:importances",
    "paths": "whyrec.explain.paths:importances",
    "history": "whyrec.explain.history:importances",
}
METHODS = ("intrinsic", "random", "paths", "history")
K = 10


def importance_function(method: str) -> Optional[Callable]:
    """The importance function of ``method`` (``None`` for ``random``); :class:`ValueError`
    for an unknown or unavailable method."""
    if method == "random":
        return None
    if method not in IMPORTANCE_FUNCTIONS:
        raise ValueError(f"unknown faithfulness method {method!r}; choose one of: "
                         f"{', '.join(['random', *IMPORTANCE_FUNCTIONS])}")
    mod_name, fn_name = IMPORTANCE_FUNCTIONS[method].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as err:
        if err.name == mod_name:
            raise ValueError(f"faithfulness method {method!r} is not available in this version of whyrec") from None
        raise
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise ValueError(f"faithfulness method {method!r}: {mod_name} has no {fn_name}(run, user, item)")
    return fn


def _lightgcn_rescore(model, train: sp.csr_matrix, users: np.ndarray, histories: sp.csr_matrix) -> torch.Tensor:
    from ..graph import scores_with_histories

    emb0 = torch.cat([model.user_emb.weight, model.item_emb.weight], 0).detach()
    return scores_with_histories(emb0, train, model.n_layers, model.alphas, users, histories)


def rescore(run, users: np.ndarray, histories: sp.csr_matrix) -> torch.Tensor:
    """Scores ``(len(users), n_items)`` of ``users`` when their inputs are ``histories``
    (rows of a binary ``(len(users), n_items)`` matrix), without retraining (module docstring)."""
    model = run.model
    if hasattr(model, "score_histories"):
        return model.score_histories(histories, users=torch.as_tensor(np.asarray(users), dtype=torch.long))
    from ..models.lightgcn import LightGCN

    if isinstance(model, LightGCN):
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
        it = range(len(users))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"explain ({method})", unit="user")
        for r in it:
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
