"""The user-item bipartite graph of LightGCN and its propagation.

Notation (LightGCN paper, He et al. SIGIR 2020, Eq. 6-9): ``R`` is the
``(n_users, n_items)`` binary interaction matrix, ``N = n_users + n_items`` and

.. math::

    A = \\begin{pmatrix} 0 & R \\\\ R^T & 0 \\end{pmatrix},\\qquad
    \\hat A = D^{-1/2} A D^{-1/2},\\qquad
    E^{(k+1)} = \\hat A E^{(k)},\\qquad
    E = \\sum_{k=0}^{K} \\alpha_k E^{(k)},\\ \\alpha_k = \\tfrac{1}{K+1}.

Node ``u`` (``0 <= u < n_users``) is a user, node ``n_users + i`` is item ``i``.
``D`` is the diagonal degree matrix of ``A`` (a user's degree is its number of
training items, an item's its number of training users). Nodes of degree 0
get an all-zero row and column (no division by zero).

Because ``A`` is symmetric, ``\\hat A^T = \\hat A``; :class:`SymmetricSpMM`
exploits it so that the backward of ``\\hat A X`` is one more CSR sparse-dense
product ``\\hat A G`` instead of autograd's generic sparse backward.

The adjacency keeps 32-bit indices (converted once, here, instead of by the CPU
sparse kernel on every product), and every product writes into a fresh
uninitialised output (no zero-fill, no copy). :func:`locality_order` and
:func:`permute_adjacency` renumber the nodes (spectral groups where the graph has communities,
reverse Cuthill-McKee within them) so that a row's neighbours lie close together in memory;
:class:`whyrec.models.LightGCN` trains in that order and maps ids back.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .spmm import addmm as native_addmm
from .spmm import gather_in_order


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel after every
    large free: ``mallopt`` with ``M_MMAP_THRESHOLD`` 32 MiB (its maximum; blocks below it come
    from the heap, not from a fresh ``mmap``), ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD`` 64 MiB.
    A LightGCN step allocates and frees several ``(N, d)`` tensors; with glibc's defaults each
    comes back as fresh zeroed pages (on Gowalla ~7,000-14,000 page faults a step, ~500-1,800
    with this). The cost: the process keeps its peak heap. Blocks of 32 MiB and more still get
    their own ``mmap`` outside :func:`heap_only`. Called once when this module is imported;
    skipped where the C library is not glibc, when ``WHYREC_MALLOC_TUNING=0``, or when the process
    was started with any of glibc's own ``MALLOC_*_`` tunables set. Returns whether it applied."""
    global _MALLOPT, _MALLOC_TRIM
    if os.environ.get("WHYREC_MALLOC_TUNING", "1") == "0" or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                                      "MALLOC_MMAP_MAX_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = all(mallopt(opt, value) == 1 for opt, value in
             ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)))
    if ok:
        _MALLOPT, _MALLOC_TRIM = mallopt, malloc_trim
    return ok


_MALLOPT = _MALLOC_TRIM = None
_M_MMAP_MAX, _GLIBC_MMAP_MAX = -4, 65536  # mallopt's M_MMAP_MAX and glibc's default for it
_HEAP_ONLY_DEPTH = 0
_HEAP_ONLY_LOCK = threading.Lock()


@contextmanager
def heap_only():
    """Within the block, no block of memory gets its own ``mmap`` (``M_MMAP_MAX`` 0): every
    allocation, however large, comes from glibc's heap and what is freed there is reused without
    page faults; on leaving the outermost block, ``mmap`` is allowed again and ``malloc_trim(0)``
    gives the heap's free pages back to the kernel. :class:`whyrec.train.Trainer` runs every
    training epoch in it: at 4M-16M interactions with 13 steps an epoch a step's big tensors (the
    ``(N, d)`` layers and gradients, the ``(batch, d)`` rows, 40-250 MB each) are above the 32 MiB
    mmap threshold, so each came back as fresh zeroed pages, faulted in one by one (a 16M step: 5.6
    → 4.4 s, ``docs/scale.md``). The cost: inside, the heap holds the epoch's peak and can fragment
    (16M: a training process's peak RSS 4.0 → 5.7 GB); the trim at the end returns it. Re-entrant;
    nothing happens where :func:`tune_malloc` did not apply (``MALLOC_TUNED`` false)."""
    global _HEAP_ONLY_DEPTH
    if _MALLOPT is None:
        yield
        return
    with _HEAP_ONLY_LOCK:
        _HEAP_ONLY_DEPTH += 1
        if _HEAP_ONLY_DEPTH == 1:
            _MALLOPT(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _HEAP_ONLY_LOCK:
            _HEAP_ONLY_DEPTH -= 1
            if _HEAP_ONLY_DEPTH == 0:
                _MALLOPT(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
                _MALLOC_TRIM(0)


MALLOC_TUNED = tune_malloc()

__all__ = [
    "tune_malloc",
    "heap_only",
    "normalized_adjacency",
    "AdjacencyCache",
    "cached_normalized_adjacency",
    "graph_key",
    "node_degrees",
    "SymmetricSpMM",
    "sym_spmm",
    "propagate",
    "propagate_final",
    "LightGCNPropagation",
    "LightGCNFinalRows",
    "LARGE_BATCH",
    "covers_graph",
    "propagate_rows",
    "LightGCNRowsPropagation",
    "layer_weights",
    "locality_order",
    "permute_adjacency",
    "LayerZeroInOrder",
    "LightGCNLocalStep",
]


def _binary_csr(train) -> sp.csr_matrix:
    """Canonical binary CSR copy-on-need of ``train`` (sorted, no duplicates,
    no explicit zeros, every stored value 1)."""
    if not sp.issparse(train):
        raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
    csr = train.tocsr()
    if not csr.has_canonical_format or (csr.data.size and not np.all(csr.data == 1)):
        csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.data = np.ones_like(csr.data, dtype=np.float32)
    return csr


def normalized_adjacency(train, *, dtype: torch.dtype = torch.float32,
                         device: Optional[torch.device | str] = None) -> Tensor:
    """Symmetric normalized bipartite adjacency ``Â = D^-1/2 A D^-1/2``.

    Built directly in CSR form (never dense) from the scipy matrix.

    Args:
        train: ``(n_users, n_items)`` scipy sparse binary interaction matrix
            (any stored non-zero counts as one interaction).
        dtype: value dtype of the result (float32 by default).
        device: device of the result (default CPU).

    Returns:
        ``torch.sparse_csr`` tensor of shape ``(N, N)``, ``N = n_users +
        n_items``, int32 indices (int64 past 2^31 entries), with ``Â[u, U+i] = Â[U+i, u] =
        1 / sqrt(d_u d_i)`` for every training pair ``(u, i)`` and zero rows
        for nodes without interactions. Row ``r`` holds exactly ``deg(r)``
        stored entries, so degrees can be read back with :func:`node_degrees`.
    """
    R = _binary_csr(train)
    n_users, n_items = R.shape
    Rt = R.T.tocsr()  # (n_items, n_users), sorted indices
    Rt.sort_indices()
    deg_u = np.diff(R.indptr).astype(np.int64)
    deg_i = np.diff(Rt.indptr).astype(np.int64)
    deg = np.concatenate([deg_u, deg_i]).astype(np.float64)
    dinv = np.zeros_like(deg)
    nz = deg > 0
    dinv[nz] = 1.0 / np.sqrt(deg[nz])

    nnz = R.nnz
    indptr = np.concatenate([R.indptr.astype(np.int64), nnz + Rt.indptr[1:].astype(np.int64)])
    indices = np.concatenate([R.indices.astype(np.int64) + n_users, Rt.indices.astype(np.int64)])
    rows = np.repeat(np.arange(n_users + n_items, dtype=np.int64), np.diff(indptr))
    values = dinv[rows] * dinv[indices]

    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    adj = _csr_tensor(indptr, indices, values.astype(np_dtype), n_users + n_items)
    if device is not None:
        adj = adj.to(device)
    return adj


def _csr_tensor(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n: int) -> Tensor:
    """``(n, n)`` torch CSR from numpy arrays, with int32 indices when they fit (the CPU kernel
    would otherwise convert int64 indices to int32 on every product)."""
    itype = np.int32 if max(int(indptr[-1]), n) < 2**31 else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(torch.from_numpy(indptr.astype(itype, copy=False)),
                                       torch.from_numpy(indices.astype(itype, copy=False)),
                                       torch.from_numpy(values), size=(n, n), check_invariants=False)


GROUP_MIN_EIGENVALUE = 0.7
""":func:`locality_order` groups nodes only when the ``min(16, clusters)``-th largest ``|λ|`` of ``Â`` (its
spectral embedding's weakest direction) is at least this: that many well-separated communities."""


def locality_order(adj: Tensor, *, n_users: Optional[int] = None, clusters: Optional[int] = None,
                   seed: int = 0, min_eigenvalue: float = GROUP_MIN_EIGENVALUE) -> Tensor:
    """A node order for locality, so that a sparse product reads the dense rows in fewer cache misses.

    Reverse Cuthill-McKee of the adjacency's pattern (:func:`scipy.sparse.csgraph.reverse_cuthill_mckee`)
    numbers each row's neighbours close together. On larger graphs the nodes are first grouped into
    ``clusters`` groups — k-means (:class:`sklearn.cluster.MiniBatchKMeans`) of a spectral embedding by
    ``Â²`` (:func:`_spectral_embedding`): users who share items, items that share users — and numbered
    group by group (groups ordered by their mean RCM rank, nodes within a group in RCM order), so that
    the rows one group of users reads stay in cache while they are read. On Gowalla one ``(N, 64)``
    product takes 0.67-0.75 of its time in plain RCM order (``docs/results.md``). Groups are formed only
    where the graph has communities to find: where the embedding's weakest kept direction has ``|λ| ≥``
    :data:`GROUP_MIN_EIGENVALUE` (Gowalla 0.88; a power-law graph drawn without communities,
    ``whyrec.data.synthetic``, 0.29, where grouping gained nothing: 1.00x at two threads, 1.17x slower at
    one); elsewhere the order is plain RCM. With ``n_users`` all users come before all items (a stable
    partition of the order: :class:`LayerZeroInOrder` gathers each side into its half).

    Args:
        adj: ``(N, N)`` symmetric sparse CSR adjacency.
        n_users: nodes ``0 .. n_users - 1`` are users, the rest items; the order numbers all users first
            (``None``: sides not separated).
        clusters: number of groups; ``None`` = ``min(64, N // 1024)``; below 4, plain RCM.
        seed: seed of the subspace iteration's start and of k-means (the order is deterministic).
        min_eigenvalue: the community test's threshold (``0`` groups any graph).

    Returns:
        ``order`` ``(N,)`` int64 on the CPU: new node ``r`` is old node ``order[r]``.
    """
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = adj.shape[0]
    rcm = reverse_cuthill_mckee(_scipy_csr(adj), symmetric_mode=True).astype(np.int64)
    side = np.zeros(n, np.int64) if n_users is None else (np.arange(n) >= n_users).astype(np.int64)
    plain = torch.from_numpy(rcm[np.argsort(side[rcm], kind="stable")])  # RCM, users first
    k = min(64, n // 1024) if clusters is None else int(clusters)
    if k < 4 or n < 2 * k:  # (two groups would be the users and the items: Â²'s two eigenvalues 1)
        return plain
    emb, sigma = _spectral_embedding(adj, min(16, k), seed)
    if sigma[-1] < min_eigenvalue:  # no strong communities: groups would only break up RCM's bands
        return plain
    from sklearn.cluster import MiniBatchKMeans

    labels = MiniBatchKMeans(k, random_state=seed, n_init=1, batch_size=4096).fit_predict(emb).astype(np.int64)
    rank = np.empty(n, np.int64)
    rank[rcm] = np.arange(n)
    mean_rank = np.bincount(labels, rank, minlength=k) / np.maximum(np.bincount(labels, minlength=k), 1)
    cluster_pos = np.argsort(np.argsort(mean_rank, kind="stable"), kind="stable")
    return torch.from_numpy(np.lexsort((rank, cluster_pos[labels], side)).astype(np.int64))


def _spectral_embedding(adj: Tensor, dim: int, seed: int, rounds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A spectral embedding by ``Â²`` and its strength: ``Â²``'s dominant ``dim``-dimensional invariant
    subspace by subspace iteration (``X ← qr(Â Â X)``, 8 vectors more than kept), the Ritz vectors weighted
    by their Ritz values (``(ÂX)ᵀ(ÂX) = W Λ Wᵀ``, embedding ``X W max(Λ, 0)`` over the top ``dim``: the
    dominant directions weigh most), each row scaled to unit length. Returns ``(embedding (N, dim),
    σ (dim,))``, ``σ`` the Ritz values of ``Â²`` square-rooted (estimates of ``|λ|`` of ``Â``), descending.

    ``Â²`` is block diagonal (``R̂R̂ᵀ`` on the users, ``R̂ᵀR̂`` on the items), so its eigenvectors lie on the
    users or on the items (each eigenvalue twice: ``(a, 0)`` and ``(0, b)``, so a Ritz vector may mix the
    two) and a k-means cluster of the embedding holds users who share items, items that share users, or
    both: the rows a product reads together. (Clustering by ``I + Â``, whose eigenvectors spread over users
    and items alike, made Gowalla's product 1.4x slower than plain RCM; by ``Â²``, 0.73-0.77x, and
    0.67-0.75x with the users numbered before the items.)"""
    n = adj.shape[0]
    dim = min(dim, n)
    a = adj.to(torch.float32) if adj.dtype != torch.float32 else adj
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, min(dim + 8, n), generator=gen).to(a.device)
    for _ in range(rounds):
        x = torch.linalg.qr(_spmm(a, _spmm(a, x))).Q
    ax = _spmm(a, x)
    lam, w = torch.linalg.eigh((ax.T @ ax).double())  # ascending
    lam = lam[-dim:].clamp_min(0)
    x = (x.double() @ w[:, -dim:] * lam).cpu().numpy()
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, lam.sqrt().flip(0).cpu().numpy()


def _scipy_csr(adj: Tensor) -> sp.csr_matrix:
    crow, col, val = (t.cpu().numpy() for t in (adj.crow_indices(), adj.col_indices(), adj.values()))
    return sp.csr_matrix((val, col, crow), shape=tuple(adj.shape))


def permute_adjacency(adj: Tensor, order: Tensor) -> Tensor:
    """``P Â Pᵀ`` for the node order ``order`` (new node ``r`` = old node ``order[r]``), sorted
    CSR with int32 indices, on ``adj``'s device: ``permute_adjacency(adj, o)[r, s] = adj[o[r], o[s]]``."""
    o = order.cpu().numpy()
    S = _scipy_csr(adj)[o][:, o].tocsr()
    S.sort_indices()
    return _csr_tensor(S.indptr, S.indices, S.data, S.shape[0]).to(adj.device)


class LayerZeroInOrder(torch.autograd.Function):
    """``cat([user_w, item_w])[order]`` for an order that numbers all users first, without the
    concatenation: each side's rows gathered into its half of one ``(N, d)`` output. The backward is two
    gathers (``g[rank[:U]]``, ``g[rank[U:]]``), no scatter.

    Args (forward): ``user_w (U, d)``, ``item_w (I, d)``, ``order (N,)`` with ``order[:U] < U <= order[U:]``,
    ``rank (N,)`` its inverse (``rank[order] = arange(N)``)."""

    @staticmethod
    def forward(ctx, user_w: Tensor, item_w: Tensor, order: Tensor, rank: Tensor) -> Tensor:  # noqa: D401
        u = user_w.shape[0]
        ctx.rank = rank
        ctx.n_users = u
        out = user_w.new_empty(u + item_w.shape[0], user_w.shape[1])
        torch.index_select(user_w, 0, order[:u], out=out[:u])
        torch.index_select(item_w, 0, order[u:] - u, out=out[u:])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, rank = ctx.n_users, ctx.rank
        return grad.index_select(0, rank[:u]), grad.index_select(0, rank[u:]), None, None


def node_degrees(adj: Tensor) -> Tensor:
    """Degrees of all ``N`` nodes of an adjacency built by
    :func:`normalized_adjacency` (= stored entries per row), int64 ``(N,)``."""
    crow = adj.crow_indices().to(torch.int64)
    return crow[1:] - crow[:-1]


def graph_key(train) -> str:
    """A content hash of a (binary) interaction matrix: shape + indptr + indices."""
    R = _binary_csr(train)
    h = hashlib.sha1()
    h.update(np.asarray(R.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(R.indptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(R.indices, dtype=np.int64).tobytes())
    return h.hexdigest()


class AdjacencyCache:
    """Small LRU cache of normalized adjacencies keyed by the content of the
    training matrix (:func:`graph_key`), dtype and device, so the same split
    is normalized only once per process.

    >>> cache = AdjacencyCache(maxsize=4)
    >>> adj = cache.get(train)          # builds
    >>> adj is cache.get(train.copy())  # same content -> same tensor
    True
    """

    def __init__(self, maxsize: int = 4):
        self.maxsize = int(maxsize)
        self._store: "OrderedDict[tuple, Tensor]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, train, *, dtype: torch.dtype = torch.float32,
            device: Optional[torch.device | str] = None) -> Tensor:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        key = (graph_key(train), dtype, str(dev))
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                self.hits += 1
                return self._store[key]
        adj = normalized_adjacency(train, dtype=dtype, device=dev)
        with self._lock:
            self.misses += 1
            self._store[key] = adj
            self._store.move_to_end(key)
            while len(self._store) > self.maxsize:
                self._store.popitem(last=False)
        return adj

    def clear(self) -> None:
        with self._lock:
            self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


_DEFAULT_CACHE = AdjacencyCache(maxsize=4)


def cached_normalized_adjacency(train, *, dtype: torch.dtype = torch.float32,
                                device: Optional[torch.device | str] = None) -> Tensor:
    """:func:`normalized_adjacency` through a process-wide :class:`AdjacencyCache`."""
    return _DEFAULT_CACHE.get(train, dtype=dtype, device=device)


# --------------------------------------------------------------------------- #
# sparse matmul with the symmetric backward
# --------------------------------------------------------------------------- #
def _spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x``: :func:`whyrec.spmm.addmm` where it applies; else for CSR Torch's ``addmm`` with ``beta = 0``
    into an uninitialised output (``sparse.mm`` zero-fills a result and then copies it)."""
    if (out := native_addmm(adj, x)) is not None:
        return out
    if adj.layout == torch.sparse_csr:
        out = x.new_empty(adj.shape[0], x.shape[1])
        return torch.addmm(out, adj, x, beta=0.0, out=out)
    return adj @ x


class SymmetricSpMM(torch.autograd.Function):
    """``Y = Â X`` for a **symmetric** sparse ``Â`` (no gradient w.r.t. ``Â``).

    Backward: ``dL/dX = Â^T G = Â G`` -- one more CSR sparse x dense product,
    much cheaper than autograd's generic sparse backward. Calling it with a
    non-symmetric matrix gives wrong gradients (the forward is still right).
    """

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # noqa: D401
        ctx.adj = adj
        return _spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        adj = ctx.adj
        gx = _spmm(adj, grad.contiguous()) if ctx.needs_input_grad[1] else None
        return None, gx


def sym_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``Â @ x`` with the symmetric backward when ``x`` requires grad."""
    if x.requires_grad and torch.is_grad_enabled():
        return SymmetricSpMM.apply(adj, x)
    return _spmm(adj, x)


def layer_weights(n_layers: int, alphas: Optional[Sequence[float]] = None) -> list[float]:
    """``[α_0, ..., α_K]``; default ``α_k = 1 / (K + 1)`` (the paper's choice)."""
    if alphas is None:
        return [1.0 / (n_layers + 1)] * (n_layers + 1)
    alphas = [float(a) for a in alphas]
    if len(alphas) != n_layers + 1:
        raise ValueError(f"need n_layers + 1 = {n_layers + 1} layer weights, got {len(alphas)}")
    return alphas


def propagate(adj: Tensor, emb0: Tensor, n_layers: int,
              alphas: Optional[Sequence[float]] = None) -> tuple[Tensor, list[Tensor]]:
    """LightGCN propagation ``E^(k+1) = Â E^(k)``, ``E = Σ_k α_k E^(k)``.

    Args:
        adj: ``(N, N)`` symmetric normalized adjacency (sparse CSR), on the
            device of ``emb0``.
        emb0: ``(N, d)`` layer-0 embeddings (users first, then items).
        n_layers: ``K``.
        alphas: ``K + 1`` layer weights (default ``1/(K+1)`` each).

    Returns:
        ``(E, [E^(0), ..., E^(K)])`` with ``E`` of shape ``(N, d)``.
    """
    a = layer_weights(n_layers, alphas)
    layers = [emb0]
    out = emb0 * a[0]
    x = emb0
    for k in range(n_layers):
        x = sym_spmm(adj, x)
        layers.append(x)
        out = out + x * a[k + 1]
    return out, layers


def _spmm_add(adj: Tensor, x: Tensor, y: Tensor, beta: float, alpha: float = 1.0) -> Tensor:
    """``alpha · Â x + beta · y`` into a new table: :func:`whyrec.spmm.addmm` where it applies (no copy of ``y``),
    else Torch's fused ``addmm`` (which copies ``y`` into its result first)."""
    if (out := native_addmm(adj, x, y, beta, alpha)) is not None:
        return out
    try:
        return torch.addmm(y, adj, x, beta=beta, alpha=alpha)
    except (RuntimeError, NotImplementedError):  # pragma: no cover - backend without sparse addmm
        return _spmm(adj, x).mul_(alpha).add_(y, alpha=beta)


def weighted_sq_norm(table: Tensor, weight: Tensor) -> Tensor:
    """``Σ_n w_n ‖t_n‖²`` of a table ``(N, d)`` and weights ``(N,)``: one pass (the row norms)."""
    return weight @ torch.linalg.vector_norm(table, dim=1).square()


class LightGCNPropagation(torch.autograd.Function):
    """``E = Σ_{k=0..K} α_k Â^k E^(0)`` in one autograd node.

    Forward and backward are the same polynomial of ``Â`` (symmetric): ``E = Σ_k α_k Â^k E^(0)`` and
    ``dL/dE^(0) = Σ_k α_k Â^k G``, both by Horner's rule ``H ← α_K X;  H ← α_k X + Â H  (k = K-1..0)``
    (:func:`_horner`) -- K fused sparse products each way, nothing else with the compiled kernel
    (:mod:`whyrec.spmm`). Saves nothing but ``Â`` for the backward.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, emb0: Tensor, alphas: tuple) -> Tensor:  # noqa: D401
        ctx.adj = adj
        ctx.alphas = alphas
        return _horner(adj, emb0, alphas)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, _horner(ctx.adj, grad.contiguous(), ctx.alphas), None


def _horner(adj: Tensor, g: Tensor, a: tuple, z: Optional[Tensor] = None, z_scale: Optional[Tensor] = None,
            out_rows: Optional[Tensor] = None, bf16: bool = False, g16: Optional[Tensor] = None) -> Tensor:
    """``Σ_k a_k Â^k g`` by Horner's rule, ``K`` fused sparse products (the first, ``a_{K-1} g + a_K Â g``,
    scales by ``a_K`` inside the product: no pass for ``a_K g``). With ``z`` and ``z_scale`` ``(N,)``: plus
    ``z_scale[:, None] · z``; with ``out_rows``: row ``r`` of the result at row ``out_rows[r]`` (a permutation)
    -- both inside the last product where the compiled kernel runs (no pass of their own). ``bf16``: every
    product's ``x`` operand rounded to bfloat16 (``g`` once, each intermediate ``H`` as it is written), the sums
    and ``g``'s terms in float32: the gathers move half the bytes (``g16``: ``g`` in bfloat16 already)."""
    last = len(a) - 2  # the index k of the last product's a_k (the first product's when K = 1)
    if len(a) == 1:
        h = g * a[0]
    else:
        h = (g16 if g16 is not None else g.to(torch.bfloat16)) if bf16 else g
        for k in range(last, -1, -1):
            alpha = a[-1] if k == last else 1.0
            tail = k == 0 and (z is not None or out_rows is not None)
            if tail or bf16:
                dtype = torch.bfloat16 if bf16 and k else torch.float32
                out = native_addmm(adj, h, g, a[k], alpha, z=z if tail else None, z_scale=z_scale if tail else None,
                                   out_rows=out_rows if tail else None, out_dtype=dtype)
                if out is not None:
                    if tail:
                        return out
                    h = out
                    continue
            h = _spmm_add(adj, h.to(g.dtype), g, a[k], alpha=alpha)  # Torch's product (or no extras)
            if bf16 and k:
                h = h.to(torch.bfloat16)
    if z is not None:
        h.addcmul_(z, z_scale.unsqueeze(1))
    if out_rows is not None:
        h = h.new_empty(h.shape).index_copy_(0, out_rows, h)
    return h


class LightGCNLocalStep(torch.autograd.Function):
    """A covering batch's LightGCN propagation in the locality order with its L2 term, in one autograd node:
    :class:`LayerZeroInOrder`, :class:`LightGCNPropagation` and ``Σ_n count_n ‖E⁰_n‖²`` together, so that the
    backward is Horner's rule whose last product also adds the L2 term's gradient ``2 g count_n E⁰_n`` and writes
    each row straight into the parameters' order (``out_rows = order``): no gathers back, no L2 pass, no sum of
    the two gradients (``whyrec.spmm``; Torch's passes where the kernel does not run). The forward's layer-0
    gather, its L2 term and (bfloat16) its rounded copy are one pass (:func:`whyrec.spmm.gather_in_order`).

    Args (forward): ``user_w (U, d)``, ``item_w (I, d)``, ``order`` as :class:`LayerZeroInOrder`, ``adj`` the
    adjacency in that order, ``alphas``, ``count (N,)`` the L2 weight of each row (its occurrences in
    the batch; local order), ``bf16``: the products' ``x`` operands in bfloat16 (:func:`_horner`). Returns
    ``final (N, d)``, ``sq`` (0-d) and ``E⁰ (N, d)`` in the local order (the last for whatever else reads layer-0
    rows; its gradient, if any, is added)."""

    @staticmethod
    def forward(ctx, user_w: Tensor, item_w: Tensor, order: Tensor, adj: Tensor, alphas: tuple, count: Tensor,
                bf16: bool = False):
        if (fused := gather_in_order(user_w, item_w, order, count, bf16)) is not None:  # one pass
            x0, sq, x16 = fused
        else:
            x0 = LayerZeroInOrder.forward(_NoCtx(), user_w, item_w, order, None)  # (the rank is for its backward)
            sq, x16 = weighted_sq_norm(x0, count), None
        ctx.set_materialize_grads(False)  # an output nothing read gets None, not a table of zeros to add
        ctx.adj, ctx.alphas, ctx.order, ctx.n_users, ctx.bf16 = adj, alphas, order, user_w.shape[0], bf16
        ctx.save_for_backward(x0, count)
        return _horner(adj, x0, alphas, bf16=bf16, g16=x16), sq, x0

    @staticmethod
    def backward(ctx, g_final: Optional[Tensor], g_sq: Optional[Tensor], g_x0: Optional[Tensor]):
        x0, count = ctx.saved_tensors
        g = torch.zeros_like(x0) if g_final is None else g_final.contiguous()
        z_scale = None if g_sq is None else count * (2 * g_sq)
        out = _horner(ctx.adj, g, ctx.alphas, z=None if z_scale is None else x0, z_scale=z_scale,
                      out_rows=ctx.order, bf16=ctx.bf16)  # parameter order: users, then items
        if g_x0 is not None:
            out.index_add_(0, ctx.order, g_x0)
        u = ctx.n_users
        return out[:u], out[u:], None, None, None, None, None


class LightGCNFinalRows(torch.autograd.Function):
    """``propagate_final(adj, emb0)[part]`` for each of ``parts`` (row ids, duplicates allowed) in
    one autograd node: the backward scatters every part's gradient into one ``(N, d)`` buffer and
    runs :class:`LightGCNPropagation`'s Horner backward on it (no ``(N, d)`` gradient per part to
    allocate and add up)."""

    @staticmethod
    def forward(ctx, adj: Tensor, emb0: Tensor, alphas: tuple, *parts: Tensor):
        ctx.adj, ctx.alphas, ctx.parts, ctx.shape = adj, alphas, parts, emb0.shape
        out = LightGCNPropagation.forward(_NoCtx(), adj, emb0, alphas)
        return tuple(out.index_select(0, p) for p in parts)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        G = grads[0].new_zeros(ctx.shape)
        for p, g in zip(ctx.parts, grads):
            G.index_add_(0, p, g)
        return (None, _horner(ctx.adj, G, ctx.alphas), None) + (None,) * len(ctx.parts)


def propagate_final(adj: Tensor, emb0: Tensor, n_layers: int,
                    alphas: Optional[Sequence[float]] = None) -> Tensor:
    """Only the final embeddings ``E = Σ_k α_k E^(k)`` ``(N, d)`` of
    :func:`propagate`, as one autograd node with the symmetric Horner backward
    (:class:`LightGCNPropagation`): ``K`` sparse products forward, ``K``
    backward, no per-layer tensors kept. Used for training steps."""
    a = tuple(layer_weights(n_layers, alphas))
    if emb0.requires_grad and torch.is_grad_enabled():
        return LightGCNPropagation.apply(adj, emb0, a)
    with torch.no_grad():
        return LightGCNPropagation.forward(_NoCtx(), adj, emb0, a)


class _NoCtx:
    """Stand-in ``ctx`` for calling the forward without autograd."""

    needs_input_grad = (False, False, False, False)


def _row_submatrix(adj: Tensor, rows: Tensor) -> Tensor:
    """``adj[rows]`` as a ``(len(rows), N)`` CSR (cost ∝ summed degree of
    ``rows``, no pass over the whole matrix)."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    start = crow[rows]
    cnt = crow[rows + 1] - start
    sub_crow = torch.zeros(rows.numel() + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(cnt, 0, out=sub_crow[1:])
    nnz = int(sub_crow[-1])
    local = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt, output_size=nnz)
    pos = torch.arange(nnz, device=rows.device) + (start - sub_crow[:-1])[local]
    return torch.sparse_csr_tensor(sub_crow, col[pos], val[pos], size=(rows.numel(), adj.shape[1]),
                                   check_invariants=False)


def _column_masked(adj: Tensor, keep_cols: Tensor) -> Tensor:
    """``adj`` with only the entries whose column is flagged in ``keep_cols``
    (``(N,)`` bool); same shape, CSR order preserved (no sort)."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    idx = keep_cols[col].nonzero().squeeze(1)  # kept entry positions, ascending
    new_crow = torch.searchsorted(idx, crow.to(idx.dtype)).to(crow.dtype)  # kept entries before each row start
    return torch.sparse_csr_tensor(new_crow, col[idx], val[idx], size=adj.shape, check_invariants=False)


class LightGCNRowsPropagation(torch.autograd.Function):
    """Final embeddings of the nodes ``rows`` only (distinct ids), for a
    training step whose loss touches only those rows.

    With ``P`` the projector on ``rows`` and ``Â`` symmetric:

    * forward: ``E^(1..K-1)`` over the full graph (K-1 sparse products), the
      last layer only for ``rows``: ``Â[rows] E^(K-1)`` (the ``(b, N)`` row
      sub-matrix);
    * backward, ``G = P G``: ``dL/dE^(K-1) = α_{K-1} G + α_K Â P G`` and
      ``Â P = S_c`` (entries whose column is in ``rows``), then Horner
      ``H ← α_k G + Â H`` for k = K-2..0.

    So one step costs ``2(K-1)`` full sparse products plus two restricted
    ones (their size is the summed degree of ``rows``), instead of ``2K``.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, emb0: Tensor, rows: Tensor, alphas: tuple) -> Tensor:
        n_layers = len(alphas) - 1
        out = emb0[rows] * alphas[0]
        x = emb0
        for a in alphas[1:-1]:
            x = _spmm(adj, x)
            out.add_(x[rows], alpha=a)
        if n_layers >= 1:
            out.add_(_spmm(_row_submatrix(adj, rows), x), alpha=alphas[-1])
            if ctx.needs_input_grad[1]:
                in_rows = torch.zeros(emb0.shape[0], dtype=torch.bool, device=emb0.device)
                in_rows[rows] = True
                ctx.s_col = _column_masked(adj, in_rows)
        ctx.adj, ctx.alphas, ctx.rows, ctx.n = adj, alphas, rows, emb0.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, rows = ctx.alphas, ctx.rows
        G = grad.new_zeros(ctx.n, grad.shape[1])
        G[rows] = grad
        if len(a) == 1:
            return None, G * a[0], None, None
        h = _spmm_add(ctx.s_col, G * a[-1], G, a[-2])
        for k in range(len(a) - 3, -1, -1):
            h = _spmm_add(ctx.adj, h, G, a[k])
        return None, h, None, None


#: above this share of the nodes in a batch, :func:`propagate_rows` propagates the whole graph (on
#: Gowalla, one thread: equal at 47 % -- batch 16,384 --, the whole graph 12 % faster at 91 %).
ROWS_PROPAGATION_MAX_SHARE = 0.5


#: above this many triples a LightGCN training batch covering the graph hands its objective the final table
#: rather than the gathered rows (:meth:`whyrec.models.BatchEmbeddings.from_final`), which the BPR loss then
#: reads triple by triple (:func:`whyrec.train.losses.bpr_loss_table`): no ``(b, d)`` blocks, no scatter. On
#: Gowalla (2 threads, one process, interleaved) the table's step is 0.94x the gathered rows' at 65,536
#: triples and 0.98x at 16,384; below, batches rarely cover the graph.
LARGE_BATCH = 16_384


def covers_graph(rows: Tensor, n_nodes: int) -> bool:
    """Whether the distinct ``rows`` are more than :data:`ROWS_PROPAGATION_MAX_SHARE` of ``n_nodes``: then a
    propagation restricted to them saves little, and the whole graph is propagated."""
    return int(torch.bincount(rows, minlength=n_nodes).count_nonzero()) > ROWS_PROPAGATION_MAX_SHARE * n_nodes


def propagate_rows(adj: Tensor, emb0: Tensor, n_layers: int, rows: Tensor,
                   alphas: Optional[Sequence[float]] = None, split: Optional[int] = None,
                   covers: Optional[bool] = None):
    """``propagate_final(adj, emb0, n_layers, alphas)[rows]`` (same values and
    gradients), computed with :class:`LightGCNRowsPropagation`: the last layer
    only for ``rows`` -- or, when the distinct rows are more than
    :data:`ROWS_PROPAGATION_MAX_SHARE` of the nodes, :func:`propagate_final`.
    ``rows``: ``(b,)`` int64 node ids, duplicates allowed. ``split``: return a
    tuple of that many equal consecutive blocks of the result instead (each
    gathered on its own: cheaper backward than slicing one result). ``covers``: :func:`covers_graph` of
    ``rows`` when the caller has it already (default: computed here)."""
    a = tuple(layer_weights(n_layers, alphas))
    if split is not None and rows.numel() % split:
        raise ValueError(f"{rows.numel()} rows do not split into {split} equal blocks")
    if covers_graph(rows, emb0.shape[0]) if covers is None else covers:
        # most nodes are in the batch: restricting the last layer saves little and building the
        # restricted matrices costs more than it saves
        parts = rows.split(rows.numel() // split) if split is not None else (rows,)
        if emb0.requires_grad and torch.is_grad_enabled():
            out = LightGCNFinalRows.apply(adj, emb0, a, *parts)
        else:
            full = propagate_final(adj, emb0, n_layers, alphas)
            out = tuple(full.index_select(0, p) for p in parts)
        return out if split is not None else out[0]
    uniq, inv = torch.unique(rows, return_inverse=True)
    if emb0.requires_grad and torch.is_grad_enabled():
        out = LightGCNRowsPropagation.apply(adj, emb0, uniq, a)
    else:
        with torch.no_grad():
            out = LightGCNRowsPropagation.forward(_NoCtx(), adj, emb0, uniq, a)
    if split is None:
        return out.index_select(0, inv)
    return tuple(out.index_select(0, part) for part in inv.split(inv.numel() // split))


def scores_with_histories(emb0: Tensor, train, n_layers: int, alphas, users, histories) -> Tensor:
    """Re-score users after changing their history, without retraining.

    For each ``users[r]`` the user's row of the ``(n_users, n_items)`` training matrix is
    replaced by ``histories[r]`` (one user at a time), Â is re-normalized and the layer-0
    embeddings ``emb0`` ``(n_users + n_items, d)`` are propagated again.  Returns the
    ``(len(users), n_items)`` scores of every item (on the CPU).

    A history that only removes items (``histories[r] ⊆`` the user's row: every deletion curve
    and counterfactual search) keeps ``Â``'s structure: the removed edges get weight 0 and
    ``Â' = D'^-1/2 A' D'^-1/2`` is recomputed on the stored entries with the reduced degrees
    ``d'_u = d_u − |S|``, ``d'_j = d_j − 1`` (``j ∈ S``): one vectorized pass instead of building
    the matrix again. Any other history is rebuilt from the edited training matrix.
    """
    n_users = train.shape[0]
    histories = sp.csr_matrix(histories)
    out = torch.empty(len(users), train.shape[1], dtype=emb0.dtype)
    R = _binary_csr(train)
    base = normalized_adjacency(R, dtype=emb0.dtype)
    indptr = base.crow_indices().numpy().astype(np.int64)
    indices = base.col_indices().numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    deg = np.diff(indptr).astype(np.float64)
    np_dtype = torch.empty((), dtype=emb0.dtype).numpy().dtype
    lil = None
    for r, u in enumerate(np.asarray(users).reshape(-1)):
        u = int(u)
        own = R.indices[R.indptr[u]:R.indptr[u + 1]]
        h = np.unique(histories[r].indices[histories[r].data != 0])
        if np.isin(h, own).all():
            gone = np.setdiff1d(own, h) + n_users  # removed item nodes
            d = deg.copy()
            d[u] -= len(gone)
            d[gone] -= 1.0
            dinv = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
            values = dinv[rows] * dinv[indices]
            lo, hi = indptr[u], indptr[u + 1]  # u's row, then the removed items' entries for u
            values[lo:hi][np.isin(indices[lo:hi], gone)] = 0.0
            for j in gone:
                a, b = indptr[j], indptr[j + 1]
                values[a:b][indices[a:b] == u] = 0.0
            adj = _csr_tensor(indptr, indices, values.astype(np_dtype), base.shape[0])
        else:
            if lil is None:
                lil = sp.csr_matrix(train, dtype=np.float32).tolil(copy=True)
            original = lil.rows[u][:], lil.data[u][:]
            lil.rows[u] = list(histories[r].indices)
            lil.data[u] = [1.0] * histories[r].nnz
            adj = normalized_adjacency(lil.tocsr(), dtype=emb0.dtype)
            lil.rows[u], lil.data[u] = original
        adj = adj.to(emb0.device)
        with torch.no_grad():
            e = propagate_final(adj, emb0, n_layers, alphas)
        out[r] = (e[u] @ e[n_users:].T).cpu()
    return out
