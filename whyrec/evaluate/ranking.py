"""Full-ranking top-K metrics for implicit-feedback recommendation.

Protocol (the one of the LightGCN authors' code): every evaluated user is
scored against **all** items, the user's training items are masked to
``-inf``, the top ``max(ks)`` items are taken with :func:`torch.topk` and
compared with the user's test items.

Notation for one user ``u``: ``T_u`` is the set of test items, ``r_i`` is 1
when the item at 0-based rank ``i`` of the top list is in ``T_u`` (0
otherwise), and ``h_K = sum_{i<K} r_i`` is the number of hits in the top K.

* ``recall@K    = h_K / |T_u|``
* ``precision@K = h_K / K``
* ``ndcg@K      = DCG_K / IDCG_K`` with ``DCG_K = sum_{i<K} r_i / log2(i + 2)``
  and ``IDCG_K = sum_{i < min(K, |T_u|)} 1 / log2(i + 2)``
* ``hit_rate@K  = 1 if h_K > 0 else 0``
* ``mrr@K       = 1 / (f + 1)`` where ``f`` is the 0-based rank of the first
  hit if ``f < K``, else 0
* ``coverage@K`` = (number of distinct items appearing in at least one
  evaluated user's top K) / ``n_items`` -- a catalogue-level number, not an
  average.

Averages are over evaluated users: users with at least one test item
(intersected with ``users`` when given). Users without training items are
evaluated normally (nothing is masked). Positions of the top list whose score
is ``-inf`` (only possible when a user has fewer than K unmasked items, or the
scorer itself returns ``-inf``) are never counted as hits nor as covered.

Everything is batched over users; with a callable scorer only a
``(batch_size, n_items)`` block of scores exists at any time.
"""

from __future__ import annotations

import numbers
from typing import Callable, Iterator, Union

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["evaluate_ranking", "per_user_metrics", "top_k_items", "METRIC_NAMES"]

#: Per-user metric names (each is reported as ``f"{name}@{K}"``).
METRIC_NAMES = ("recall", "precision", "ndcg", "hit_rate", "mrr")

ScoresLike = Union[np.ndarray, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


# --------------------------------------------------------------------------- #
# input handling
# --------------------------------------------------------------------------- #
def _as_csr(m, name: str) -> sp.csr_matrix:
    """Return ``m`` as a canonical CSR matrix (sorted indices, no duplicates,
    no explicit zeros); copies only when needed."""
    if not sp.issparse(m):
        raise ValueError(f"{name} must be a scipy.sparse matrix (CSR), got {type(m).__name__}")
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {m.shape}")
    csr = m.tocsr()
    if not csr.has_canonical_format or (csr.data.size and not np.all(csr.data)):
        csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
    return csr


def _check_ks(ks, n_items: int) -> tuple[int, ...]:
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks must be a positive int or a sequence of positive ints, got {ks!r}") from None
    if not ks:
        raise ValueError("ks must not be empty")
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
            raise ValueError(f"every K in ks must be a positive int, got {k!r}")
        if k > n_items:
            raise ValueError(f"K={int(k)} is larger than the number of items ({n_items})")
        out.append(int(k))
    return tuple(sorted(set(out)))


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _check_users(users, n_users: int) -> np.ndarray:
    arr = np.asarray(users.cpu() if isinstance(users, torch.Tensor) else users)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"users must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"users must hold integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_users):
        raise ValueError(f"user ids must lie in [0, {n_users}), got range [{arr.min()}, {arr.max()}]")
    return arr


class _Scorer:
    """Uniform ``(user_idx) -> fresh float tensor (b, n_items)`` access."""

    def __init__(self, scores: ScoresLike, n_users: int, n_items: int, device):
        self.device = torch.device(device) if device is not None else None
        self.n_items = n_items
        if callable(scores) and not isinstance(scores, (np.ndarray, torch.Tensor)):
            self.fn = scores
            self.matrix = None
            self.idx_device = self.device or torch.device("cpu")
        else:
            if isinstance(scores, np.ndarray):
                mat = torch.from_numpy(scores)
            elif isinstance(scores, torch.Tensor):
                mat = scores.detach()
            elif sp.issparse(scores):
                raise ValueError("scores must be dense (numpy array / torch tensor) or a callable, "
                                 "not a scipy.sparse matrix")
            else:
                try:
                    mat = torch.as_tensor(np.asarray(scores))
                except Exception:  # pragma: no cover - exotic inputs
                    raise ValueError(f"cannot interpret scores of type {type(scores).__name__}") from None
            if mat.ndim != 2 or tuple(mat.shape) != (n_users, n_items):
                raise ValueError(f"scores has shape {tuple(mat.shape)} but train/test have shape "
                                 f"{(n_users, n_items)}")
            self.fn = None
            self.matrix = mat
            self.idx_device = mat.device

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        u = torch.from_numpy(users).to(self.idx_device)
        if self.fn is not None:
            s = self.fn(u)
            if not isinstance(s, torch.Tensor):
                s = torch.as_tensor(np.asarray(s))
            if s.ndim != 2 or tuple(s.shape) != (len(users), self.n_items):
                raise ValueError(f"score function returned shape {tuple(s.shape)} for {len(users)} "
                                 f"users; expected {(len(users), self.n_items)}")
            # we write -inf into the block: never modify a view of caller-owned memory
            s = s.detach().clone() if s._is_view() else s.detach()
        else:
            s = self.matrix.index_select(0, u)  # always a fresh copy
        if self.device is not None and s.device != self.device:
            s = s.to(self.device)
        if not s.is_floating_point():
            s = s.to(torch.float32)
        return s


def _rows(csr: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row position in batch, column, row counts) of ``csr[users]`` (C-level slicing)."""
    sub = csr[users]
    counts = np.diff(sub.indptr)
    rows = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    return rows, sub.indices.astype(np.int64, copy=False), counts


def _iter_topk(scorer: _Scorer, train: sp.csr_matrix | None, users: np.ndarray, k: int,
               batch_size: int, progress: bool, desc: str
               ) -> Iterator[tuple[slice, np.ndarray, torch.Tensor, torch.Tensor]]:
    """Yield ``(slice into users, batch users, top-k values, top-k indices)``."""
    starts = range(0, len(users), batch_size)
    if progress:
        try:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=desc, unit="batch")
        except ImportError:  # pragma: no cover
            pass
    with torch.no_grad():
        for start in starts:
            sl = slice(start, min(start + batch_size, len(users)))
            bu = users[sl]
            s = scorer(bu)
            if train is not None:
                r, c, _ = _rows(train, bu)
                if r.size:
                    if s.device.type == "cpu" and s.dtype in (torch.float32, torch.float64):
                        # numpy fancy assignment: single-threaded, no OpenMP
                        # start-up cost (which dominates on a busy machine)
                        s.numpy()[r, c] = -np.inf
                    else:
                        s[torch.from_numpy(r).to(s.device), torch.from_numpy(c).to(s.device)] = float("-inf")
            vals, idx = torch.topk(s, k, dim=1, largest=True, sorted=True)
            del s
            yield sl, bu, vals, idx


# --------------------------------------------------------------------------- #
# core
# --------------------------------------------------------------------------- #
def _compute(scores, train, test, ks, batch_size, users, device, progress):
    train = _as_csr(train, "train")
    test = _as_csr(test, "test")
    if train.shape != test.shape:
        raise ValueError(f"train has shape {train.shape} but test has shape {test.shape}")
    n_users, n_items = train.shape
    ks = _check_ks(ks, n_items)
    batch_size = _check_batch_size(batch_size)
    scorer = _Scorer(scores, n_users, n_items, device)

    n_test_all = np.diff(test.indptr)
    if users is None:
        ev = np.flatnonzero(n_test_all > 0).astype(np.int64)
    else:
        ev = np.unique(_check_users(users, n_users))
        ev = ev[n_test_all[ev] > 0]

    kmax = max(ks)
    n = len(ev)
    out = {f"{m}@{k}": np.zeros(n, dtype=np.float64) for k in ks for m in METRIC_NAMES}
    covered = {k: np.zeros(n_items, dtype=bool) for k in ks}
    disc = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))  # 1/log2(i+2), i = 0-based rank
    idcg_table = np.cumsum(disc)  # idcg_table[m-1] = IDCG with m relevant items

    # The (b, max K) post-processing is done in numpy: tiny arrays, where
    # torch's per-op parallel overhead would dominate.
    for sl, bu, vals, idx in _iter_topk(scorer, train, ev, kmax, batch_size, progress, "evaluate"):
        idx = idx.cpu().numpy()
        valid = vals.cpu().float().numpy() > -np.inf  # -inf (masked) / NaN: not recommendations
        b = len(bu)
        # hits: is (row, idx[row, j]) among the batch's test pairs?  The keys
        # row * n_items + col are sorted (canonical CSR rows), so searchsorted.
        r, c, cnt = _rows(test, bu)
        keys = r * n_items + c
        q = np.arange(b, dtype=np.int64)[:, None] * n_items + idx
        pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        hits = (keys[pos] == q) & valid
        cum_hits = np.cumsum(hits, axis=1, dtype=np.float64)
        dcg_cum = np.cumsum(hits * disc, axis=1)
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), kmax)  # 0-based rank of 1st hit
        for k in ks:
            h = cum_hits[:, k - 1]
            out[f"recall@{k}"][sl] = h / cnt
            out[f"precision@{k}"][sl] = h / k
            out[f"ndcg@{k}"][sl] = dcg_cum[:, k - 1] / idcg_table[np.minimum(cnt, k) - 1]
            out[f"hit_rate@{k}"][sl] = h > 0
            out[f"mrr@{k}"][sl] = np.where(first < k, 1.0 / (first + 1), 0.0)
            covered[k][idx[:, :k][valid[:, :k]]] = True

    out["users"] = ev
    out["n_test"] = n_test_all[ev].astype(np.int64)
    return out, covered, ks


def per_user_metrics(scores: ScoresLike, train: sp.csr_matrix, test: sp.csr_matrix, ks=(20,), *,
                     batch_size: int = 1024, users=None, device=None,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Per-user full-ranking metrics.

    Args:
        scores: dense ``(n_users, n_items)`` numpy array / torch tensor, or a
            callable ``f(user_idx: LongTensor (b,)) -> Tensor (b, n_items)``
            (any device; called under ``torch.no_grad()``). The callable may
            return a fresh tensor that is then modified in place (masking);
            views are cloned first.
        train: binary CSR ``(n_users, n_items)``; these items are masked
            (score ``-inf``) before ranking.
        test: binary CSR ``(n_users, n_items)``; the relevant items.
        ks: one or several cut-offs K (positive ints, ``K <= n_items``).
        batch_size: users scored per block (memory ~ ``batch_size * n_items``).
        users: optional subset of user ids; evaluated users are
            ``unique(users)`` with at least one test item.
        device: device on which masking and top-k run (default: the scores'
            device).
        progress: show a tqdm progress bar.

    Returns:
        dict with ``"users"`` (``(n,)`` int64, sorted evaluated user ids),
        ``"n_test"`` (``(n,)`` int64, ``|T_u|``) and, for every K,
        ``"recall@K"``, ``"precision@K"``, ``"ndcg@K"``, ``"hit_rate@K"``,
        ``"mrr@K"`` as ``(n,)`` float64 arrays aligned with ``"users"``
        (formulas in the module docstring). Coverage is catalogue-level and
        only returned by :func:`evaluate_ranking`.
    """
    out, _, _ = _compute(scores, train, test, ks, batch_size, users, device, progress)
    return out


def _evaluated_users(train, test, users) -> np.ndarray:
    """The users :func:`_compute` evaluates (sorted, unique, with a test item)."""
    test = _as_csr(test, "test")
    n_test = np.diff(test.indptr)
    if users is None:
        return np.flatnonzero(n_test > 0).astype(np.int64)
    ev = np.unique(_check_users(users, test.shape[0]))
    return ev[n_test[ev] > 0]


def evaluate_ranking(scores: ScoresLike, train: sp.csr_matrix, test: sp.csr_matrix, ks=(20,), *,
                     batch_size: int = 1024, users=None, device=None,
                     progress: bool = False, strategy=None) -> dict[str, float]:
    """Mean full-ranking metrics over evaluated users.

    Same inputs as :func:`per_user_metrics`. Returns a dict of floats with,
    for every K in ``ks``: ``"recall@K"``, ``"precision@K"``, ``"ndcg@K"``,
    ``"hit_rate@K"``, ``"mrr@K"`` (means over evaluated users; 0.0 when there
    are none) and ``"coverage@K"`` (fraction of the ``n_items`` catalogue in at
    least one evaluated user's top K), plus ``"n_users"`` (number evaluated).

    With ``h_K`` hits among the top K, ``r_i`` the relevance of 0-based rank
    ``i`` and ``T_u`` the test items::

        recall@K    = h_K / |T_u|
        precision@K = h_K / K
        ndcg@K      = sum_{i<K} r_i / log2(i+2)  /  sum_{i<min(K,|T_u|)} 1 / log2(i+2)
        hit_rate@K  = [h_K > 0]
        mrr@K       = 1 / (first hit rank, 1-based) if within top K else 0

    ``strategy``: under torchrun, :class:`whyrec.train.distributed.DataParallel` (called on every
    rank): each rank scores a contiguous share of the evaluated users, and the per-metric sums, the
    user count and the covered items are summed over the ranks, so every rank returns the metrics of
    one process (to float rounding of the sums).
    """
    sharded = strategy is not None and strategy.world > 1
    if sharded:
        ev = _evaluated_users(train, test, users)
        lo, hi = strategy.share(0, len(ev))
        users = ev[lo:hi]
    per_user, covered, ks = _compute(scores, train, test, ks, batch_size, users, device, progress)
    names = [f"{m}@{k}" for k in ks for m in METRIC_NAMES]
    hit = np.stack([covered[k] for k in ks]).astype(np.float64)
    if sharded:
        sums = np.array([per_user[key].sum() for key in names] + [len(per_user["users"])], dtype=np.float64)
        sums, hit = strategy.sum(sums), strategy.sum(hit)
        n = int(round(sums[-1]))
        res: dict[str, float] = {key: float(sums[j] / n) if n else 0.0 for j, key in enumerate(names)}
    else:  # one process: the means (numpy's pairwise sums), exactly as ever
        n = len(per_user["users"])
        res = {key: float(per_user[key].mean()) if n else 0.0 for key in names}
    n_items = hit.shape[1]
    for j, k in enumerate(ks):
        res[f"coverage@{k}"] = float((hit[j] > 0).sum()) / n_items
    res = {key: res[key] for k in ks for key in [f"{m}@{k}" for m in METRIC_NAMES] + [f"coverage@{k}"]}
    res["n_users"] = n
    return res


def top_k_items(scores: ScoresLike, train: sp.csr_matrix | None, k: int, users, *,
                batch_size: int = 1024, exclude_train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k recommendations for the given users.

    Args:
        scores: dense ``(n_users, n_items)`` array/tensor or callable scorer
            (see :func:`per_user_metrics`).
        train: CSR ``(n_users, n_items)`` of known interactions, masked when
            ``exclude_train`` (may be ``None`` when ``exclude_train=False`` and
            ``scores`` is dense).
        k: number of items per user (``1 <= k <= n_items``).
        users: user ids, any order, duplicates allowed (output follows it).
        batch_size: users scored per block.
        exclude_train: mask training items to ``-inf`` before ranking.

    Returns:
        ``(items, item_scores)``: int64 ``(len(users), k)`` item ids and
        ``(len(users), k)`` scores (dtype of the scorer), sorted by descending
        score. If a user has fewer than ``k`` unmasked items the tail holds
        masked items with score ``-inf``.
    """
    if train is not None:
        train = _as_csr(train, "train")
        n_users, n_items = train.shape
    elif exclude_train:
        raise ValueError("train is required when exclude_train=True")
    elif isinstance(scores, (np.ndarray, torch.Tensor)) and scores.ndim == 2:
        n_users, n_items = scores.shape
    else:
        raise ValueError("train is required to know (n_users, n_items) with a callable scorer")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a single positive int, got {k!r}")
    (k,) = _check_ks(k, n_items)
    batch_size = _check_batch_size(batch_size)
    users = _check_users(users, n_users)
    scorer = _Scorer(scores, n_users, n_items, None)
    items = np.empty((len(users), k), dtype=np.int64)
    vals_out = None
    mask = train if exclude_train else None
    for sl, _, vals, idx in _iter_topk(scorer, mask, users, k, batch_size, False, "top-k"):
        v = vals.cpu().numpy()
        if vals_out is None:
            vals_out = np.empty((len(users), k), dtype=v.dtype)
        items[sl] = idx.cpu().numpy()
        vals_out[sl] = v
    if vals_out is None:
        vals_out = np.empty((0, k), dtype=np.float32)
    return items, vals_out
