"""whyrec.models: the shared interface, LightGCN, MF, Popularity, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.graph import normalized_adjacency, propagate
from whyrec.models import MF, LightGCN, LightGCNConfig, MFConfig, Popularity, Recommender
from whyrec.train import fit, load_weights, save_weights, TrainConfig

HAND = np.array([[1, 1, 0, 0],
                 [1, 0, 1, 0],
                 [1, 1, 1, 0]], dtype=np.float32)


def random_train(U=40, I=60, density=0.08, seed=0) -> sp.csr_matrix:
    R = sp.random(U, I, density=density, random_state=seed, format="csr")
    R.data[:] = 1
    return R


def test_lightgcn_state_dict_and_buffers():
    R = random_train()
    m = LightGCN(40, 60, LightGCNConfig(dim=8, n_layers=2), graph=R)
    assert isinstance(m, Recommender)
    assert set(m.state_dict()) == {"user_emb.weight", "item_emb.weight"}
    assert [n for n, _ in m.named_parameters()] == ["user_emb.weight", "item_emb.weight"]
    assert m.adj is not None and m.adj.layout == torch.sparse_csr
    big = LightGCN(2000, 3000, LightGCNConfig(dim=64))
    assert big.user_emb.weight.std().item() == pytest.approx(0.1, rel=0.05)
    with pytest.raises(RuntimeError, match="no graph"):
        big.embeddings()


def test_lightgcn_embeddings_scores_and_cache():
    R = random_train()
    m = LightGCN(40, 60, LightGCNConfig(dim=8, n_layers=3), graph=R).eval()
    u0, i0 = m.layer0()
    ref, _ = propagate(normalized_adjacency(R), torch.cat([u0, i0]).detach(), 3)
    eu, ei = m.embeddings()
    assert eu.shape == (40, 8) and ei.shape == (60, 8)
    torch.testing.assert_close(torch.cat([eu, ei]), ref)
    users = torch.tensor([3, 0, 39])
    s = m.score_users(users)
    assert s.shape == (3, 60)
    torch.testing.assert_close(s, ref[users] @ ref[40:].T)
    items = torch.tensor([5, 59, 0])
    torch.testing.assert_close(m(users, items), s[torch.arange(3), items])
    # cached: the same tensor comes back until the weights change
    assert m.embeddings()[0].data_ptr() == eu.data_ptr()
    with torch.no_grad():
        m.user_emb.weight.mul_(2.0)
    eu2, _ = m.embeddings()
    assert eu2.data_ptr() != eu.data_ptr() or not torch.allclose(eu2, eu)
    ref2, _ = propagate(normalized_adjacency(R), torch.cat(m.layer0()).detach(), 3)
    torch.testing.assert_close(eu2, ref2[:40])


def test_lightgcn_batch_embeddings_match_full():
    R = random_train()
    m = LightGCN(40, 60, LightGCNConfig(dim=8, n_layers=3), graph=R).train()
    u = torch.tensor([0, 5, 5, 39])
    i = torch.tensor([1, 2, 59, 0])
    j = torch.tensor([3, 3, 7, 8])
    be = m.batch_embeddings(u, i, j)
    eu, ei = m.embeddings()
    torch.testing.assert_close(be.users, eu[u])
    torch.testing.assert_close(be.pos, ei[i])
    torch.testing.assert_close(be.neg, ei[j])
    torch.testing.assert_close(be.users0, m.user_emb.weight[u])
    torch.testing.assert_close(be.pos0, m.item_emb.weight[i])
    torch.testing.assert_close(be.neg0, m.item_emb.weight[j])
    ((be.users * be.pos).sum() - (be.users * be.neg).sum()).backward()
    assert m.user_emb.weight.grad is not None and m.item_emb.weight.grad.abs().sum() > 0


def test_batch_l2_without_gathering_equals_the_gathered_rows():
    """LightGCN hands the L2 term its whole layer-0 table and the batch's row ids; the count-weighted
    dense sum must equal the sum over the gathered rows (duplicates counted, user 5 and item 3 twice),
    in value and in gradient, for all three parts and for users + positives only (BCE)."""
    from whyrec.train.losses import batch_l2, l2_reg

    R = random_train()
    m = LightGCN(40, 60, LightGCNConfig(dim=8, n_layers=3), graph=R).train()
    u, i, j = torch.tensor([0, 5, 5, 39]), torch.tensor([1, 2, 59, 0]), torch.tensor([3, 3, 7, 8])
    W = (m.user_emb.weight, m.item_emb.weight)
    for parts, rows in (((), (W[0][u], W[1][i], W[1][j])), (("users", "pos"), (W[0][u], W[1][i]))):
        be = m.batch_embeddings(u, i, j)
        assert be.ids0 is not None  # the table form, not gathered blocks
        got = batch_l2(1e-2, be, *parts)
        want = l2_reg(1e-2, 4, *rows)
        torch.testing.assert_close(got, want)
        for a, b in zip(torch.autograd.grad(got, W), torch.autograd.grad(want, W)):
            torch.testing.assert_close(a, b)
    # MF gives the rows themselves: same function, same numbers
    mf = MF(40, 60, MFConfig(dim=8))
    be = mf.batch_embeddings(u, i, j)
    assert be.ids0 is None
    torch.testing.assert_close(batch_l2(0.5, be), l2_reg(0.5, 4, mf.user_emb.weight[u], mf.item_emb.weight[i],
                                                          mf.item_emb.weight[j]))


def test_lightgcn_graph_as_tensor_and_device_move():
    R = random_train()
    adj = normalized_adjacency(R)
    a = LightGCN(40, 60, LightGCNConfig(dim=4), graph=adj)
    b = LightGCN(40, 60, LightGCNConfig(dim=4), graph=R)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.eval().score_users(torch.arange(40)), b.eval().score_users(torch.arange(40)))
    assert torch.equal(a.item_degree, torch.from_numpy(np.asarray(R.sum(0)).ravel().astype(np.int64)))
    with pytest.raises(ValueError):
        LightGCN(41, 60, graph=R)
    a.to("cpu")  # buffers follow .to()
    assert a.adj.device.type == "cpu"


def test_fold_in_equals_hand_formula():
    """New user liking items {0, 3} on the 3x4 hand graph (item 3 has degree 0)."""
    torch.manual_seed(0)
    R = sp.csr_matrix(HAND)
    m = LightGCN(3, 4, LightGCNConfig(dim=5, n_layers=3), graph=R).eval()
    _, layers = propagate(normalized_adjacency(R), torch.cat(m.layer0()).detach(), 3)
    item = lambda k, i: layers[k][3 + i]  # noqa: E731  item i, layer k
    # d_c = 2; d_0' = 3 + 1 = 4; d_3' = 0 + 1 = 1
    e = [torch.zeros(5)]
    for k in range(3):
        e.append(item(k, 0) / np.sqrt(2 * 4) + item(k, 3) / np.sqrt(2 * 1))
    expected = sum(e) / 4
    got = m.fold_in([0, 3, 3])  # duplicates ignored
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # with a given layer-0 vector the α_0 term is added
    v = torch.randn(5)
    torch.testing.assert_close(m.fold_in(torch.tensor([3, 0]), user_layer0=v), expected + v / 4,
                               atol=1e-6, rtol=0)
    s = m.score_vectors(got)
    assert s.shape == (4,)
    with pytest.raises(ValueError):
        m.fold_in([])
    with pytest.raises(ValueError):
        m.fold_in([4])


def test_fold_in_one_layer_is_exact_propagation_of_augmented_graph():
    """With K = 1 and e_c^(0) = 0, fold-in is exactly what LightGCN computes
    for the new user once the graph has the new row (layer-0 items unchanged)."""
    torch.manual_seed(1)
    R = random_train(20, 30, 0.15, seed=4)
    m = LightGCN(20, 30, LightGCNConfig(dim=6, n_layers=1), graph=R).eval()
    liked = [2, 7, 11, 29]
    row = np.zeros((1, 30), np.float32)
    row[0, liked] = 1
    R_aug = sp.vstack([R, sp.csr_matrix(row)]).tocsr()
    u0, i0 = m.layer0()
    emb0 = torch.cat([u0, torch.zeros(1, 6), i0]).detach()
    final, _ = propagate(normalized_adjacency(R_aug), emb0, 1)
    torch.testing.assert_close(m.fold_in(liked), final[20], atol=1e-6, rtol=0)


def test_mf_interface():
    m = MF(10, 12, MFConfig(dim=4))
    u, i = m.embeddings()
    assert u.shape == (10, 4) and i.shape == (12, 4)
    users = torch.tensor([1, 9])
    torch.testing.assert_close(m.score_users(users), u[users] @ i.T)
    torch.testing.assert_close(m(users, torch.tensor([0, 11])), (u[users] * i[[0, 11]]).sum(-1))
    be = m.batch_embeddings(users, torch.tensor([0, 1]), torch.tensor([2, 3]))
    torch.testing.assert_close(be.users, be.users0)
    assert set(m.state_dict()) == {"user_emb.weight", "item_emb.weight"}


def test_popularity():
    R = sp.csr_matrix(HAND)
    m = Popularity(R)
    assert m.trainable is False and len(list(m.parameters())) == 0
    s = m.score_users(torch.tensor([0, 2]))
    torch.testing.assert_close(s, torch.tensor([[3.0, 2, 2, 0], [3.0, 2, 2, 0]]))
    torch.testing.assert_close(m(torch.tensor([0, 1]), torch.tensor([3, 0])), torch.tensor([0.0, 3.0]))
    with pytest.raises(NotImplementedError, match="no embeddings"):
        m.embeddings()
    before = m.item_counts.clone()
    h = fit(m, R, None, TrainConfig(epochs=3), progress=False)
    assert h.epochs == [] and torch.equal(m.item_counts, before)


@pytest.mark.parametrize("kind", ["lightgcn", "mf", "popularity"])
def test_checkpoint_round_trip(tmp_path, kind):
    R = random_train()
    if kind == "lightgcn":
        make = lambda: LightGCN(40, 60, LightGCNConfig(dim=8), graph=R)  # noqa: E731
    elif kind == "mf":
        make = lambda: MF(40, 60, MFConfig(dim=8))  # noqa: E731
    else:
        make = lambda: Popularity(R)  # noqa: E731
    torch.manual_seed(0)
    a = make().eval()
    users = torch.arange(40)
    before = a.score_users(users).clone()
    path = tmp_path / "w.safetensors"
    save_weights(a, path, metadata={"epoch": 3})
    torch.manual_seed(123)
    b = make().eval()
    if kind != "popularity":
        assert not torch.equal(b.score_users(users), before)
    load_weights(b, path)
    assert torch.equal(b.score_users(users), before)
    # the file is plain safetensors
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["class"] == type(a).__name__
        assert set(f.keys()) == set(a.state_dict())
