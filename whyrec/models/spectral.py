"""What the training-free graph filters (GF-CF, BSPM, ChebyCF) share.

Notation (Shen et al., CIKM 2021, §3): ``R`` is the binary ``(n_users, n_items)`` training matrix,
``D_U``/``D_I`` the user/item degree diagonals and

.. math::

    \\tilde R = D_U^{-1/2} R D_I^{-1/2},\\qquad \\tilde P = \\tilde R^T \\tilde R \\quad
    (\\text{item–item, eigenvalues in } [0, 1]),

with ``\\tilde R = U \\Sigma V^T`` its SVD and ``V_k`` ``(n_items, k)`` the right singular vectors of
the ``k`` largest singular values (the ``k`` smoothest item signals, eigenvalues ``σ²`` of ``P̃``).
A degree-0 user or item gets a zero row/column of ``R̃`` (no division by zero) and ``D^{1/2} = 0``.

Every model here scores a user as a **linear map of their interaction row** ``x = R[u]``::

    s(x) = x F,      s(u, t) = Σ_{j ∈ history(u)} x_j F(j, t)

for an ``(n_items, n_items)`` filter ``F`` that is a polynomial of ``P̃`` plus a rank-``k`` term
(and diagonal degree scalings). ``F`` is never formed: a block of users is scored *item-major*
(``X`` ``(n_items, b)`` = the users' rows as columns) with ``P̃ X = R̃^T (R̃ X)``, two sparse
products of ``nnz(R)·b`` multiply–adds each, and the rank-``k`` term as ``(X^T A V_k) M`` with
``M`` ``(k, n_items)``. Memory: ``R̃`` and ``R̃^T`` in CSR (``2 nnz`` values and 32-bit indices),
``V_k`` and the model's ``M`` (``2 k n_items`` floats), and per block of ``b`` users a few
``n_items × b`` blocks — never ``n_items²`` nor ``n_users × n_items``.

Because ``s`` is linear in ``x``:

* ``history_contributions`` gives ``x_j F(j, t)`` for every history item ``j``: they sum to the
  score exactly (float rounding), and removing ``j`` from the history changes the score by exactly
  its contribution — no retraining, nothing approximated;
* a new user is just a new row (:meth:`LinearFilter.score_histories`); given a training user's row
  they get that user's scores.

The basis ``V_k`` is computed once by a truncated SVD of the sparse ``R̃``
(:func:`truncated_basis`: scikit-learn's randomized SVD by default, or scipy's ARPACK
``svds``) and saved with the run; everything else is rebuilt from the training matrix on load.

**Where it computes.** Scoring (:meth:`LinearFilter.score_users`, :meth:`~LinearFilter.score_histories`,
:meth:`~LinearFilter.score_items`, :meth:`~LinearFilter.history_contributions`, evaluation) runs in
torch on the model's device — the CPU or CUDA (``model.to(device)``, ``--device``; the models declare
:data:`~whyrec.models.base.CUDA`): ``R̃``/``R̃^T`` are torch CSR tensors (non-persistent buffers: they
move with the model and are not saved), a block of users is a torch CSR block on the device, its
first product ``R̃ X`` a gather over the rows' items (:meth:`Rows.propagate`), the second a CSR ×
dense product (cuSPARSE on CUDA), and the rank-``k`` term dense products. Only the blocks' rows are
cut from the scipy training matrix on the CPU (a few hundred integers per user) and copied over.
Fitting — the truncated SVD — runs on the CPU (:func:`truncated_basis`); the basis is then put on the
model's device. Results equal the CPU's to float tolerance (the same operations, in another order).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor

from .base import CUDA, EXACT_HISTORY, NEW_ROW, RESCORE, Recommender, binary_rows

__all__ = ["NormalizedInteractions", "truncated_basis", "LinearFilter", "SVD_METHODS", "torch_csr"]

SVD_METHODS = ("randomized", "arpack")


def torch_csr(m: sp.spmatrix) -> Tensor:
    """A scipy matrix as a float32 ``torch.sparse_csr`` tensor. 64-bit indices: on this CPU build
    the CSR × dense product is 5–30 % faster with them than with 32-bit ones (measured on Gowalla's
    ``R̃``, blocks of 64–256 columns)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sort_indices()
    idx = np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(idx)), torch.from_numpy(m.indices.astype(idx)),
                                       torch.from_numpy(m.data), size=m.shape, check_invariants=False)


@dataclass
class NormalizedInteractions:
    """``R`` (binary CSR), ``R̃ = D_U^{-1/2} R D_I^{-1/2}`` (CSR float32) and the item degrees."""

    R: sp.csr_matrix
    Rn: sp.csr_matrix
    item_degree: np.ndarray  # (n_items,) float64

    @classmethod
    def from_train(cls, train: sp.spmatrix) -> "NormalizedInteractions":
        if not sp.issparse(train):
            raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
        R = sp.csr_matrix(train, dtype=np.float32, copy=True)
        R.sum_duplicates()
        R.eliminate_zeros()
        R.data[:] = 1.0
        du = np.diff(R.indptr).astype(np.float64)
        di = np.bincount(R.indices, minlength=R.shape[1]).astype(np.float64)
        Rn = sp.diags(inv_sqrt(du)) @ R @ sp.diags(inv_sqrt(di))
        return cls(R, sp.csr_matrix(Rn, dtype=np.float32), di)

    def item_power(self, p: float) -> np.ndarray:
        """``d_i^p`` per item, 0 for items without training users (``p`` may be negative)."""
        d = self.item_degree
        out = np.zeros_like(d)
        out[d > 0] = d[d > 0] ** p
        return out


def inv_sqrt(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d, dtype=np.float64)
    out[d > 0] = 1.0 / np.sqrt(d[d > 0])
    return out


def truncated_basis(Rn: sp.spmatrix, k: int, method: str = "randomized", seed: int = 0,
                    n_iter: int = 6, oversample: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` right singular vectors ``V_k`` ``(n_items, k)`` and singular values ``(k,)``
    (descending) of the sparse ``R̃``.

    ``randomized``: the randomized range finder of Halko, Martinsson & Tropp (2011, Alg. 4.4:
    ``oversample`` extra columns, ``n_iter`` power iterations, each re-orthonormalized by QR) with
    torch's multi-threaded CSR products and LAPACK, then the exact SVD of the small projected
    matrix — the algorithm of :func:`sklearn.utils.extmath.randomized_svd`, which we used first:
    its QR calls through scipy were 20–80× slower on this machine under load (8.6 s per QR of a
    3,846 × 576 block); float64 below 4,096 rows/columns, float32 above; ``arpack``:
    :func:`scipy.sparse.linalg.svds` (implicitly restarted Lanczos, exact to ARPACK's tolerance,
    several times slower at large ``k``)."""
    n_users, n_items = Rn.shape
    full = min(n_users, n_items)
    if not 1 <= k <= full:
        raise ValueError(f"rank must lie in 1..{full} (min(n_users, n_items)), got {k}")
    if method == "randomized":
        s, vt = _randomized_svd(Rn, k, min(oversample, full - k), n_iter, seed,
                                torch.float64 if full <= 4096 else torch.float32)
    elif method == "arpack":
        if k >= full:  # ARPACK needs k < min(shape): take the dense SVD of a small matrix
            _, s, vt = np.linalg.svd(Rn.toarray().astype(np.float64), full_matrices=False)
            s, vt = s[:k], vt[:k]
        else:
            from scipy.sparse.linalg import svds

            _, s, vt = svds(Rn.astype(np.float64), k=k, random_state=seed)
        order = np.argsort(-s)
        s, vt = s[order], vt[order]
    else:
        raise ValueError(f"svd must be one of {', '.join(SVD_METHODS)}, got {method!r}")
    return np.ascontiguousarray(vt.T, dtype=np.float32), np.asarray(s, dtype=np.float32)


def _randomized_svd(Rn: sp.spmatrix, k: int, oversample: int, n_iter: int, seed: int, dtype) -> tuple:
    """``(s, V^T)`` of the top ``k`` singular triplets of ``Rn`` (:func:`truncated_basis`)."""
    A = torch_csr(Rn).to(dtype)
    AT = torch_csr(Rn.T).to(dtype)
    gen = torch.Generator().manual_seed(int(seed))
    Q = torch.randn(Rn.shape[1], k + oversample, generator=gen, dtype=dtype)
    with torch.no_grad():
        Q = torch.linalg.qr(torch.sparse.mm(A, Q)).Q                 # (n_users, l): range of A
        for _ in range(int(n_iter)):                                   # power iterations, QR each half
            Q = torch.linalg.qr(torch.sparse.mm(AT, Q)).Q
            Q = torch.linalg.qr(torch.sparse.mm(A, Q)).Q
        B = torch.sparse.mm(AT, Q).T                                   # (l, n_items) = Q^T A
        _, s, vt = torch.linalg.svd(B, full_matrices=False)
    return s[:k].double().numpy(), vt[:k].double().numpy()


class LinearFilter(Recommender):
    """Base of the graph-filter models: ``s(x) = x F`` (module docstring).

    Subclasses implement :meth:`filter_items`: item-major rows ``X`` ``(n_items, b)`` ->
    item-major scores ``(n_items, b)``, using :meth:`propagate` (``P̃ X``) and the basis ``V_k``
    (:attr:`basis`, a persistent buffer ``(n_items, rank)``; ``singular_values`` ``(rank,)``).
    Derived matrices are cached on first use (per setting and device) and dropped by
    :meth:`invalidate_cache` (called after weights are loaded or the model is moved).

    Everything it scores with lives on the model's device and moves with ``.to(device)``: the
    operator ``R̃``, ``R̃^T`` (torch CSR, non-persistent buffers: rebuilt from the training matrix,
    never saved) and the basis; the scipy matrices of :attr:`graph` stay on the CPU, where the rows
    of a block of users are cut."""

    capabilities = frozenset({RESCORE, NEW_ROW, EXACT_HISTORY, CUDA})

    trainable = False
    #: users scored per block by :meth:`score_users` on the CPU (``n_items × block`` floats per live
    #: block; 64 keeps a block in the CPU's caches: 1.3× faster than 256 on Gowalla)
    block: int = 64
    #: on another device (CUDA): the most users per block, and the most ``n_items × block`` floats
    #: of one block (2^26: 256 MiB) — a GPU wants wide products (not measured: no GPU was at hand)
    device_block: int = 2048
    device_block_floats: int = 1 << 26

    def __init__(self, train: sp.spmatrix, config):
        if not sp.issparse(train):
            raise TypeError(f"train must be a scipy.sparse matrix, got {type(train).__name__}")
        n_users, n_items = train.shape
        super().__init__(n_users, n_items)
        self.config = config
        full = min(n_users, n_items)
        if isinstance(config.rank, bool) or not isinstance(config.rank, (int, np.integer)) or config.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {config.rank!r}")
        if config.svd not in SVD_METHODS:
            raise ValueError(f"svd must be one of {', '.join(SVD_METHODS)}, got {config.svd!r}")
        config.rank = min(int(config.rank), full)  # at most min(n_users, n_items) singular vectors exist
        self.graph = NormalizedInteractions.from_train(train)
        # the operator: moves with .to(device), not in the state dict (rebuilt from the training matrix)
        self.register_buffer("_Rn", torch_csr(self.graph.Rn), persistent=False)
        self.register_buffer("_RnT", torch_csr(self.graph.Rn.T), persistent=False)
        self.register_buffer("basis", torch.zeros(n_items, config.rank))
        self.register_buffer("singular_values", torch.zeros(config.rank))
        self._cache: dict = {}

    @property
    def device(self) -> torch.device:
        return self.basis.device

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.invalidate_cache()  # what was derived on the old device stays there otherwise
        return out

    @property
    def V(self) -> Tensor:
        """``V_k`` ``(n_items, config.rank)``: the leading columns of :attr:`basis` (a smaller
        ``config.rank`` than the basis holds uses its first columns, as model selection does)."""
        return self.basis[:, : self.config.rank]

    def truncate_basis(self) -> None:
        """Keep only the ``config.rank`` columns in use (what a saved run stores)."""
        self.basis = self.basis[:, : self.config.rank].contiguous()
        self.singular_values = self.singular_values[: self.config.rank].contiguous()
        self.invalidate_cache()

    # -- fitting ------------------------------------------------------------ #
    def fit_basis(self, seed: int = 0, rank: Optional[int] = None) -> "LinearFilter":
        """Compute ``V_k`` by a truncated SVD of ``R̃`` (:func:`truncated_basis`, ``config.svd``)
        with ``rank`` columns (default ``config.rank``; more lets model selection try several).
        The SVD runs on the CPU; the basis is then put on the model's device."""
        k = min(int(rank or self.config.rank), min(self.n_users, self.n_items))
        v, s = truncated_basis(self.graph.Rn, k, method=self.config.svd, seed=seed)
        device = self.device
        self.basis = torch.from_numpy(v).to(device)
        self.singular_values = torch.from_numpy(s).to(device)
        self.invalidate_cache()
        return self

    def invalidate_cache(self) -> None:
        self._cache = {}

    def _cached(self, name: str, make):
        """``make()`` kept until the weights, the config or the device change. Only the current
        setting's values are kept (selection tries settings one after another: its memory stays that
        of one setting, e.g. one ``n_items × k`` factor)."""
        setting = (dataclasses.astuple(self.config), str(self.device))
        if self._cache.get(None) != setting:
            self._cache = {None: setting}
        value = self._cache.get(name)
        if value is None:
            value = self._cache[name] = make()
        return value

    def item_power(self, p: float) -> Tensor:
        """``d_i^p`` per item (0 for items without training users) on the model's device, cached."""
        return self._cached(f"d^{float(p)!r}", lambda: torch.from_numpy(
            np.asarray(self.graph.item_power(p), np.float32)).to(self.device))

    # -- the operator ------------------------------------------------------- #
    def propagate(self, X: Tensor) -> Tensor:
        """``P̃ X = R̃^T (R̃ X)`` for item-major ``X`` ``(n_items, b)`` (two CSR products)."""
        return torch.sparse.mm(self._RnT, torch.sparse.mm(self._Rn, X))

    def filter_items(self, rows: "Rows") -> Tensor:
        """Item-major scores ``(n_items, b)`` (``= (X F)^T``) of a block of interaction rows."""
        raise NotImplementedError

    # -- scoring ------------------------------------------------------------ #
    def block_size(self) -> int:
        """Users per block on the model's device (:attr:`block` on the CPU, :attr:`device_block`
        bounded by :attr:`device_block_floats` elsewhere)."""
        if self.device.type == "cpu":
            return int(self.block)
        return max(int(self.block), min(int(self.device_block), int(self.device_block_floats) // self.n_items))

    def _score_rows(self, rows: sp.csr_matrix) -> Tensor:
        out = torch.empty(rows.shape[0], self.n_items, device=self.device)
        block = self.block_size()
        with torch.no_grad():
            for lo in range(0, rows.shape[0], block):
                hi = min(lo + block, rows.shape[0])
                out[lo:hi] = self.filter_items(Rows.of(self, rows[lo:hi])).T
        return out

    def score_users(self, users: LongTensor) -> Tensor:
        """``(b, n_items)`` scores of training users (training items not masked), on the model's device."""
        u = torch.as_tensor(users, dtype=torch.long).reshape(-1).cpu().numpy()
        return self._score_rows(self.graph.R[u])

    def score_histories(self, histories: sp.spmatrix, users: Optional[LongTensor] = None) -> Tensor:
        """Scores ``(b, n_items)`` of arbitrary interaction rows ``(b, n_items)`` (binary: any
        stored non-zero counts once) — a changed history or a new user, exactly; ``users`` is not
        needed (a user is their row). On the model's device."""
        return self._score_rows(binary_rows(histories, self.n_items))

    def score_items(self, items) -> Tensor:
        """Scores ``(n_items,)`` of a history given as item indices (a new user), on the model's device."""
        items = np.unique(np.asarray(items, dtype=np.int64).reshape(-1))
        row = sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), np.int64), items)),
                            shape=(1, self.n_items))
        return self._score_rows(row)[0]

    def forward(self, users: LongTensor, items: LongTensor) -> Tensor:
        users = torch.as_tensor(users, dtype=torch.long).reshape(-1).cpu()
        items = torch.as_tensor(items, dtype=torch.long).reshape(-1)
        uniq, inv = torch.unique(users, return_inverse=True)
        return self.score_users(uniq)[inv.to(self.device), items.to(self.device)]

    def history_contributions(self, history, items) -> Tensor:
        """``F(j, t)`` ``(len(history), len(items))`` for history items ``j`` and target items
        ``t``: the exact contribution of each history item to each target's score (a binary
        history ``x``: ``s(t) = Σ_j F(j, t)``). One filter pass over ``|H|`` unit rows, on the
        model's device (callers copy what they read to the CPU)."""
        history = np.asarray(history, dtype=np.int64).reshape(-1)
        items = torch.as_tensor(np.asarray(items, dtype=np.int64).reshape(-1)).to(self.device)
        if history.size == 0:
            return torch.zeros(0, len(items), device=self.device)
        unit = sp.csr_matrix((np.ones(len(history), np.float32), (np.arange(len(history)), history)),
                             shape=(len(history), self.n_items))
        with torch.no_grad():
            return self.filter_items(Rows.of(self, unit)).index_select(0, items).T.contiguous()

    def low_rank_factors(self) -> tuple[np.ndarray, Tensor, float]:
        """``(a, M, w)`` with the model's rank-``k`` term ``s_low(x) = w · ((x ⊙ a) V_k) M^T``:
        ``a`` ``(n_items,)`` numpy, ``M`` ``(n_items, k)`` on the model's device."""
        raise NotImplementedError

    def concept_embeddings(self) -> tuple[Tensor, Tensor]:
        """User ``(n_users, k)`` and item ``(n_items, k)`` vectors whose dot product is the model's
        **rank-k term** (the ideal low-pass / ideal pass filter), not the whole score: the item
        vectors are the items' coordinates in the ``k`` smoothest spectral directions of the item
        graph, and a user's is their (normalized) history summed in those coordinates. What concept
        activation vectors are fitted on for a filter run (``whyrec concepts``). Both on the model's
        device (the users' from a CPU copy of ``V_k``: one scipy product over the training matrix)."""
        a, M, w = self.low_rank_factors()
        V = self.V.detach().cpu().numpy()
        users = torch.from_numpy(np.asarray((self.graph.R @ sp.diags(a.astype(np.float32))) @ V,
                                            np.float32)) * float(w)
        return users.to(M.device), M

    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no user embeddings: a user is their interaction "
                                  "row (use score_users / score_histories)")

    def score_vectors(self, user_vectors: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} scores interaction rows, not vectors (score_histories)")

    def extra_repr(self) -> str:
        return f"n_users={self.n_users}, n_items={self.n_items}, config={self.config}"


class Rows:
    """A block of ``b`` (weighted) interaction rows, kept sparse — ``(b, n_items)`` CSR as torch
    tensors on the model's device (``crow``, ``col``, ``val``) — with the first step of every filter
    term done from the sparse rows: ``R̃ X`` costs ``Σ_j deg(j)`` over the rows' items instead of
    ``nnz(R)·b``, and ``V^T X`` is a CSR × dense product instead of a dense ``k × n_items × b`` one.
    Everything returned is item-major ``(·, b)``, on the model's device. Only torch operations
    (gathers, ``index_add_``, ``torch.sparse.mm``): the same code on the CPU and on CUDA."""

    def __init__(self, model: LinearFilter, crow: Tensor, col: Tensor, val: Tensor, b: int):
        self.model = model
        self.crow, self.col, self.val, self.b = crow, col, val, int(b)
        self._row = None

    @classmethod
    def of(cls, model: LinearFilter, rows: sp.spmatrix) -> "Rows":
        """A scipy block of rows ``(b, n_items)`` copied to the model's device."""
        rows = sp.csr_matrix(rows, dtype=np.float32)
        if not rows.has_canonical_format:
            rows = rows.copy()
            rows.sum_duplicates()
        dev = model.device
        as_t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a, dt)).to(dev)  # noqa: E731
        return cls(model, as_t(rows.indptr, np.int64), as_t(rows.indices, np.int64), as_t(rows.data, np.float32),
                   rows.shape[0])

    @property
    def row(self) -> Tensor:
        """The row (within the block) of every stored entry."""
        if self._row is None:
            self._row = torch.repeat_interleave(torch.arange(self.b, device=self.col.device), self.crow.diff(),
                                                output_size=self.col.numel())
        return self._row

    def scaled(self, weights: Tensor) -> "Rows":
        """The rows with item ``j``'s column multiplied by ``weights[j]`` (a tensor on the device)."""
        out = Rows(self.model, self.crow, self.col, self.val * weights.index_select(0, self.col), self.b)
        out._row = self._row
        return out

    def csr(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            return torch.sparse_csr_tensor(self.crow, self.col, self.val, size=(self.b, self.model.n_items),
                                           check_invariants=False)

    def dense(self) -> Tensor:
        """``X`` ``(n_items, b)``."""
        out = torch.zeros(self.model.n_items, self.b, device=self.val.device)
        return self.add_to(out)

    def add_to(self, out: Tensor, alpha: float = 1.0) -> Tensor:
        """``out += alpha X`` in place (only the stored entries are touched)."""
        vals = self.val if alpha == 1.0 else self.val * float(alpha)
        return out.index_put_((self.col, self.row), vals, accumulate=True)

    def times(self, M: Tensor) -> Tensor:
        """``(rows @ M)^T`` ``(m, b)`` dense, for a CSR ``M`` ``(n_items, m)`` on the device: every stored
        ``(r, j, x)`` of the rows adds ``x · M[j, :]`` to column ``r`` — ``Σ_j nnz(M[j])`` multiply–adds,
        one gather and one ``index_add_``."""
        mcrow, mcol, mval = M.crow_indices(), M.col_indices(), M.values()
        m = M.shape[1]
        starts = mcrow.index_select(0, self.col)
        lens = mcrow.index_select(0, self.col + 1) - starts
        total = int(lens.sum())
        out = torch.zeros(m * self.b, dtype=mval.dtype, device=mval.device)
        if total == 0:
            return out.view(m, self.b)
        entry = torch.repeat_interleave(torch.arange(self.col.numel(), device=mval.device), lens, output_size=total)
        shift = (starts - (torch.cumsum(lens, 0) - lens)).index_select(0, entry)
        pos = torch.arange(total, device=mval.device).add_(shift)       # where each product's M entry is
        target = mcol.index_select(0, pos).mul_(self.b).add_(self.row.index_select(0, entry))
        out.index_add_(0, target, mval.index_select(0, pos).mul_(self.val.index_select(0, entry)))
        return out.view(m, self.b)

    def propagate(self) -> Tensor:
        """``P̃ X`` ``(n_items, b)``: ``R̃ X`` from the sparse rows (:meth:`times` of ``R̃^T``), then one
        CSR × dense product."""
        return torch.sparse.mm(self.model._RnT, self.times(self.model._RnT))

    def project(self, V: Tensor) -> Tensor:
        """``V^T X`` ``(k, b)`` for ``V`` ``(n_items, k)``."""
        return torch.sparse.mm(self.csr(), V).T
