"""Top-k recommendations from a loaded run: for a known user, or a new one folded in from liked items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .models.base import EXACT_HISTORY, FOLD_IN, NEW_ROW, can
from .evaluate import top_k_items
from .run import Run


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: ``item`` (raw id), ``title``, ``score``, ``rank`` (1-based), ``genres``
    and, for a new user of a graph filter, ``because`` (each liked item's exact contribution)."""

    rank: int
    item: int
    title: str
    score: float
    genres: tuple = ()
    because: tuple = ()


class Recommendations(list):
    """The :class:`Recommendation` s of one request, in rank order; ``to_dict()`` is the JSON that
    ``whyrec recommend --json`` and the HTTP API print."""

    def __init__(self, result: dict):
        super().__init__(Recommendation(r["rank"], r["item_id"], r["title"], r["score"], tuple(r.get("genres") or ()),
                                        tuple(r.get("because") or ())) for r in result["recommendations"])
        self.result = result

    def to_dict(self) -> dict:
        return dict(self.result)


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


def recommend_for_user(run: Run, raw_user: str | int, k: int = 10, index=None) -> dict:
    """Top ``k`` items the user has not interacted with (any rating), by the run's model; with an
    ``index`` (:func:`whyrec.serve.index.item_index`, ``--index faiss``) searched there instead of
    scoring every item."""
    u = run.user_index(raw_user)
    with torch.no_grad():
        if index is not None:
            users, _ = run.model.embeddings()
            seen = run.matrices["seen"]
            found, values = index.search(users[u].detach().float().cpu().numpy(), k,
                                         [seen.indices[seen.indptr[u]:seen.indptr[u + 1]]])
            return {"user": int(run.user_ids[u]), "k": k, "recommendations": _rows(run, found[0], values[0])}
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


def supports_new_users(model) -> bool:
    """Whether a new user can be scored without retraining: folded into a LightGCN-type model
    (``fold_in``), or scored exactly as a new interaction row by a graph filter (``score_items``)."""
    return can(model, FOLD_IN) or can(model, NEW_ROW)


def recommend_for_new_user(run: Run, liked: list[str], k: int = 10, index=None) -> dict:
    """Recommendations for a new user from the items they like (seed 003's "Charlie"), no retraining.

    LightGCN-type runs fold the user in by the model's own propagation rule
    (:meth:`whyrec.models.LightGCN.fold_in`). Graph filters (:class:`whyrec.models.spectral.
    LinearFilter`) score the liked items as a new interaction row, exactly, and each
    recommendation carries ``because``: every liked item's exact contribution to its score
    (they sum to the score). The liked items themselves are excluded. With an ``index``
    (``--index faiss``) a folded-in user's vector is searched there instead of scoring every item.
    """
    model = run.model
    if not supports_new_users(model):
        raise ValueError("a new user can be folded in only into a LightGCN run, or scored as a new row by a graph "
                         f"filter (gf-cf, bspm, cheby-cf); this run is {run.config['model']}")
    items = resolve_items(run, liked)
    with torch.no_grad():
        if index is not None and not can(model, NEW_ROW):
            vector = model.fold_in(torch.tensor(items)).detach().float().cpu().numpy()
            found, values = index.search(vector, k, [np.asarray(items, np.int64)])
            top = torch.return_types.topk((torch.from_numpy(values[0]), torch.from_numpy(found[0])))
        else:
            if can(model, NEW_ROW):
                scores = model.score_items(items).clone()
            else:
                scores = model.score_vectors(model.fold_in(torch.tensor(items)).unsqueeze(0))[0]
            scores[items] = -torch.inf
            top = torch.topk(scores, min(k, run.n_items))
    rows = _rows(run, top.indices.numpy(), top.values.numpy())
    if can(model, EXACT_HISTORY) and rows:
        contrib = model.history_contributions(items, top.indices[: len(rows)].numpy())  # (|L|, R)
        for r, row in enumerate(rows):
            order = torch.argsort(contrib[:, r], descending=True).tolist()
            row["because"] = [{"item_id": int(run.item_ids[items[j]]), "title": run.titles().label(items[j]),
                               "contribution": float(contrib[j, r])} for j in order]
    return {
        "liked": [run.titles().label(i) for i in items],
        "liked_ids": [int(run.item_ids[i]) for i in items],
        "k": k,
        "recommendations": rows,
    }
