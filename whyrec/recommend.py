"""Top-k recommendations from a loaded run: for a known user, or a new one folded in from liked items."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .models.base import DOT, EXACT_HISTORY, FOLD_IN, NEW_ROW, RESCORE, can
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


#: models without an embedding space get every user's scores precomputed by :meth:`Run.prepare
#: <whyrec.run.Run.prepare>` up to this many entries (float32: 256 MB); beyond it each request runs the model
PRECOMPUTED_SCORES_LIMIT = 64_000_000


class Prepared:
    """What repeated requests on one frozen run share, computed once (:meth:`whyrec.run.Run.prepare`;
    the service does it at start-up), so that a known user's top ``k`` is one product and a topk.

    ``users`` ``(n_users, d)`` and ``items_t`` ``(d, n_items)``: a :data:`~whyrec.models.base.DOT`
    model's float32 tables, ``score(u, ·) = users[u] @ items_t``; else ``scores`` ``(n_users,
    n_items)``: every user's scores (a VAE re-encoding the user, KGCN, popularity), batched, when
    ``n_users · n_items <= scores_limit``; else neither (each request runs the model). Also the seen
    matrix as int64 ``indptr``/``indices`` (masked to ``-inf`` before the topk), every item's ``(raw
    id, title, genres)`` and the genre profiles asked for so far."""

    def __init__(self, run: Run, scores_limit: int = PRECOMPUTED_SCORES_LIMIT):
        model = run.model
        seen = run.matrices["seen"].tocsr()
        self.indptr = seen.indptr.astype(np.int64)
        self.indices = seen.indices.astype(np.int64)
        self.indices_t = torch.from_numpy(self.indices)
        self.users = self.items_t = self.scores = None
        self.n_items = run.n_items
        # computed on the model's device (``--device``), kept in host memory: a request is one
        # (d,) x (d, n_items) product or a row, a masked topk and a few numpy calls
        with torch.inference_mode():
            if can(model, DOT):
                users, items = model.embeddings()
                self.users = users.detach().to("cpu", torch.float32).clone().contiguous()
                self.items_t = items.detach().to("cpu", torch.float32).T.contiguous()
            elif run.n_users * run.n_items <= scores_limit:
                self.scores = torch.cat([model.score_users(torch.arange(lo, min(lo + 256, run.n_users))).to("cpu", torch.float32)
                                         for lo in range(0, run.n_users, 256)]).contiguous()
        genres = run.item_genres or [[] for _ in range(run.n_items)]
        self.items = [(int(run.item_ids[i]), run.titles().label(i), list(genres[i] or [])) for i in range(run.n_items)]
        self.profiles: dict[int, list] = {}

    def seen(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u]:self.indptr[u + 1]]

    def top(self, u: int, k: int):
        """``(items, scores)`` lists of user ``u``'s top ``k`` unseen items, or ``None`` when nothing
        is precomputed for this model."""
        if self.users is None and self.scores is None:
            return None
        with torch.inference_mode():
            scores = self.users[u] @ self.items_t if self.users is not None else self.scores[u].clone()
            scores.index_fill_(0, self.indices_t[self.indptr[u]:self.indptr[u + 1]], -math.inf)
            values, indices = torch.topk(scores, min(k, self.n_items))
        return indices.tolist(), values.tolist()


def _rows(run: Run, items, scores) -> list[dict]:
    """The ``recommendations`` of a result: ``{"rank", "item_id", "title", "genres", "score"}`` per
    finite score, in order (``items``/``scores``: item indices and their scores, lists or arrays)."""
    prepared = run.prepared
    out = []
    if not isinstance(items, list):  # arrays or tensors: Python ints and floats
        items, scores = np.asarray(items).tolist(), np.asarray(scores).tolist()
    for rank, (i, s) in enumerate(zip(items, scores), start=1):
        if not math.isfinite(s):
            break  # fewer unseen items than k
        if prepared is not None:
            item_id, title, genres = prepared.items[i]
        else:
            item_id, title = int(run.item_ids[i]), run.titles().label(i)
            genres = list(run.item_genres[i] or []) if run.item_genres else []
        out.append({"rank": rank, "item_id": item_id, "title": title, "genres": genres, "score": float(s)})
    return out


def seen_items(run: Run, u: int) -> np.ndarray:
    """Indices of every item user ``u`` interacted with (any rating)."""
    if run.prepared is not None:
        return run.prepared.seen(u)
    seen = run.matrices["seen"]
    return seen.indices[seen.indptr[u]:seen.indptr[u + 1]]


def user_profile(run: Run, u: int) -> list[dict]:
    """:func:`genre_profile` of user ``u``'s seen items (kept per user once the run is prepared)."""
    prepared = run.prepared
    if prepared is None:
        return genre_profile(run, seen_items(run, u))
    prof = prepared.profiles.get(u)
    if prof is None:
        prof = prepared.profiles[u] = genre_profile(run, prepared.seen(u))
    return prof


def recommend_for_user(run: Run, raw_user: str | int, k: int = 10, index=None) -> dict:
    """Top ``k`` items the user has not interacted with (any rating), by the run's model; with an
    ``index`` (:func:`whyrec.serve.index.item_index`, ``--index faiss``) searched there instead of
    scoring every item. ``{"user", "k", "recommendations", "n_seen", "profile"}`` (``n_seen``: the
    items excluded; ``profile``: their genres, :func:`genre_profile`). A prepared run
    (:meth:`whyrec.run.Run.prepare`) answers from its precomputed tables, with the same result."""
    u = run.user_index(raw_user)
    seen, prepared = seen_items(run, u), run.prepared
    found = prepared.top(u, k) if prepared is not None and index is None else None
    if found is None:
        with torch.no_grad():
            if index is not None:
                vector = (prepared.users[u] if prepared is not None and prepared.users is not None
                          else run.model.embeddings()[0][u])
                found, values = index.search(vector.detach().float().cpu().numpy(), k, [seen])
                found = (found[0], values[0])
            else:
                items, scores = top_k_items(run.model.score_users, run.matrices["seen"], k, [u])
                found = (items[0], scores[0])
    return {"user": int(run.user_ids[u]), "k": k, "recommendations": _rows(run, *found), "n_seen": int(len(seen)),
            "profile": user_profile(run, u)}


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
    (``fold_in``), scored exactly as a new interaction row by a graph filter (``score_items``), or
    re-scored from the liked items as a history by a model that re-encodes one (``score_histories``
    with no user: the resolved model, NMF)."""
    return can(model, FOLD_IN) or can(model, NEW_ROW) or can(model, RESCORE)


def recommend_for_new_user(run: Run, liked: list[str], k: int = 10, index=None) -> dict:
    """Recommendations for a new user from the items they like (seed 003's "Charlie"), no retraining.

    LightGCN-type runs fold the user in by the model's own propagation rule
    (:meth:`whyrec.models.LightGCN.fold_in`). Graph filters (:class:`whyrec.models.spectral.
    LinearFilter`) score the liked items as a new interaction row, exactly, and each
    recommendation carries ``because``: every liked item's exact contribution to its score
    (they sum to the score). Models that re-encode a history (the resolved model, its VAE special
    case, NMF: :data:`~whyrec.models.base.RESCORE`) score the liked items as one, with no user term
    of the training set. The liked items themselves are excluded. With an ``index``
    (``--index faiss``) a folded-in user's vector is searched there instead of scoring every item.
    ``{"liked", "liked_ids", "k", "recommendations", "notes", "profile"}`` (``notes``: liked
    entries that resolved to the same item; ``profile``: the liked items' genres).
    """
    model = run.model
    if not supports_new_users(model):
        raise ValueError("a new user can be folded in only into a LightGCN run, scored as a new row by a graph "
                         "filter (gf-cf, bspm, cheby-cf) or re-encoded from a history (resolved, vae, nmf); this run "
                         f"is {run.config['model']}")
    items = resolve_items(run, liked)
    with torch.no_grad():
        if index is not None and can(model, FOLD_IN) and not can(model, NEW_ROW):
            vector = model.fold_in(torch.tensor(items)).detach().float().cpu().numpy()
            found, values = index.search(vector, k, [np.asarray(items, np.int64)])
            values, indices = torch.from_numpy(values[0]), torch.from_numpy(found[0])
        else:
            if can(model, NEW_ROW):
                scores = model.score_items(items).clone()
            elif can(model, FOLD_IN):
                scores = model.score_vectors(model.fold_in(torch.tensor(items)).unsqueeze(0))[0]
            else:  # RESCORE: the liked items as a history, no user of the training set
                row = sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), np.int64), items)),
                                    shape=(1, run.n_items))
                scores = model.score_histories(row, None)[0].float().clone()
            scores[torch.as_tensor(items, device=scores.device)] = -torch.inf
            top = torch.topk(scores, min(k, run.n_items))
            values, indices = top.values.cpu(), top.indices.cpu()  # the model's device -> numpy
    rows = _rows(run, indices.numpy(), values.numpy())
    _add_because(run, items, rows, indices[: len(rows)])
    return {
        "liked": [run.titles().label(i) for i in items],
        "liked_ids": [int(run.item_ids[i]) for i in items],
        "k": k,
        "recommendations": rows,
        "notes": run.titles().duplicates(liked),  # liked entries that name the same item (counted once)
        "profile": genre_profile(run, items),
    }


def _add_because(run: Run, items: list[int], rows: list[dict], targets: torch.Tensor) -> None:
    """``because`` on each new-user recommendation: every liked item's exact term in its score, from
    the model's own decomposition — a graph filter's new row (:meth:`~whyrec.models.spectral.
    LinearFilter.history_contributions`) or a LightGCN fold-in (:meth:`~whyrec.models.LightGCN.
    fold_in_contributions`). Left out where the terms do not sum to the scores (a fold-in whose
    scoring adds more than the propagated items, e.g. side features): nothing rather than something
    wrong."""
    model = run.model
    if not rows:
        return
    with torch.no_grad():
        if can(model, EXACT_HISTORY):
            contrib = model.history_contributions(items, targets.numpy())  # (|L|, R)
        elif can(model, FOLD_IN):
            contrib = model.fold_in_contributions(torch.as_tensor(items), targets).float()
            totals = contrib.sum(0)
            if any(abs(float(totals[r]) - row["score"]) > 1e-3 * (1.0 + abs(row["score"])) for r, row in enumerate(rows)):
                return
        else:
            return
        contrib = contrib.cpu()
    for r, row in enumerate(rows):
            order = torch.argsort(contrib[:, r], descending=True).tolist()
            row["because"] = [{"item_id": int(run.item_ids[items[j]]), "title": run.titles().label(items[j]),
                               "contribution": float(contrib[j, r])} for j in order]


def genre_profile(run: Run, items) -> list[dict]:
    """The genres of ``items`` (indices), most frequent first: ``[{"genre", "count", "share"}]`` with
    ``share = count / len(items)``; empty for a dataset without genres."""
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    if not run.item_genres or items.size == 0:
        return []
    counts: dict[str, int] = {}
    for i in items:
        for g in run.item_genres[int(i)] or ():
            counts[g] = counts.get(g, 0) + 1
    order = sorted(counts, key=lambda g: (-counts[g], g))
    return [{"genre": g, "count": counts[g], "share": counts[g] / items.size} for g in order]


def search_items(run: Run, query: str, limit: int = 10) -> list[dict]:
    """Items whose title matches ``query``, for autocompletion: the item with that raw id first (a
    numeric query), then titles starting with the query, then titles with a word starting with it,
    each group most interacted-with first. ``[{"item_id", "title", "genres", "n_interactions"}]``."""
    from .data.titles import normalize_title

    cached = run._search_index
    if cached is None:
        popularity = np.diff(run.matrices["seen"].tocsc().indptr).astype(np.int64)
        keys = [normalize_title(run.titles().label(i)) for i in range(run.n_items)]
        cached = run._search_index = (keys, np.argsort(-popularity, kind="stable"), popularity)
    keys, by_popularity, popularity = cached
    hits: list[tuple[int, int]] = []  # (group, index)
    query = query.strip()
    if query.isdigit():
        try:
            hits.append((0, run.titles().resolve(query)))
        except KeyError:
            pass
    n = normalize_title(query)
    if n:
        word = " " + n
        for i in by_popularity:
            key = keys[i]
            if key.startswith(n):
                hits.append((1, int(i)))
            elif word in " " + key:
                hits.append((2, int(i)))
    seen, out = set(), []
    for _, i in sorted(hits, key=lambda h: h[0]):  # stable: popularity order within a group
        if i in seen:
            continue
        seen.add(i)
        out.append({"item_id": int(run.item_ids[i]), "title": run.titles().label(i),
                    "genres": run.item_genres[i] if run.item_genres else [], "n_interactions": int(popularity[i])})
        if len(out) >= limit:
            break
    return out
