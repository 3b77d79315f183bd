"""Seed 002's resolved model: shapes, the factor softmax, the ELBO, the appendix formula, entities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.data.entities import build_entities, entity_graph_from_arrays
from whyrec.data.errors import DataError
from whyrec.models.resolved import Resolved, ResolvedConfig
from whyrec.train.elbo import ELBO, elbo_step_loss
from whyrec.train.loop import TrainConfig, fit

# tiny graph: 3 users, 5 items, 4 entities
TRAIN = sp.csr_matrix(np.array([[1, 1, 0, 1, 0],
                                [0, 1, 1, 0, 0],
                                [1, 0, 0, 0, 1]], np.float32))
ITEM_ENTITY = np.array([[0, 0], [0, 1], [1, 1], [2, 2], [3, 0], [3, 3], [4, 3]])


def tiny(C=2, D=4, seed=0, **kw):
    torch.manual_seed(seed)
    m = Resolved(3, 5, TRAIN, ITEM_ENTITY, 4, None, ResolvedConfig(dim=D, n_factors=C, **kw))
    with torch.no_grad():  # move away from the init so every term matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    m.eval()
    return m


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_shapes_and_factor_softmax():
    m = tiny(C=3, D=4)
    p_e = m.entity_affiliation().detach().numpy()
    p_t = m.item_affiliation().detach().numpy()
    assert p_e.shape == (4, 3) and p_t.shape == (5, 3)
    np.testing.assert_allclose(p_e.sum(1), 1, atol=1e-6)
    ze, fe = m.entity_self.weight.detach().numpy(), m.factor_ent.detach().numpy()
    np.testing.assert_allclose(p_e, softmax(cos(ze, fe) / 0.1), atol=1e-5)
    zt, ft = m.item_self.weight.detach().numpy(), m.factor_itm.detach().numpy()
    np.testing.assert_allclose(p_t, softmax(cos(zt, ft) / 0.1), atol=1e-5)
    mu, logvar, y, _ = m.item_entity_segments()
    assert mu.shape == logvar.shape == y.shape == (5, 3, 4)
    seg = m.encode(m.hist_norm, sample=False)
    assert seg["itm_mu"].shape == (3, 3, 4) and seg["ent_mu"].shape == (3, 3, 4)
    s = m.score_users(torch.arange(3))
    assert s.shape == (3, 5) and torch.isfinite(s).all()
    pairs = m(torch.tensor([0, 1, 2]), torch.tensor([4, 0, 2]))
    np.testing.assert_allclose(pairs.detach().numpy(), s[[0, 1, 2], [4, 0, 2]].numpy(), rtol=1e-5)
    u, it = m.embeddings()
    assert u.shape == (3, (3 + 3) * 4) and it.shape == (5, (1 + 3) * 4)
    # C = 1: the non-disentangled ablation, affiliation identically 1
    one = tiny(C=1)
    assert torch.allclose(one.item_affiliation(), torch.ones(5, 1))


def test_decoder_is_eq13_without_first_term():
    m = tiny(C=2, D=4)
    with torch.no_grad():
        seg = m.encode(m.hist_norm, sample=False)
        logits = m.decode(seg).numpy()
    p_t = m.item_affiliation().detach().numpy()
    d, de = m.dec_item.weight.detach().numpy(), m.dec_item_ent.weight.detach().numpy().reshape(5, 2, 4)
    zi, ze = seg["itm_mu"].numpy(), seg["ent_mu"].numpy()
    for u in range(3):
        for t in range(5):
            S = sum(p_t[t, c] * np.exp(zi[u, c] @ d[t]) for c in range(2)) + sum(np.exp(ze[u, c] @ de[t, c]) for c in range(2))
            assert logits[u, t] == pytest.approx(np.log(S), rel=1e-4)


def test_importance_equals_appendix_formula_by_hand():
    m = tiny(C=2, D=4, seed=3)
    u, t = 0, 4
    imp = m.importance(u, t)
    P = {k: v.detach().numpy().astype(np.float64) for k, v in m.state_dict().items()}
    g = 0.1
    p_t = softmax(cos(P["item_self.weight"], P["factor_itm"]) / g)
    p_e = softmax(cos(P["entity_self.weight"], P["factor_ent"]) / g)
    hist = [0, 1, 3]
    n_u = 3
    # z_u^{itm,c}: g over Σ p(j,c)/|N_u| z_j^slf
    x = np.stack([sum(p_t[j, c] * P["item_self.weight"][j] for j in hist) / n_u for c in range(2)])
    h = np.tanh(x @ P["g_itm.hidden.weight"].T + P["g_itm.hidden.bias"])
    z_itm = h @ P["g_itm.mu.weight"].T + P["g_itm.mu.bias"]
    # z_t^{ent,c} for every item, then z_u^{ent,c} = mean over the history
    A = np.zeros((5, 4))
    A[ITEM_ENTITY[:, 0], ITEM_ENTITY[:, 1]] = 1
    y = np.stack([[sum(A[i, e] * p_e[e, c] * P["entity_self.weight"][e] for e in range(4)) / A[i].sum()
                   for c in range(2)] for i in range(5)])
    hy = np.tanh(y @ P["g_ent.hidden.weight"].T + P["g_ent.hidden.bias"])
    z_t_ent = hy @ P["g_ent.mu.weight"].T + P["g_ent.mu.bias"]
    z_ent = z_t_ent[hist].mean(0)
    d_t = P["dec_item.weight"][t]
    d_t_ent = P["dec_item_ent.weight"][t].reshape(2, 4)
    # appendix A.1, item j:  Σ_c p(t,c) exp(<z_u^{itm,c}, z_t>) 1(u,j) p(j,c)/|N_u|
    for j, s in zip(imp["items"], imp["item_scores"]):
        want = sum(p_t[t, c] * np.exp(z_itm[c] @ d_t) * p_t[j, c] / n_u for c in range(2))
        assert s == pytest.approx(want, rel=1e-4)
    # entity j:  Σ_c exp(<z_u^{ent,c}, z_t^{ent,c}>) Σ_{m∈N_u} 1(m,j) p(j,c)/(|N_u||N_m|)
    assert sorted(imp["entities"]) == [0, 1, 3]
    for e, s in zip(imp["entities"], imp["entity_scores"]):
        want = sum(np.exp(z_ent[c] @ d_t_ent[c]) * sum(A[mm, e] * p_e[e, c] / (n_u * A[mm].sum()) for mm in hist)
                   for c in range(2))
        assert s == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="no training history"):
        m.importance(0, 4, history=np.array([], np.int64))


@pytest.fixture(scope="module")
def small_lastfm(lastfm):
    """The first 200 Last.fm users, the artists they played (re-indexed) and those artists'
    real KG entities; a resolved model trained on it for a few epochs (seconds)."""
    keep = lastfm.users < 200
    items, col = np.unique(lastfm.items[keep], return_inverse=True)
    train = sp.csr_matrix((np.ones(keep.sum(), np.float32), (lastfm.users[keep], col)), shape=(200, len(items)))
    train.sum_duplicates()
    train.data[:] = 1
    g = build_entities(lastfm)
    remap = -np.ones(lastfm.n_items, np.int64)
    remap[items] = np.arange(len(items))
    ie = g.item_entity[remap[g.item_entity[:, 0]] >= 0]
    ie = np.stack([remap[ie[:, 0]], ie[:, 1]], 1)
    torch.manual_seed(0)
    m = Resolved(200, len(items), train, ie, g.n_entities, g.entity_entity,
                 ResolvedConfig(anneal_epochs=0, beta=0.2))
    hist = fit(m, train, None, TrainConfig(seed=0, epochs=8, lr=1e-2, batch_size=50, reg=1e-8, eval_every=5),
               objective=ELBO(), progress=False)
    return m, train, hist


def test_elbo_decreases_on_small_real_subset(small_lastfm):
    m, train, hist = small_lastfm
    losses = [r["loss"] for r in hist.epochs]
    nll = [r["nll"] for r in hist.epochs]
    assert losses[-1] < losses[0] - 1.0, losses
    assert nll[-1] < nll[0], nll
    # the per-batch objective is finite and has every term
    with torch.no_grad():
        terms = elbo_step_loss(m, torch.arange(10), 0.2, 1e-8, sample=False)
    assert all(torch.isfinite(v) for v in terms.values())


def test_removing_top_item_hurts_more_than_lowest(small_lastfm):
    m, train, _ = small_lastfm
    m.eval()
    users = [u for u in range(200) if train[u].nnz >= 3][:40]
    scores = m.score_users(torch.tensor(users)).numpy()
    scores[train[users].toarray() > 0] = -np.inf
    drop_top, drop_low = [], []
    for r, u in enumerate(users):
        t = int(np.argmax(scores[r]))
        imp = m.importance(u, t)
        hist = imp["items"]
        base = imp["score"]
        hi, lo = hist[np.argmax(imp["item_scores"])], hist[np.argmin(imp["item_scores"])]
        rows = sp.csr_matrix(np.stack([np.isin(np.arange(m.n_items), hist[hist != x]) for x in (hi, lo)]).astype(np.float32))
        after = m.score_histories(rows)[:, t].numpy()
        drop_top.append(base - after[0])
        drop_low.append(base - after[1])
    assert np.mean(drop_top) > np.mean(drop_low), (np.mean(drop_top), np.mean(drop_low))


def test_entities_lastfm_and_movielens(lastfm, ml100k, mlsmall):
    g = build_entities(lastfm)
    assert g.source == "kg" and g.n_entities >= 5520 and len(g.entity_entity) == 0
    assert g.item_entity[:, 0].max() < lastfm.n_items and g.item_entity[:, 1].max() < g.n_entities
    assert len(np.unique(g.item_entity, axis=0)) == len(g.item_entity)
    assert sum(n.startswith("kg:") for n in g.names) == 5520  # the seed's Table 1 "#entities"
    back = entity_graph_from_arrays(g.to_arrays())
    assert back.n_entities == g.n_entities and np.array_equal(back.item_entity, g.item_entity)
    ml = build_entities(ml100k)
    assert "genre=Comedy" in ml.names and "year=1990s" in ml.names and not any("unknown" in n for n in ml.names)
    toy = ml.names.index("genre=Animation")
    assert toy in ml.item_entity[ml.item_entity[:, 0] == 0, 1]  # Toy Story is animation
    small = build_entities(mlsmall)
    assert any(n.startswith("tag=") for n in small.names)


def test_no_entity_side_is_an_error(lastfm):
    from dataclasses import replace

    bare = replace(lastfm, kg_triples=None, n_entities=0, item_features=None, item_tags=None)
    with pytest.raises(DataError, match="neither a knowledge graph nor item attributes"):
        build_entities(bare)
