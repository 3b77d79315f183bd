"""Top-k recommendations from a loaded run: for a known user, or a new one folded in from liked items."""

from __future__ import annotations

import numpy as np
import torch

from .evaluate import top_k_items
from .run import Run


def _rows(run: Run, items: np.ndarray, scores: np.ndarray) -> list[dict]:
    out = []
    for rank, (i, s) in enumerate(zip(items, scores), start=1):
        if not np.isfinite(s):
            break  # fewer unseen items than k
        i = int(i)
        out.append({
            "rank": rank,
            "item_id": int(run.item_ids[i]),
            "title": run.titles().label(i),
            "genres": run.item_genres[i] if run.item_genres else [],
            "score": float(s),
        })
    return out


def recommend_for_user(run: Run, raw_user: str | int, k: int = 10) -> dict:
    """Top ``k`` items the user has not interacted with (any rating), by the run's model."""
    u = run.user_index(raw_user)
    with torch.no_grad():
        items, scores = top_k_items(run.model.score_users, run.matrices["seen"], k, [u])
    return {"user": int(run.user_ids[u]), "k": k, "recommendations": _rows(run, items[0], scores[0])}


def top_item(run: Run, user_idx: int) -> int:
    """Index of what ``whyrec recommend`` lists first for a user (every rated item masked)."""
    with torch.no_grad():
        items, _ = top_k_items(run.model.score_users, run.matrices["seen"], 1, [int(user_idx)])
    return int(items[0, 0])


def resolve_items(run: Run, liked: list[str]) -> list[int]:
    """Item indices of ``liked`` (titles or raw ids), in order, without duplicates."""
    index = run.titles()
    found = [index.resolve(q) for q in liked]
    return list(dict.fromkeys(found))


def recommend_for_new_user(run: Run, liked: list[str], k: int = 10) -> dict:
    """Fold a new user into a trained LightGCN from the items they like (seed 003's "Charlie").

    The user's embedding is computed by the model's own propagation rule
    (:meth:`whyrec.models.LightGCN.fold_in`), no retraining; the liked items are excluded.
    """
    if not hasattr(run.model, "fold_in"):
        raise ValueError(f"a new user can be folded in only into a LightGCN run; this run is {run.config['model']}")
    items = resolve_items(run, liked)
    with torch.no_grad():
        vec = run.model.fold_in(torch.tensor(items))
        scores = run.model.score_vectors(vec.unsqueeze(0))
    scores[0, items] = -torch.inf
    top = torch.topk(scores[0], min(k, run.n_items))
    return {
        "liked": [run.titles().label(i) for i in items],
        "liked_ids": [int(run.item_ids[i]) for i in items],
        "k": k,
        "recommendations": _rows(run, top.indices.numpy(), top.values.numpy()),
    }
