"""whyrec.graph: normalized adjacency, propagation, symmetric backward."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.graph import (
    AdjacencyCache,
    LightGCNPropagation,
    SymmetricSpMM,
    cached_normalized_adjacency,
    graph_key,
    node_degrees,
    normalized_adjacency,
    propagate,
    propagate_final,
    propagate_rows,
)

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
warnings.filterwarnings("ignore", message=".*Sparse invariant checks.*")

DATASETS = Path(os.environ.get("WHYREC_DATASETS",
                               Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def gowalla_train(max_users: int | None = None) -> sp.csr_matrix:
    path = DATASETS / "gowalla" / "train.txt"
    if not path.is_file():
        pytest.fail(f"{path} is missing (set WHYREC_DATASETS)")
    rows, cols = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            u = int(parts[0])
            if max_users is not None and u >= max_users:
                continue
            items = np.asarray(parts[1:], dtype=np.int64)
            rows.append(np.full(items.size, u, dtype=np.int64))
            cols.append(items)
    r, c = np.concatenate(rows), np.concatenate(cols)
    n_users = 29858 if max_users is None else max_users
    return sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n_users, 40981))


# 3 users x 4 items; item 3 has no user (zero degree), user 2 likes items 0,1,2
HAND = np.array([[1, 1, 0, 0],
                 [1, 0, 1, 0],
                 [1, 1, 1, 0]], dtype=np.float32)


def dense_reference(R: np.ndarray, emb0: np.ndarray, K: int, alphas=None):
    """Dense numpy LightGCN: Â = D^-1/2 A D^-1/2, E = Σ α_k Â^k E0."""
    U, I = R.shape
    A = np.zeros((U + I, U + I))
    A[:U, U:] = R
    A[U:, :U] = R.T
    deg = A.sum(1)
    dinv = np.zeros_like(deg)
    dinv[deg > 0] = deg[deg > 0] ** -0.5
    A_hat = dinv[:, None] * A * dinv[None, :]
    alphas = alphas or [1.0 / (K + 1)] * (K + 1)
    layers = [emb0.astype(np.float64)]
    for _ in range(K):
        layers.append(A_hat @ layers[-1])
    return A_hat, sum(a * x for a, x in zip(alphas, layers)), layers


def test_adjacency_matches_dense_hand_graph():
    adj = normalized_adjacency(sp.csr_matrix(HAND))
    assert adj.layout == torch.sparse_csr and adj.dtype == torch.float32
    A_hat, _, _ = dense_reference(HAND, np.zeros((7, 1)), 0)
    np.testing.assert_allclose(adj.to_dense().numpy(), A_hat, atol=1e-7)
    # hand values: user 0 (deg 2) -- item 0 (deg 3): 1/sqrt(6); zero-degree item row/col all 0
    assert adj.to_dense()[0, 3].item() == pytest.approx(1 / np.sqrt(6), abs=1e-7)
    assert adj.to_dense()[6].abs().sum().item() == 0
    assert adj.to_dense()[:, 6].abs().sum().item() == 0
    assert torch.equal(node_degrees(adj), torch.tensor([2, 2, 3, 3, 2, 2, 0]))
    # symmetric
    assert torch.equal(adj.to_dense(), adj.to_dense().T)


def test_propagation_matches_dense_by_hand():
    rng = np.random.default_rng(0)
    emb0 = rng.normal(size=(7, 5)).astype(np.float32)
    K = 3
    _, ref_final, ref_layers = dense_reference(HAND, emb0, K)
    adj = normalized_adjacency(sp.csr_matrix(HAND))
    final, layers = propagate(adj, torch.from_numpy(emb0), K)
    assert len(layers) == K + 1
    np.testing.assert_allclose(final.numpy(), ref_final, atol=1e-6)
    for got, ref in zip(layers, ref_layers):
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    # explicit layer average by hand: (E0 + E1 + E2 + E3) / 4
    np.testing.assert_allclose(final.numpy(), sum(ref_layers) / 4, atol=1e-6)
    # zero-degree item keeps only α_0 E^(0)
    np.testing.assert_allclose(final[6].numpy(), emb0[6] / 4, atol=1e-7)
    np.testing.assert_allclose(propagate_final(adj, torch.from_numpy(emb0), K).numpy(), ref_final,
                               atol=1e-6)
    # custom layer weights
    al = [0.1, 0.2, 0.3, 0.4]
    _, ref2, _ = dense_reference(HAND, emb0, K, al)
    np.testing.assert_allclose(propagate(adj, torch.from_numpy(emb0), K, al)[0].numpy(), ref2, atol=1e-6)
    np.testing.assert_allclose(propagate_final(adj, torch.from_numpy(emb0), K, al).numpy(), ref2, atol=1e-6)


def test_non_binary_and_duplicate_input_is_binarised():
    coo = sp.coo_matrix((np.array([3.0, 1.0, 1.0, 0.0]), (np.array([0, 0, 1, 2]), np.array([1, 1, 0, 2]))),
                        shape=(3, 3))
    adj = normalized_adjacency(coo)
    ref, _, _ = dense_reference(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], float), np.zeros((6, 1)), 0)
    np.testing.assert_allclose(adj.to_dense().numpy(), ref, atol=1e-7)


def _pyg_embedding(R: sp.csr_matrix, emb0: torch.Tensor, K: int) -> torch.Tensor:
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    U, I = R.shape
    coo = R.tocoo()
    u = torch.from_numpy(coo.row.astype(np.int64))
    i = torch.from_numpy(coo.col.astype(np.int64)) + U
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    pyg = PygLightGCN(U + I, emb0.shape[1], K)
    with torch.no_grad():
        pyg.embedding.weight.copy_(emb0)
        return pyg.get_embedding(edge_index)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pyg_random_graph(seed):
    rng = np.random.default_rng(seed)
    U, I = 120, 180
    R = sp.random(U, I, density=0.04, random_state=seed, format="csr")
    R.data[:] = 1
    emb0 = torch.from_numpy(rng.normal(scale=0.1, size=(U + I, 16)).astype(np.float32))
    ours, _ = propagate(normalized_adjacency(R), emb0, 3)
    ref = _pyg_embedding(R, emb0, 3)
    assert (np.diff(R.tocsc().indptr) == 0).any(), "want some zero-degree items in the random graph"
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_matches_pyg_gowalla_subset():
    R = gowalla_train(max_users=500)
    assert R.nnz > 10_000
    g = torch.Generator().manual_seed(0)
    emb0 = torch.randn(R.shape[0] + R.shape[1], 64, generator=g) * 0.1
    ours, _ = propagate(normalized_adjacency(R), emb0, 3)
    ref = _pyg_embedding(R, emb0, 3)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def _tiny_adj64():
    R = sp.csr_matrix(HAND)
    return normalized_adjacency(R, dtype=torch.float64)


def test_symmetric_backward_gradcheck():
    adj = _tiny_adj64()
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SymmetricSpMM.apply(adj, t), (x,))
    assert torch.autograd.gradcheck(lambda t: LightGCNPropagation.apply(adj, t, (0.25,) * 4), (x,))
    assert torch.autograd.gradcheck(lambda t: LightGCNPropagation.apply(adj, t, (0.1, 0.2, 0.3, 0.4)), (x,))


def test_symmetric_backward_equals_dense_autograd():
    R = sp.random(30, 40, density=0.1, random_state=3, format="csr")
    R.data[:] = 1
    adj = normalized_adjacency(R)
    dense = adj.to_dense()
    x0 = torch.randn(70, 8)
    w = torch.randn(70, 8)  # arbitrary upstream gradient via a weighted sum
    grads = []
    for mode in ("layers", "final", "dense"):
        x = x0.clone().requires_grad_(True)
        if mode == "layers":
            out, _ = propagate(adj, x, 3)
        elif mode == "final":
            out = propagate_final(adj, x, 3)
        else:
            out = sum(torch.linalg.matrix_power(dense, k) @ x for k in range(4)) / 4
        (out * w).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[2], atol=1e-6, rtol=1e-5)


def test_symmetric_backward_can_fail_on_non_symmetric():
    """The trick relies on Â = Â^T: the check above would catch a wrong transpose."""
    M = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).to_sparse_csr()
    x = torch.ones(2, 1, requires_grad=True)
    SymmetricSpMM.apply(M, x).sum().backward()
    assert not torch.allclose(x.grad, M.to_dense().T @ torch.ones(2, 1))


def test_adjacency_cache():
    R = sp.csr_matrix(HAND)
    cache = AdjacencyCache(maxsize=2)
    a = cache.get(R)
    assert cache.get(R.copy()) is a and cache.hits == 1
    R2 = R.tolil()
    R2[2, 3] = 1
    R2 = R2.tocsr()
    assert graph_key(R2) != graph_key(R)
    b = cache.get(R2)
    assert b is not a and cache.misses == 2
    assert cached_normalized_adjacency(R) is cached_normalized_adjacency(sp.csr_matrix(HAND))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_propagation_matches_cpu():
    R = sp.random(50, 60, density=0.1, random_state=0, format="csr")
    R.data[:] = 1
    adj = normalized_adjacency(R)
    x = torch.randn(110, 8, requires_grad=True)
    out = propagate_final(adj, x, 3)
    (out ** 2).sum().backward()
    xc = x.detach().cuda().requires_grad_(True)
    outc = propagate_final(adj.cuda(), xc, 3)
    (outc ** 2).sum().backward()
    torch.testing.assert_close(outc.cpu(), out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("K", [0, 1, 2, 3])
@pytest.mark.parametrize("batch", ["few rows", "most rows"])
def test_rows_propagation_matches_full(K, batch):
    """Both branches of propagate_rows (last layer on the batch rows; the whole graph when the batch
    holds most nodes) give propagate_final's rows and gradients, duplicates included."""
    R = sp.random(30, 40, density=0.1, random_state=5, format="csr")
    R.data[:] = 1
    adj = normalized_adjacency(R, dtype=torch.float64)
    x0 = torch.randn(70, 6, dtype=torch.float64)
    rows = torch.tensor([3, 3, 0, 45, 69, 12, 45])
    if batch == "most rows":
        rows = torch.cat([rows, torch.arange(0, 70, 2), torch.arange(1, 70, 3)])
        assert torch.unique(rows).numel() > 0.5 * 70
    w = torch.randn(rows.numel(), 6, dtype=torch.float64)
    xa = x0.clone().requires_grad_(True)
    xb = x0.clone().requires_grad_(True)
    ya = propagate_final(adj, xa, K)[rows]
    yb = propagate_rows(adj, xb, K, rows)
    torch.testing.assert_close(yb, ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad)
    xc = x0[:, :2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: propagate_rows(adj, t, K, rows), (xc,))
    parts = propagate_rows(adj, x0, K, rows[:6], split=3)
    assert len(parts) == 3 and all(torch.equal(p, q) for p, q in zip(parts, propagate_rows(adj, x0, K, rows[:6]).split(2)))
    with pytest.raises(ValueError, match="do not split into 4"):
        propagate_rows(adj, x0, K, rows[:6], split=4)
    # the caller's covers_graph decides the branch: the other branch forced gives the same rows and gradients
    xd = x0.clone().requires_grad_(True)
    yd = propagate_rows(adj, xd, K, rows, covers=batch == "few rows")
    torch.testing.assert_close(yd, ya)
    (yd * w).sum().backward()
    torch.testing.assert_close(xd.grad, xa.grad)


def test_scores_with_histories_rescores_exactly():
    """Unchanged histories give the model's own scores; a changed one equals a model on the edited graph."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from whyrec.graph import scores_with_histories
    from whyrec.models import LightGCN, LightGCNConfig

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((12, 15)) < 0.3).astype(np.float32))
    train[0, 0] = 1.0
    train = sp.csr_matrix(train)
    torch.manual_seed(0)
    model = LightGCN(12, 15, LightGCNConfig(dim=8, n_layers=2), graph=train).eval()
    emb0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    users = np.array([0, 3])
    same = scores_with_histories(emb0, train, 2, model.alphas, users, train[users])
    assert torch.allclose(same, model.score_users(torch.tensor(users)).detach(), atol=1e-6)
    changed = train[users].tolil()
    changed[0, 0] = 0.0
    changed = sp.csr_matrix(changed)
    changed.eliminate_zeros()
    got = scores_with_histories(emb0, train, 2, model.alphas, users[:1], changed[:1])
    edited = train.tolil()
    edited[0, 0] = 0.0
    edited = sp.csr_matrix(edited)
    edited.eliminate_zeros()
    other = LightGCN(12, 15, LightGCNConfig(dim=8, n_layers=2), graph=edited).eval()
    other.load_state_dict(model.state_dict())
    want = other.score_users(torch.tensor([0])).detach()
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, same[:1], atol=1e-4)


def test_scores_with_histories_removals_equal_a_dense_recomputation():
    """Removal-only histories (the fast path: zero weights, reduced degrees) and added items (the rebuild)
    both equal the formula computed densely in numpy on the edited graph: Â' = D'^-1/2 A' D'^-1/2,
    E = Σ_k α_k Â'^k E⁰, s = E_u · E_items."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from whyrec.graph import scores_with_histories

    rng = np.random.default_rng(3)
    n_u, n_i, d, K = 9, 11, 4, 3
    dense = (rng.random((n_u, n_i)) < 0.45).astype(np.float64)
    dense[:, 0] = 1.0  # item 0: every user, so removing it changes every user's normalization
    train = sp.csr_matrix(dense.astype(np.float32))
    emb0 = torch.tensor(rng.standard_normal((n_u + n_i, d)))
    alphas = [0.1, 0.2, 0.3, 0.4]

    def dense_scores(u, row):
        R = dense.copy()
        R[u] = row
        A = np.block([[np.zeros((n_u, n_u)), R], [R.T, np.zeros((n_i, n_i))]])
        deg = A.sum(1)
        dinv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
        P = dinv[:, None] * A * dinv[None, :]
        x, e = emb0.numpy(), alphas[0] * emb0.numpy()
        for k in range(1, K + 1):
            x = P @ x
            e = e + alphas[k] * x
        return e[u] @ e[n_u:].T

    users, rows = [], []
    for u in range(n_u):
        own = np.flatnonzero(dense[u])
        for keep in (own, own[1:], own[: len(own) // 2], own[:0]):  # all, one removed, half, none left
            users.append(u)
            rows.append(np.isin(np.arange(n_i), keep).astype(np.float64))
    extra = np.flatnonzero(dense[2] == 0)[0]
    users.append(2)
    rows.append(np.where(np.arange(n_i) == extra, 1.0, dense[2]))  # an added item: rebuilt
    got = scores_with_histories(emb0, train, K, alphas, np.array(users), sp.csr_matrix(np.array(rows)))
    want = np.stack([dense_scores(u, r) for u, r in zip(users, rows)])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
