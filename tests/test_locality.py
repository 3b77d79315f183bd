"""The training step's propagation in the locality order (spectral groups of users and of items,
reverse Cuthill-McKee within them, 32-bit indices,
uninitialised product outputs): the same values and gradients as a dense numpy computation of
LightGCN's formula on a small graph, and as a float64 reference on MovieLens-100K; training with it
gives the same losses and metrics epoch by epoch as training without it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.graph import locality_order, normalized_adjacency, permute_adjacency
from whyrec.models import LightGCN, LightGCNConfig
from whyrec.train import TrainConfig, fit

from test_training import local_recall, ml100k_split  # noqa: F401  (fixture)


def _dense_final_operator(R: sp.csr_matrix, K: int) -> np.ndarray:
    """``F = Σ_k Â^k / (K+1)`` with ``Â = D^-1/2 A D^-1/2``, dense float64, straight from the paper."""
    U, I = R.shape
    A = np.zeros((U + I, U + I))
    A[:U, U:] = R.toarray() > 0
    A[U:, :U] = A[:U, U:].T
    deg = A.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    Ahat = dinv[:, None] * A * dinv[None, :]
    F, P = np.eye(U + I), np.eye(U + I)
    for _ in range(K):
        P = Ahat @ P
        F = F + P
    return F / (K + 1)


def test_adjacency_has_int32_indices_and_permutes_exactly():
    R = sp.random(30, 20, density=0.2, random_state=1, format="csr")
    adj = normalized_adjacency(R, dtype=torch.float64)
    assert adj.crow_indices().dtype == adj.col_indices().dtype == torch.int32
    order = locality_order(adj)
    assert sorted(order.tolist()) == list(range(50))
    dense = adj.to_dense().numpy()
    local = permute_adjacency(adj, order)
    assert local.col_indices().dtype == torch.int32
    o = order.numpy()
    np.testing.assert_array_equal(local.to_dense().numpy(), dense[o][:, o])


@pytest.mark.parametrize("n_comm", [2, 3])
def test_locality_order_numbers_each_community_together(n_comm):
    """``n_comm`` dense communities of 30 users x 30 items, joined by one interaction each: with
    ``2 n_comm`` groups, the users of each community and the items of each community come out as
    contiguous runs (``2 n_comm - 1`` changes of group along the order), for every seed; the same seed
    gives the same order; plain RCM (``clusters=0``) is the fallback below four groups."""
    rng = np.random.default_rng(0)
    blocks = [sp.csr_matrix(rng.random((30, 30)) < 0.4) for _ in range(n_comm)]
    R = sp.block_diag(blocks).tolil()
    for c in range(n_comm - 1):
        R[30 * c, 30 * (c + 1)] = 1
    adj = normalized_adjacency(R.tocsr())
    group = np.r_[np.repeat(np.arange(n_comm), 30), n_comm + np.repeat(np.arange(n_comm), 30)]
    for seed in range(5):
        order = locality_order(adj, clusters=2 * n_comm, seed=seed)
        assert sorted(order.tolist()) == list(range(adj.shape[0]))
        assert int((np.diff(group[order.numpy()]) != 0).sum()) == 2 * n_comm - 1
        assert torch.equal(order, locality_order(adj, clusters=2 * n_comm, seed=seed))
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    rcm = reverse_cuthill_mckee(sp.csr_matrix(adj.to_dense().numpy()), symmetric_mode=True)
    np.testing.assert_array_equal(locality_order(adj, clusters=0).numpy(), rcm)
    np.testing.assert_array_equal(locality_order(adj).numpy(), rcm)  # 120 nodes: too few for groups
    users_first = locality_order(adj, n_users=30 * n_comm, clusters=2 * n_comm).numpy()
    assert (users_first[: 30 * n_comm] < 30 * n_comm).all()  # all users, then all items
    assert int((np.diff(group[users_first]) != 0).sum()) == 2 * n_comm - 1


def test_grouped_order_propagates_like_the_natural_order(ml100k_split):  # noqa: F811
    """ML-100K in 4 spectral groups (forced: its 4th |λ| is ~0.5, below the community test's 0.7, so by
    default the order is plain RCM): the propagation in that order, mapped back, equals the natural
    order's (float64)."""
    train, _ = ml100k_split
    adj = normalized_adjacency(train, dtype=torch.float64)
    U = train.shape[0]
    rcm = locality_order(adj, clusters=0)
    users_first = torch.cat([rcm[rcm < U], rcm[rcm >= U]])  # RCM, users first (a stable partition)
    assert torch.equal(locality_order(adj, n_users=U, clusters=4), users_first)
    assert torch.equal(locality_order(adj, n_users=U), users_first)
    order = locality_order(adj, n_users=train.shape[0], clusters=4, min_eigenvalue=0.0)
    assert (order[: train.shape[0]] < train.shape[0]).all()
    assert sorted(order.tolist()) == list(range(adj.shape[0]))
    assert not torch.equal(order, users_first)
    local = permute_adjacency(adj, order)
    x = torch.randn(adj.shape[0], 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    got = (local @ (local @ x[order]))[rank]
    torch.testing.assert_close(got, adj @ (adj @ x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("batch", [4, 40])  # few nodes (last layer on the rows) / most nodes (whole graph)
def test_reordered_batch_embeddings_equal_dense_formula(batch):
    rng = np.random.default_rng(0)
    U, I, K = 25, 18, 3
    R = sp.random(U, I, density=0.15, random_state=3, format="lil")
    R[0, :] = 0  # a user without interactions
    R = R.tocsr()
    m = LightGCN(U, I, LightGCNConfig(dim=5, n_layers=K)).double()
    m.set_graph(R)
    assert m.adj_local is None  # built by the first training step only
    users = torch.from_numpy(rng.integers(0, U, batch))
    pos, neg = (torch.from_numpy(rng.integers(0, I, batch)) for _ in range(2))
    be = m.batch_embeddings(users, pos, neg)
    assert m.adj_local is not None and not torch.equal(m.node_order, torch.arange(U + I))
    w = [torch.from_numpy(rng.standard_normal((batch, 5))) for _ in range(3)]
    (sum((x * wi).sum() for x, wi in zip((be.users, be.pos, be.neg), w))).backward()

    F = _dense_final_operator(R, K)
    E0 = torch.cat(m.layer0()).detach().numpy()
    final = F @ E0
    ids = [users.numpy(), pos.numpy() + U, neg.numpy() + U]
    for got, idx in zip((be.users, be.pos, be.neg), ids):
        np.testing.assert_allclose(got.detach().numpy(), final[idx], atol=1e-12)
    G = np.zeros_like(E0)  # d loss / d final, scattered; d loss / d E0 = F^T G
    for idx, wi in zip(ids, w):
        np.add.at(G, idx, wi.numpy())
    grad = np.concatenate([m.user_emb.weight.grad.numpy(), m.item_emb.weight.grad.numpy()])
    np.testing.assert_allclose(grad, F.T @ G, atol=1e-12)


def test_reordered_propagation_equals_reference_on_ml100k(ml100k_split):  # noqa: F811
    """float32 steps in the locality order against a float64 scipy computation of the previous
    code's formula (``Â`` built independently, natural order, int64 indices)."""
    train, _ = ml100k_split
    U, I = train.shape
    torch.manual_seed(0)
    m = LightGCN(U, I, LightGCNConfig(dim=16, n_layers=3), graph=train)
    A = sp.bmat([[None, train], [train.T, None]]).tocsr().astype(np.float64)
    d = np.asarray(A.sum(1)).ravel()
    dinv = sp.diags(np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0))
    Ahat = (dinv @ A @ dinv).tocsr()
    E0 = torch.cat(m.layer0()).detach().double().numpy()
    layers = [E0]
    for _ in range(3):
        layers.append(Ahat @ layers[-1])
    ref = sum(layers) / 4
    rng = np.random.default_rng(1)
    for b in (512, 8192):  # both branches of propagate_rows
        users = torch.from_numpy(rng.integers(0, U, b))
        pos, neg = (torch.from_numpy(rng.integers(0, I, b)) for _ in range(2))
        be = m.batch_embeddings(users, pos, neg)
        np.testing.assert_allclose(be.users.detach().numpy(), ref[users.numpy()], atol=1e-5)
        np.testing.assert_allclose(be.neg.detach().numpy(), ref[neg.numpy() + U], atol=1e-5)
        m.zero_grad()
        be.pos.sum().backward()
        G = np.zeros_like(E0)
        np.add.at(G, pos.numpy() + U, 1.0)
        g_ref, h = G.copy(), G.copy()  # F^T G = F G, Â symmetric
        for _ in range(3):
            h = Ahat @ h
            g_ref = g_ref + h
        grad = torch.cat([m.user_emb.weight.grad, m.item_emb.weight.grad]).numpy()
        np.testing.assert_allclose(grad, g_ref / 4, atol=1e-5)


def test_training_in_locality_order_matches_natural_order(ml100k_split):  # noqa: F811
    """Same seed, same samples: the losses of every epoch and the recall of every evaluation agree
    to float tolerance (only the summation order of the sparse products differs)."""
    train, test = ml100k_split
    runs = []
    for reorder in (True, False):
        torch.manual_seed(0)
        m = LightGCN(943, 1682, LightGCNConfig(dim=32, n_layers=3, reorder=reorder), graph=train)
        cfg = TrainConfig(epochs=4, lr=1e-2, batch_size=4096, eval_every=2, patience=None, num_threads=1)
        h = fit(m, train, test, cfg, progress=False,
                evaluate=lambda model, tr, te, ks: {"recall@20": local_recall(model, tr, te)})
        runs.append((h, torch.cat(m.layer0()).detach()))
    (h1, w1), (h2, w2) = runs
    np.testing.assert_allclose(h1.losses, h2.losses, rtol=1e-5)
    np.testing.assert_allclose([e[1]["recall@20"] for e in h1.evals], [e[1]["recall@20"] for e in h2.evals],
                               atol=2e-3)
    torch.testing.assert_close(w1, w2, atol=1e-4, rtol=1e-4)


def test_malloc_tuning_applies_once_and_can_be_turned_off():
    import os
    import subprocess
    import sys

    import whyrec.graph as graph

    code = "import whyrec.graph as g; print(g.MALLOC_TUNED)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env={**env, "WHYREC_MALLOC_TUNING": "0"},
                         capture_output=True, text=True, check=True)
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    assert on.stdout.strip() == str(glibc) and off.stdout.strip() == "False"
    assert isinstance(graph.MALLOC_TUNED, bool)


def test_heap_only_takes_large_blocks_from_the_heap_and_restores_mmap():
    """Inside ``heap_only`` a 64 MiB tensor (above the 32 MiB mmap threshold) is carved from glibc's heap
    (its address lies in the process's ``[heap]`` mapping), where a freed block is reused without page
    faults; outside, it is its own ``mmap`` (outside ``[heap]``, faulted in again every time: 16,384
    faults of 4 KiB pages). Re-entrant: only the outermost exit turns mmap back on. In a fresh process, so
    that no earlier test's heap holds a free block of that size; nothing is timed. After the exit the block
    asked for is larger than the whole heap: the blocks freed inside (with glibc's 64 MiB top pad) can stay in
    the heap's free lists (``malloc_trim`` gives their pages back but cannot shrink the heap past a live block
    above them), and glibc serves a request from a free block that fits before it considers ``mmap`` -- a CI
    run that asked for 64 MiB there saw that."""
    import os
    import subprocess
    import sys

    import whyrec.graph as graph

    if not graph.MALLOC_TUNED:
        pytest.skip("malloc tuning not applied here (not glibc, or turned off)")
    code = """
import resource, torch, whyrec.graph as graph

def in_heap(mib=64):
    heap = [l.split()[0].split("-") for l in open("/proc/self/maps") if "[heap]" in l]
    x = torch.empty(mib << 18)  # mib MiB of float32
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x.fill_(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    heap = [l.split()[0].split("-") for l in open("/proc/self/maps") if "[heap]" in l]
    inside = any(int(a, 16) <= x.data_ptr() < int(b, 16) for a, b in heap)
    del x
    return int(inside), faults

out = [in_heap(), in_heap()]
with graph.heap_only():
    with graph.heap_only():
        out += [in_heap(), in_heap()]
    out.append((graph._HEAP_ONLY_DEPTH, 0))
    out.append(in_heap())
out.append((graph._HEAP_ONLY_DEPTH, 0))
heap_mib = sum(int(b, 16) - int(a, 16) for a, b in
               (l.split()[0].split("-") for l in open("/proc/self/maps") if "[heap]" in l)) >> 20
out.append(in_heap(max(96, heap_mib + 64)))  # larger than any free block the heap can hold
print(" ".join(f"{a},{b}" for a, b in out))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "WHYREC_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    rows = [tuple(map(int, r.split(","))) for r in out.stdout.split()]
    (h0, f0), (h1, f1), (h2, _), (h3, _), (depth, _), (h4, _), (depth_after, _), (h5, f5) = rows
    assert (h0, h1, h5) == (0, 0, 0) and min(f0, f1, f5) > 8_000  # its own mmap, faulted in each time
    assert (h2, h3, h4) == (1, 1, 1)  # from the heap
    assert depth == 1 and depth_after == 0


def test_layer_zero_in_order_is_the_concatenation_permuted():
    """``LayerZeroInOrder`` equals ``cat([user_w, item_w])[order]`` for a users-first order, and its
    gradient is the inverse gather (gradcheck, float64)."""
    from whyrec.graph import LayerZeroInOrder

    g = torch.Generator().manual_seed(0)
    U, I, d = 5, 7, 3
    order = torch.cat([torch.randperm(U, generator=g), U + torch.randperm(I, generator=g)])
    rank = torch.empty_like(order)
    rank[order] = torch.arange(U + I)
    uw = torch.randn(U, d, dtype=torch.float64, generator=g, requires_grad=True)
    iw = torch.randn(I, d, dtype=torch.float64, generator=g, requires_grad=True)
    got = LayerZeroInOrder.apply(uw, iw, order, rank)
    torch.testing.assert_close(got, torch.cat([uw, iw])[order], rtol=0, atol=0)
    w = torch.randn(U + I, d, dtype=torch.float64, generator=g)
    (got * w).sum().backward()
    torch.testing.assert_close(uw.grad, w[rank[:U]], rtol=0, atol=0)
    torch.testing.assert_close(iw.grad, w[rank[U:]], rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda a, b: LayerZeroInOrder.apply(a, b, order, rank), (uw, iw))


def test_weighted_sq_norm_matches_autograd():
    """The L2 term's one-pass function: ``Σ w_n ‖t_n‖²`` and its gradient ``2 w_n t_n`` by hand, and
    gradcheck."""
    from whyrec.models.base import _WeightedSqNorm

    g = torch.Generator().manual_seed(1)
    t = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.tensor([0.0, 1, 2, 0, 3, 1], dtype=torch.float64)
    val = _WeightedSqNorm.apply(t, w)
    torch.testing.assert_close(val, (w[:, None] * t * t).sum())
    val.backward()
    torch.testing.assert_close(t.grad, 2 * w[:, None] * t.detach())
    assert torch.autograd.gradcheck(lambda a: _WeightedSqNorm.apply(a, w), (t,))


@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "torch"])
def test_covering_step_in_one_node_equals_the_dense_formula(ml100k_split, kernel, monkeypatch):  # noqa: F811
    """A covering batch (20,000 triples on ML-100K) takes ``LightGCNLocalStep``: the final table, the L2 term
    and the layer-0 rows in one autograd node, whose backward adds the L2 gradient and writes the parameters'
    order inside the last product. The BPR + L2 loss and the gradients of both tables equal a float64 autograd
    computation with the dense operator ``F = Σ_k Â^k / 4``; a loss that also reads layer-0 rows (``users0``)
    gets their gradient too. With the compiled product (``compiled``) and with Torch's passes (``torch``)."""
    import whyrec.graph as graph
    from whyrec.train.losses import batch_l2, bpr_loss, bpr_loss_table

    if not kernel:
        monkeypatch.setattr(graph, "native_addmm", lambda *a, **k: None)
    train, _ = ml100k_split
    U, I = train.shape
    torch.manual_seed(0)
    m = LightGCN(U, I, LightGCNConfig(dim=16, n_layers=3), graph=train)
    rng = np.random.default_rng(2)
    b = 20_000
    users = torch.from_numpy(rng.integers(0, U, b))
    pos, neg = (torch.from_numpy(rng.integers(0, I, b)) for _ in range(2))
    F = torch.from_numpy(_dense_final_operator(train, 3))
    reg = 0.3
    for extra in (False, True):
        m.zero_grad()
        be = m.batch_embeddings(users, pos, neg)
        assert be.sq_all is not None and be.final_table() is not None  # the one-node path
        table, ids = be.final_table()
        loss = bpr_loss_table(table, *ids) + batch_l2(reg, be)
        if extra:
            loss = loss + (be.users0 ** 2).sum() * 1e-3
        loss.backward()
        E0 = torch.cat([w.detach().double() for w in m.layer0()]).requires_grad_()
        final = F @ E0
        u_, p_, n_ = users, pos + U, neg + U
        ref = bpr_loss((final[u_] * final[p_]).sum(1), (final[u_] * final[n_]).sum(1)) \
            + reg * 0.5 * (E0[u_].square().sum() + E0[p_].square().sum() + E0[n_].square().sum()) / b
        if extra:
            ref = ref + (E0[u_] ** 2).sum() * 1e-3
        ref.backward()
        assert float(loss) == pytest.approx(float(ref), rel=1e-5)
        grad = torch.cat([m.user_emb.weight.grad, m.item_emb.weight.grad]).double()
        torch.testing.assert_close(grad, E0.grad, rtol=1e-4, atol=1e-8)


def test_bfloat16_products_step_close_to_float32(ml100k_split, monkeypatch):  # noqa: F811
    """``propagation_dtype="bfloat16"``: a covering step's loss and gradients within bfloat16's rounding of the
    float32 step's; the compiled kernel and Torch's passes (the rows rounded the same way) agree with each other
    to float32 rounding; an unknown dtype is refused."""
    import whyrec.graph as graph
    from whyrec.train.losses import batch_l2, bpr_loss_table

    with pytest.raises(ValueError, match="propagation_dtype"):
        LightGCNConfig(propagation_dtype="float16")
    train, _ = ml100k_split
    U, I = train.shape
    rng = np.random.default_rng(3)
    b = 20_000
    users = torch.from_numpy(rng.integers(0, U, b))
    pos, neg = (torch.from_numpy(rng.integers(0, I, b)) for _ in range(2))
    torch.manual_seed(0)
    weights = LightGCN(U, I, LightGCNConfig(dim=16)).state_dict()

    def step(dtype, kernel=True):
        if not kernel:
            monkeypatch.setattr(graph, "native_addmm", lambda *a, **k: None)
        m = LightGCN(U, I, LightGCNConfig(dim=16, propagation_dtype=dtype), graph=train)
        m.load_state_dict(weights)
        be = m.batch_embeddings(users, pos, neg)
        table, ids = be.final_table()
        loss = bpr_loss_table(table, *ids) + batch_l2(0.3, be)
        loss.backward()
        monkeypatch.undo()
        return float(loss), torch.cat([m.user_emb.weight.grad, m.item_emb.weight.grad])

    l32, g32 = step("float32")
    l16, g16 = step("bfloat16")
    l16t, g16t = step("bfloat16", kernel=False)
    assert l16 == pytest.approx(l32, rel=1e-3) and not torch.equal(g16, g32)  # (the loss may round alike)
    assert float((g16 - g32).norm() / g32.norm()) < 1e-2
    assert l16t == pytest.approx(l16, rel=1e-6)
    torch.testing.assert_close(g16t, g16, rtol=1e-4, atol=1e-7)


def test_training_holds_the_heap_across_epochs_until_each_evaluation():
    """``Trainer`` keeps one ``heap_only`` block open across its training epochs (the heap's pages stay
    mapped) and closes it after each evaluation epoch's steps, at the end, and when training ends on an error."""
    import whyrec.graph as graph
    from whyrec.models import MF, MFConfig
    from whyrec.train.callbacks import Callback

    if not graph.MALLOC_TUNED:
        pytest.skip("malloc tuning not applied here (not glibc, or turned off)")
    R = sp.random(60, 40, density=0.2, random_state=0, format="csr")
    R.data[:] = 1.0
    seen = []

    class Depth(Callback):
        def on_epoch(self, trainer, row):
            seen.append(graph._HEAP_ONLY_DEPTH)
            if row["epoch"] == 5 and fail:
                raise RuntimeError("stop here")

    fail = False
    cfg = TrainConfig(epochs=7, eval_every=3, batch_size=64, lr=1e-2, patience=None)
    fit(MF(60, 40, MFConfig(dim=4)), R, None, cfg, progress=False, callbacks=[Depth()])
    assert seen == [1, 1, 0, 1, 1, 0, 0] and graph._HEAP_ONLY_DEPTH == 0
    seen.clear()
    fail = True
    with pytest.raises(RuntimeError, match="stop here"):
        fit(MF(60, 40, MFConfig(dim=4)), R, None, cfg, progress=False, callbacks=[Depth()])
    assert seen == [1, 1, 0, 1, 1] and graph._HEAP_ONLY_DEPTH == 0
