"""Top-k item search for ``recommend`` and ``serve``: exact, or an approximate inner-product index (FAISS).

``--index exact`` (the default) scores every item: one ``(d,) x (d, n_items)`` product and a top-k.
Its cost grows with the catalogue (tens of milliseconds per request at a million items here).

``--index faiss`` answers from a FAISS IVF-flat index over the run's item vectors with the inner
product as its metric (``IndexIVFFlat(IndexFlatIP, d, nlist, METRIC_INNER_PRODUCT)``, spherical
k-means, ``nlist`` about ``sqrt(n_items)``), built when the run is loaded. A query scans the
``nprobe`` lists whose centroids score highest. The vectors are stored uncompressed, so every
returned score is the model's exact score; only *which* items are returned is approximate. A user's
seen items are never returned: the search runs with an ``IDSelectorNot(IDSelectorBatch(seen))``,
which FAISS applies while it scans the lists (no over-fetching, no crowding out).

``nprobe`` starts at :data:`DEFAULT_NPROBE` and is **tuned on the run at load**: :data:`TUNE_USERS`
of its users (their seen items excluded) are searched exactly and with the index, and ``nprobe`` is
doubled until recall@10 against exact search reaches :data:`TARGET_RECALL` (0.99) on them (or every
list is scanned, which is exact). ``/health`` reports the result. ``benchmarks/bench_ann.py``
measures recall on held-out queries, latency, build time and memory at a million items
(docs/scale.md).

Only models whose scores are dot products of one user and one item vector have such an index
(:func:`whyrec.export.dot_product_embeddings`); asking for one with another model is an error.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

INDEX_KINDS = ("exact", "faiss")
#: lists scanned per query (of about sqrt(n_items)); see the module docstring and docs/scale.md
DEFAULT_NPROBE = 32
#: k-means of the coarse quantizer: iterations, and at most this many sampled training points per list
TRAIN_ITERATIONS = 10
TRAIN_POINTS_PER_LIST = 256
#: at load, nprobe is raised until recall@10 against exact search reaches this on a sample of the run's users
TARGET_RECALL = 0.99
TUNE_USERS = 256


def check_index_kind(kind: str, option: str = "--index") -> str:
    if kind not in INDEX_KINDS:
        raise ValueError(f"{option} must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    return kind


def import_faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError(f"--index faiss needs the faiss-cpu package ({err}); pip install faiss-cpu") from None
    return faiss


class FaissIndex:
    """An IVF-flat inner-product index over ``items`` ``(n_items, d)``; row ``r`` is item index ``r``.

    :meth:`search` returns ``(indices, scores)`` ``(b, k)`` best first, ``-1`` / ``-inf`` where fewer
    than ``k`` items are left once the excluded ones are removed.
    """

    kind = "faiss"

    def __init__(self, items: np.ndarray, *, nlist: Optional[int] = None, nprobe: int = DEFAULT_NPROBE,
                 seed: int = 1234, build_threads: Optional[int] = None):
        faiss = import_faiss()
        x = np.ascontiguousarray(items, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"an index needs a non-empty (n_items, d) matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the item vectors hold non-finite values; no index can be built over them")
        self.n_items, self.dim = x.shape
        self.nlist = int(nlist or default_nlist(self.n_items))
        if not 1 <= self.nlist <= self.n_items:
            raise ValueError(f"nlist must be in 1..{self.n_items} (the number of items), got {self.nlist}")
        self.nprobe = max(1, min(int(nprobe), self.nlist))
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(self.quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.spherical = True  # centroids on the unit sphere: the usual k-means for inner products
        self.index.cp.niter = TRAIN_ITERATIONS
        self.index.cp.seed = int(seed)
        self.index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        self.index.cp.verbose = False
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(int(build_threads or os.cpu_count() or 1))  # building is parallel
        try:
            self.index.train(x)
            self.index.add(x)
        finally:
            faiss.omp_set_num_threads(before)  # serving answers one user at a time
        self._faiss = faiss
        self.tuned: Optional[dict] = None

    def memory_bytes(self) -> int:
        """Bytes of the serialized index (vectors, ids, centroids): about what it holds in memory."""
        return int(self._faiss.serialize_index(self.index).nbytes)

    def search(self, queries: np.ndarray, k: int, exclude: Optional[Sequence[np.ndarray]] = None,
               nprobe: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items by inner product for each query row ``(b, d)``, never an item of
        ``exclude[q]`` (row ``q``'s excluded item indices); ``nprobe``: lists scanned (default the
        index's)."""
        faiss = self._faiss
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        k = int(k)
        probe = max(1, min(int(nprobe or self.nprobe), self.nlist))
        kk = min(k, self.n_items)
        if exclude is None:
            params = faiss.SearchParametersIVF()
            params.nprobe = probe
            scores, idx = self.index.search(q, kk, params=params)
        else:
            if len(exclude) != len(q):
                raise ValueError(f"exclude has {len(exclude)} rows for {len(q)} queries")
            idx = np.full((len(q), kk), -1, np.int64)
            scores = np.full((len(q), kk), -np.inf, np.float32)
            for r, ex in enumerate(exclude):
                ex = np.ascontiguousarray(ex, dtype=np.int64)
                params = faiss.SearchParametersIVF()
                params.nprobe = probe
                if len(ex):
                    batch = faiss.IDSelectorBatch(len(ex), faiss.swig_ptr(ex))
                    sel = faiss.IDSelectorNot(batch)  # skipped while the lists are scanned
                    params.sel = sel
                s, i = self.index.search(q[r:r + 1], kk, params=params)
                idx[r], scores[r] = i[0], s[0]
        scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
        if kk < k:  # fewer items than k: pad like a top-k over the whole catalogue would
            idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        return idx.astype(np.int64), scores


    def tune(self, queries: np.ndarray, exclude: Optional[Sequence[np.ndarray]], exact: np.ndarray,
             target: float = TARGET_RECALL) -> dict:
        """Raise :attr:`nprobe` (doubling from the current value, then bisecting) until recall@k of
        ``queries`` against their ``exact`` top-k ``(b, k)`` (item indices, ``-1`` for none) reaches
        ``target``; returns ``{"nprobe", "recall@k", "tuned_on"}`` (the recall measured on these queries)."""
        k = exact.shape[1]

        def recall_with(nprobe: int) -> float:
            return recall_at_k(self.search(queries, k, exclude, nprobe=nprobe)[0], exact)

        low, high = 0, self.nprobe  # low: known to fall short (0: none known); high: being tried
        recall = recall_with(high)
        while recall < target and high < self.nlist:  # double until the target is reached
            low, high = high, min(2 * high, self.nlist)
            recall = recall_with(high)
        while low and high - low > max(1, high // 8):  # then bisect down to within 1/8
            mid = (low + high) // 2
            r = recall_with(mid)
            if r >= target:
                high, recall = mid, r
            else:
                low = mid
        self.nprobe = high
        self.tuned = {"nprobe": self.nprobe, "nlist": self.nlist, f"recall@{k}": round(recall, 4),
                      "target": target, "tuned_on": len(queries)}
        return self.tuned


def default_nlist(n_items: int) -> int:
    """About ``sqrt(n_items)`` lists, and at least 39 training points per list (FAISS's minimum)."""
    return max(1, min(int(round(np.sqrt(n_items))), n_items // 39))


def exact_search(items: np.ndarray, queries: np.ndarray, k: int,
                 exclude: Optional[Sequence[np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact answer :class:`FaissIndex` approximates (numpy; for tests and benchmarks)."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    s = q @ np.asarray(items, np.float32).T
    if exclude is not None:
        for r, ex in enumerate(exclude):
            s[r, np.asarray(ex, np.int64)] = -np.inf
    kk = min(int(k), s.shape[1])
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
    order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, 1)
    sc = np.take_along_axis(s, idx, 1)
    idx = np.where(np.isfinite(sc), idx, -1)
    return idx.astype(np.int64), sc.astype(np.float32)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-k (ignoring ``-1``) that ``approx`` found."""
    hits, total = 0, 0
    for a, e in zip(approx, exact):
        e = set(int(x) for x in e if x >= 0)
        hits += len(e & set(int(x) for x in a if x >= 0))
        total += len(e)
    return hits / total if total else 1.0


def check_index_fits(run, kind: str) -> None:
    """Refuse (``ValueError``, one line) an index ``kind`` the run cannot have, without building it."""
    check_index_kind(kind)
    if kind == "exact":
        return
    from ..export import why_not_dot

    import_faiss()
    reason = why_not_dot(run)
    if reason is not None:
        raise ValueError(f"--index faiss needs a model whose scores are dot products of user and item vectors: "
                         f"{reason}")


def item_index(run, kind: str, tune_users: int = TUNE_USERS, target: float = TARGET_RECALL, seed: int = 0):
    """The index ``kind`` over ``run``'s item vectors: ``None`` for ``exact`` (the callers' own full
    scoring), a :class:`FaissIndex` for ``faiss`` (the model must score by dot product).

    The index is tuned on the run itself: ``tune_users`` users drawn at random (``seed``), their seen
    items excluded, are searched exactly and ``nprobe`` is raised until recall@10 reaches ``target``
    (:meth:`FaissIndex.tune`; the result is ``index.tuned``, reported by ``/health``)."""
    check_index_fits(run, kind)
    if kind == "exact":
        return None
    from ..export import dot_product_embeddings

    users, items = dot_product_embeddings(run)
    index = FaissIndex(items)
    if tune_users:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(users), min(int(tune_users), len(users)), replace=False))
        seen = run.matrices["seen"]
        exclude = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in sample]
        exact = np.concatenate([exact_search(items, users[sample[lo:lo + 64]], 10, exclude[lo:lo + 64])[0]
                                for lo in range(0, len(sample), 64)])
        index.tune(users[sample], exclude, exact, target)
    return index


__all__ = ["DEFAULT_NPROBE", "FaissIndex", "INDEX_KINDS", "check_index_fits", "check_index_kind", "default_nlist", "exact_search", "item_index",
           "recall_at_k"]
