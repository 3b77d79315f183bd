"""Large training batches: the BPR loss read from the final table in chunks (``bpr_loss_table``), and
LightGCN handing it that table (``BatchEmbeddings.from_final``) instead of ``(b, d)`` gathered rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import whyrec.models.lightgcn as lightgcn_module
from whyrec.models import LightGCN, LightGCNConfig
from whyrec.models.base import BatchEmbeddings
from whyrec.models.lightgcn_history import LightGCNHistory
from whyrec.train import TrainConfig, UniformNegativeSampler, bpr_loss
from whyrec.train.loop import BPR
from whyrec.train.bpr_kernel import bpr_table_loss_grad
from whyrec.train.losses import bpr_loss_table


@pytest.mark.parametrize("kernel", [True, False])
def test_bpr_loss_table_by_hand(kernel):
    # rows: 0 = user (1, 0), 1 = positive (1, 1), 2 = negative (0, 1): margin x = u·(i − j) = 1
    table = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], requires_grad=True)
    loss = bpr_loss_table(table, torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), kernel=kernel)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    loss.backward()
    w = -1.0 / (1.0 + math.e)  # d softplus(-x)/dx at x = 1: -σ(-1)
    want = torch.tensor([[w * 1.0, w * 0.0],    # ∂/∂u = w (i − j) = w (1, 0)
                         [w * 1.0, w * 0.0],    # ∂/∂i = w u
                         [-w * 1.0, -w * 0.0]])  # ∂/∂j = −w u
    torch.testing.assert_close(table.grad, want)


@pytest.mark.parametrize("chunk,kernel", [(1, False), (3, False), (7, False), (1000, False), (1000, True)])
def test_bpr_loss_table_equals_autograd_of_the_gathered_rows(chunk, kernel):
    """Duplicated ids (a row as user and item, the same item positive and negative elsewhere), a ragged last
    chunk: the same value and gradient as autograd through the gathered rows, and Torch's gradcheck in
    float64 -- for the chunked Torch pass and for the compiled one."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.tensor([0, 0, 1, 2, 5, 5, 8, 3, 3, 4])
    i = torch.tensor([5, 6, 6, 7, 0, 1, 2, 6, 6, 8])
    j = torch.tensor([6, 7, 8, 6, 2, 2, 6, 4, 5, 6])
    got = bpr_loss_table(table, u, i, j, chunk=chunk, kernel=kernel)
    want = bpr_loss((table[u] * table[i]).sum(1), (table[u] * table[j]).sum(1))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, table, retain_graph=True)[0],
                               torch.autograd.grad(want, table, retain_graph=True)[0])
    # an upstream gradient other than 1 (a weighted loss): the kept gradient is scaled, not reused as is
    torch.testing.assert_close(torch.autograd.grad(-3.0 * got, table)[0], torch.autograd.grad(-3.0 * want, table)[0])
    assert torch.autograd.gradcheck(lambda t: bpr_loss_table(t, u, i, j, chunk=chunk, kernel=kernel), (table,))
    with pytest.raises(ValueError, match="equally long"):
        bpr_loss_table(table, u, i[:3], j)


def test_compiled_bpr_pass_shares_the_triples_among_threads_and_checks_its_input():
    """Margins split among 1, 2 or 3 threads (rows shared across the shares, the triples in no particular user
    order), the gradient pulled through the triples' sparse matrix: the same loss and gradient as the chunked
    Torch pass, in float32 on a table of MovieLens-100K's size, and the gradient the same bits on any number of
    threads; no gradient asked, none computed; bad ids and tables refused."""
    g = torch.Generator().manual_seed(1)
    n_users, n_items, b = 943, 1682, 40_000
    table = (0.3 * torch.randn(n_users + n_items, 16, generator=g)).requires_grad_(True)
    u = torch.randint(0, n_users, (b,), generator=g)
    i, j = (torch.randint(n_users, n_users + n_items, (b,), generator=g) for _ in range(2))
    want = bpr_loss_table(table, u, i, j, kernel=False)
    (want_grad,) = torch.autograd.grad(want, table)
    grads = []
    for threads in (1, 2, 3):
        loss, grad = bpr_table_loss_grad(table, u, i, j, threads=threads)
        torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-9)
        grads.append(grad)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # the gradient's product on one thread too
    try:
        one = bpr_table_loss_grad(table, u, i, j, threads=1)[1]
    finally:
        torch.set_num_threads(threads_before)
    assert all(torch.equal(g_, grads[0]) for g_ in (*grads, one))
    loss, grad = bpr_table_loss_grad(table, u, i, j, want_grad=False)
    assert grad is None and loss.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(IndexError, match=r"neg has a row id outside \[0, 2625\)"):
        bpr_table_loss_grad(table, u, i, torch.full((b,), n_users + n_items))
    with pytest.raises(ValueError, match="CPU float32/float64 table and a C compiler .*, got torch.float16"):
        bpr_loss_table(table.detach().half(), u, i, j, kernel=True)
    assert bpr_loss_table(table.detach().half(), u[:5], i[:5], j[:5]).dtype == torch.float16  # the Torch pass


def test_batch_embeddings_from_final_gathers_on_demand():
    final = torch.arange(12.0).reshape(6, 2)
    table0 = torch.ones(6, 2)
    ids = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 4]))
    be = BatchEmbeddings.from_final(final, ids, table0, ids)
    assert be.size == 2 and be.final_table()[0] is final
    torch.testing.assert_close(be.neg, final[[4, 4]])  # the first ask gathers the three parts
    assert be.final_table() is None and be.size == 2
    changed = be.replace(users=torch.zeros(2, 2))
    torch.testing.assert_close(changed.users, torch.zeros(2, 2))
    torch.testing.assert_close(changed.pos, final[[2, 3]])
    with pytest.raises(TypeError, match="not layer0"):
        be.replace(layer0=(table0,))


@pytest.fixture(scope="module")
def ml100k_train(ml100k):
    return ml100k.interaction_matrix(ml100k.positive_mask())


@pytest.mark.parametrize("model_cls", [LightGCN, LightGCNHistory])
def test_large_batch_loss_and_gradients_equal_the_gathered_rows_on_ml100k(ml100k_train, monkeypatch, model_cls):
    """A whole epoch of MovieLens-100K positives as one batch (more than LARGE_BATCH once the threshold is
    lowered): the BPR objective's bpr, reg and loss, and the gradient of every weight, equal those of the
    gathered-rows path, in the locality order and without it."""
    train = sp.csr_matrix(ml100k_train)
    users, pos, neg = (torch.from_numpy(a) for a in UniformNegativeSampler(train, seed=3).sample_epoch(0))
    assert len(users) > 50_000
    for reorder in (True, False):
        results = []
        for large in (10**9, 1000):  # the gathered rows, then the final table
            monkeypatch.setattr(lightgcn_module, "LARGE_BATCH", large)
            torch.manual_seed(0)
            model = model_cls(*train.shape, LightGCNConfig(dim=16, n_layers=3, reorder=reorder), graph=train).train()
            objective = BPR()
            objective.setup(model, train, TrainConfig(reg=1e-3), torch.device("cpu"))
            be = model.batch_embeddings(users, pos, neg)
            assert (be.final_table() is not None) == (large == 1000 and model_cls is LightGCN)
            terms = objective.terms(be)
            terms["loss"].backward()
            results.append(({k: v.item() for k, v in terms.items()}, [p.grad.clone() for p in model.parameters()]))
        (terms_rows, grads_rows), (terms_table, grads_table) = results
        assert terms_table == pytest.approx(terms_rows, rel=1e-6)
        for a, b in zip(grads_table, grads_rows):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
        assert all(np.isfinite(v) for v in terms_rows.values()) and terms_rows["bpr"] == pytest.approx(math.log(2), rel=1e-2)
