"""Hyper-parameter selection on the validation split for models fitted in closed form (the graph
filters): every combination of a small grid is scored on the validation users, the best by the
monitored metric is kept, and the whole table is returned so that the run can save it.

The grid is a dict ``{config field: [values]}``; fields the user fixed (``--opt key=value``) are
left out of it by the caller. Combinations are tried in the grid's order (the first of equal
scores wins), so a grid that lists the paper's values first keeps them on ties.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Optional

import numpy as np
import scipy.sparse as sp

from ..evaluate.ranking import evaluate_ranking

__all__ = ["select_config", "validation_users"]


def validation_users(valid: sp.csr_matrix, max_users: Optional[int], seed: int) -> Optional[np.ndarray]:
    """The validation users scored for selection: all with a validation item, or a seeded sample of
    ``max_users`` of them."""
    users = np.flatnonzero(np.diff(valid.tocsr().indptr) > 0)
    if max_users is None or len(users) <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def select_config(model, grid: dict, train: sp.csr_matrix, valid: sp.csr_matrix, *, monitor: str = "recall@20",
                  ks=(20,), max_users: Optional[int] = 5000, seed: int = 0, progress: bool = False) -> dict:
    """Try every combination of ``grid`` on ``model.config`` and keep the best by ``monitor``.

    ``model`` must score through ``model.score_users`` with ``model.config`` (a dataclass) read at
    call time. Returns ``{"best": {field: value}, "score": float, "monitor": …, "n_users": …,
    "table": [{**combination, monitor: score}, …], "seconds": …}``; ``model.config`` is left at
    the best combination."""
    metric, _, cut = monitor.partition("@")
    if not cut.isdigit() or int(cut) not in ks:
        raise ValueError(f"monitor {monitor!r} must be METRIC@K with K among the cut-offs {ks}")
    t0 = time.perf_counter()
    users = validation_users(valid, max_users, seed)
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys))) if keys else [()]
    base = model.config
    table, best, best_score = [], None, -np.inf
    it = combos
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(combos, desc="select", unit="config")
    for combo in it:
        values = dict(zip(keys, combo))
        model.config = replace(base, **values)
        res = evaluate_ranking(model.score_users, train, valid, ks=ks, users=users)
        score = float(res[monitor])
        table.append({**values, monitor: score})
        if score > best_score:
            best, best_score = values, score
    model.config = replace(base, **(best or {}))
    return {"best": best or {}, "score": best_score, "monitor": monitor, "n_users": int(len(users)),
            "table": table, "seconds": time.perf_counter() - t0}
