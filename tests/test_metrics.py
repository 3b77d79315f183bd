"""Tests for whyrec.evaluate (full-ranking top-K metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.evaluate import evaluate_ranking, per_user_metrics, top_k_items

GOWALLA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "gowalla"
L3 = math.log2(3)  # discount of 0-based rank 1 is 1/log2(3) = 0.6309298; rank 2: 1/log2(4) = 0.5


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


# --------------------------------------------------------------------------- #
# hand-computed case: 4 users x 6 items
# --------------------------------------------------------------------------- #
SCORES = np.array([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # u0 raw order 0,1,2,3,4,5
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # u1 raw order 5,4,3,2,1,0
    [0.5, 0.9, 0.1, 0.8, 0.3, 0.7],  # u2 raw order 1,3,5,0,4,2
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # u3 loves item 3 but has no test items
])
TRAIN = csr([[0], [], [1, 3], []], 6)       # u1 has no training items (nothing masked)
TEST = csr([[3, 5], [5], [0, 2, 4], []], 6)  # u3 has no test items -> not evaluated
# After masking: u0 ranks 1,2,3,4,5 ; u1 ranks 5,4,3,2,1,0 ; u2 ranks 5,0,4,2
# K=2: u0 top [1,2] rel [0,0]; u1 top [5,4] rel [1,0]; u2 top [5,0] rel [0,1]
# K=3: u0 top [1,2,3] rel [0,0,1]; u1 [5,4,3] rel [1,0,0]; u2 [5,0,4] rel [0,1,1]


def test_hand_computed_per_user():
    pu = per_user_metrics(SCORES, TRAIN, TEST, ks=(2, 3))
    np.testing.assert_array_equal(pu["users"], [0, 1, 2])
    np.testing.assert_array_equal(pu["n_test"], [2, 1, 3])
    # recall = hits / |T_u|
    np.testing.assert_allclose(pu["recall@2"], [0 / 2, 1 / 1, 1 / 3])
    np.testing.assert_allclose(pu["recall@3"], [1 / 2, 1 / 1, 2 / 3])
    # precision = hits / K
    np.testing.assert_allclose(pu["precision@2"], [0 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(pu["precision@3"], [1 / 3, 1 / 3, 2 / 3])
    # ndcg@2: u0 0; u1 (1/log2 2)/IDCG(min(2,1)=1 -> 1) = 1;
    #         u2 (1/log2 3)/IDCG(min(2,3)=2 -> 1 + 1/log2 3) = 0.6309298/1.6309298 = 0.3868528
    np.testing.assert_allclose(pu["ndcg@2"], [0.0, 1.0, 0.38685280723454163])
    # ndcg@3: u0 (1/log2 4)/(1 + 1/log2 3) = 0.5/1.6309298 = 0.3065736   (IDCG over min(3,2)=2)
    #         u1 1/1 = 1
    #         u2 (1/log2 3 + 1/log2 4)/(1 + 1/log2 3 + 1/log2 4) = 1.1309298/2.1309298 = 0.5307213
    np.testing.assert_allclose(pu["ndcg@3"], [0.3065735963827292, 1.0, 0.5307212739772434])
    np.testing.assert_allclose(pu["ndcg@3"][2], (1 / L3 + 0.5) / (1 + 1 / L3 + 0.5))
    np.testing.assert_allclose(pu["hit_rate@2"], [0, 1, 1])
    np.testing.assert_allclose(pu["hit_rate@3"], [1, 1, 1])
    # mrr: first hit at 1-based rank 3 (u0, only within K=3), 1 (u1), 2 (u2)
    np.testing.assert_allclose(pu["mrr@2"], [0, 1, 1 / 2])
    np.testing.assert_allclose(pu["mrr@3"], [1 / 3, 1, 1 / 2])


def test_hand_computed_means_and_coverage():
    res = evaluate_ranking(SCORES, TRAIN, TEST, ks=(2, 3))
    assert res["n_users"] == 3
    assert res["recall@2"] == pytest.approx((0 + 1 + 1 / 3) / 3)              # 0.444444
    assert res["precision@2"] == pytest.approx((0 + 0.5 + 0.5) / 3)           # 0.333333
    assert res["ndcg@2"] == pytest.approx((0 + 1 + 0.38685280723) / 3)        # 0.462284
    assert res["hit_rate@2"] == pytest.approx(2 / 3)
    assert res["mrr@2"] == pytest.approx((0 + 1 + 0.5) / 3)                   # 0.5
    assert res["recall@3"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)            # 0.722222
    assert res["precision@3"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)   # 0.444444
    assert res["ndcg@3"] == pytest.approx((0.30657359638 + 1 + 0.53072127398) / 3)  # 0.612432
    assert res["hit_rate@3"] == pytest.approx(1.0)
    assert res["mrr@3"] == pytest.approx((1 / 3 + 1 + 0.5) / 3)               # 0.611111
    # coverage@2: {1,2} u {5,4} u {5,0} = {0,1,2,4,5} -> 5/6.  Item 3 is the
    # favourite of u3, who has no test items and so must not count.
    assert res["coverage@2"] == pytest.approx(5 / 6)
    # coverage@3: {1,2,3} u {5,4,3} u {5,0,4} = all 6 items
    assert res["coverage@3"] == pytest.approx(1.0)
    expected_keys = {f"{m}@{k}" for m in ("recall", "precision", "ndcg", "hit_rate", "mrr", "coverage")
                     for k in (2, 3)} | {"n_users"}
    assert set(res) == expected_keys


def test_train_masking_changes_result():
    empty = csr([[], [], [], []], 6)
    res = evaluate_ranking(SCORES, empty, TEST, ks=(2,))
    # unmasked K=2: u0 top [0,1] rel [0,0]; u1 [5,4] rel [1,0]; u2 [1,3] rel [0,0]
    assert res["recall@2"] == pytest.approx((0 + 1 + 0) / 3)
    assert res["mrr@2"] == pytest.approx((0 + 1 + 0) / 3)
    assert res["coverage@2"] == pytest.approx(5 / 6)  # {0,1} u {5,4} u {1,3}
    masked = evaluate_ranking(SCORES, TRAIN, TEST, ks=(2,))
    assert masked["recall@2"] != pytest.approx(res["recall@2"])


def test_users_subset_and_duplicates():
    res = evaluate_ranking(SCORES, TRAIN, TEST, ks=(2,), users=[2, 3, 2])
    # u3 has no test items -> only u2 evaluated
    assert res["n_users"] == 1
    assert res["recall@2"] == pytest.approx(1 / 3)
    assert res["coverage@2"] == pytest.approx(2 / 6)  # {5, 0}
    none = evaluate_ranking(SCORES, TRAIN, TEST, ks=(2,), users=[3])
    assert none["n_users"] == 0 and none["recall@2"] == 0.0 and none["coverage@2"] == 0.0


def test_masked_items_in_top_list_never_count():
    # user 0 has 5 of 6 items in train, and (overlap on purpose) every item is
    # also a test item. With K=3 the top list holds item 5 then two masked
    # (-inf) items: those are neither hits nor covered.
    train = csr([[0, 1, 2, 3, 4]], 6)
    test = csr([[0, 1, 2, 3, 4, 5]], 6)
    scores = np.arange(6, dtype=np.float64)[None, ::-1].copy()  # item 0 best
    res = evaluate_ranking(scores, train, test, ks=(3,))
    assert res["recall@3"] == pytest.approx(1 / 6)      # only item 5 counts
    assert res["precision@3"] == pytest.approx(1 / 3)
    assert res["ndcg@3"] == pytest.approx(1 / (1 + 1 / L3 + 0.5))  # DCG 1 / IDCG over 3 ranks
    assert res["mrr@3"] == pytest.approx(1.0)
    assert res["coverage@3"] == pytest.approx(1 / 6)
    items, vals = top_k_items(scores, train, 3, [0])
    assert items[0, 0] == 5 and np.isneginf(vals[0, 1:]).all()


# --------------------------------------------------------------------------- #
# brute-force reference
# --------------------------------------------------------------------------- #
def brute_force(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, ks) -> dict:
    """Plain per-user numpy implementation of the documented definitions."""
    n_users, n_items = scores.shape
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "precision", "ndcg", "hit_rate", "mrr")}
    covered = {k: set() for k in ks}
    n = 0
    for u in range(n_users):
        t = set(test[u].indices.tolist())
        if not t:
            continue
        n += 1
        s = scores[u].astype(np.float64).copy()
        s[train[u].indices] = -np.inf
        order = np.argsort(-s, kind="stable")
        for k in ks:
            top = order[:k]
            rel = np.array([1.0 if i in t else 0.0 for i in top])
            h = rel.sum()
            out[f"recall@{k}"].append(h / len(t))
            out[f"precision@{k}"].append(h / k)
            dcg = sum(rel[i] / math.log2(i + 2) for i in range(k))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(t))))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"hit_rate@{k}"].append(float(h > 0))
            first = np.flatnonzero(rel)
            out[f"mrr@{k}"].append(1.0 / (first[0] + 1) if len(first) else 0.0)
            covered[k].update(top.tolist())
    res = {key: float(np.mean(v)) for key, v in out.items()}
    for k in ks:
        res[f"coverage@{k}"] = len(covered[k]) / n_items
    res["n_users"] = n
    res["_per_user"] = {key: np.array(v) for key, v in out.items()}
    return res


def random_problem(n_users=200, n_items=500, seed=0, p_train=0.05, p_test=0.02):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    r = rng.random((n_users, n_items))
    train = sp.csr_matrix((r < p_train).astype(np.float32))
    test = sp.csr_matrix(((r >= p_train) & (r < p_train + p_test)).astype(np.float32))
    # make sure some users have no test items and some have no train items
    test = sp.lil_matrix(test)
    test[:5] = 0
    train = sp.lil_matrix(train)
    train[5:10] = 0
    return scores, sp.csr_matrix(train), sp.csr_matrix(test)


KS = (1, 5, 20, 50)


@pytest.fixture(scope="module")
def problem():
    scores, train, test = random_problem()
    return scores, train, test, brute_force(scores, train, test, KS)


def test_matches_brute_force(problem):
    scores, train, test, ref = problem
    assert ref["n_users"] == int((np.diff(test.indptr) > 0).sum()) < 200
    res = evaluate_ranking(scores, train, test, ks=KS)
    assert res["n_users"] == ref["n_users"]
    for key, v in res.items():
        assert v == pytest.approx(ref[key], abs=1e-6), key
    pu = per_user_metrics(scores, train, test, ks=KS)
    for key, arr in ref["_per_user"].items():
        np.testing.assert_allclose(pu[key], arr, atol=1e-6, err_msg=key)


def test_callable_and_batch_sizes_agree(problem):
    scores, train, test, ref = problem
    base = evaluate_ranking(scores, train, test, ks=KS, batch_size=10_000)
    t = torch.from_numpy(scores)
    seen = []

    def f(u: torch.Tensor) -> torch.Tensor:
        assert u.dtype == torch.long
        seen.append(len(u))
        return t[u] * 1.0  # fresh tensor

    via_callable = evaluate_ranking(f, train, test, ks=KS, batch_size=7)
    assert max(seen) <= 7 and sum(seen) == ref["n_users"]
    via_tensor = evaluate_ranking(t, train, test, ks=KS, batch_size=7)
    via_f64 = evaluate_ranking(scores.astype(np.float64), train, test, ks=KS, batch_size=33)
    for key in base:
        assert via_callable[key] == pytest.approx(base[key], abs=1e-12), key
        assert via_tensor[key] == pytest.approx(base[key], abs=1e-12), key
        assert via_f64[key] == pytest.approx(base[key], abs=1e-12), key


def test_callable_returning_view_and_grad_model_is_safe(problem):
    scores, train, test, _ = problem
    emb_u = torch.nn.Parameter(torch.randn(200, 8))
    emb_i = torch.nn.Parameter(torch.randn(500, 8))

    def model(u):  # requires grad outside no_grad: evaluator must not build graphs
        return emb_u[u] @ emb_i.T

    res = evaluate_ranking(model, train, test, ks=(5,), batch_size=64)
    dense = (emb_u @ emb_i.T).detach().numpy()
    assert res == pytest.approx(evaluate_ranking(dense, train, test, ks=(5,)))
    # a callable returning a broadcast view of shared memory must not be written into
    row = torch.arange(500, dtype=torch.float32)
    res2 = evaluate_ranking(lambda u: row.expand(len(u), -1), train, test, ks=(5,), batch_size=16)
    assert torch.equal(row, torch.arange(500, dtype=torch.float32))
    assert 0.0 <= res2["recall@5"] <= 1.0


def test_top_k_items(problem):
    scores, train, test, _ = problem
    users = [17, 3, 17, 199, 0]
    items, vals = top_k_items(scores, train, 10, users, batch_size=2)
    assert items.shape == (5, 10) and vals.shape == (5, 10) and items.dtype == np.int64
    for row, u in enumerate(users):
        s = scores[u].astype(np.float64).copy()
        s[train[u].indices] = -np.inf
        np.testing.assert_array_equal(items[row], np.argsort(-s, kind="stable")[:10])
        np.testing.assert_allclose(vals[row], s[items[row]])
        assert not set(items[row]) & set(train[u].indices)
    items2, _ = top_k_items(scores, train, 10, users, exclude_train=False)
    np.testing.assert_array_equal(items2[0], np.argsort(-scores[17], kind="stable")[:10])
    items3, _ = top_k_items(scores, None, 10, users, exclude_train=False)
    np.testing.assert_array_equal(items2, items3)


# --------------------------------------------------------------------------- #
# PyG
# --------------------------------------------------------------------------- #
def test_agrees_with_pyg(problem):
    pyg = pytest.importorskip("torch_geometric.metrics")
    scores, train, test, _ = problem
    ks = (5, 20)
    res = evaluate_ranking(scores, train, test, ks=ks)
    # Independent top-k (numpy argsort after masking), fed to PyG as
    # pred_index_mat; ground truth as COO edge_label_index (row = user).
    s = scores.astype(np.float64).copy()
    s[train.nonzero()] = -np.inf
    pred = torch.from_numpy(np.argsort(-s, axis=1, kind="stable")[:, :max(ks)].copy())
    coo = test.tocoo()
    label = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    # PyG agrees with our (LightGCN) definitions on these metrics:
    # * Recall = hits/|T_u|, Precision = hits/K, HitRatio = [hits>0];
    # * NDCG: PyG's IDCG is cumsum(1/log2(i+2)) indexed by min(|T_u|, K), i.e.
    #   IDCG over min(K, |T_u|) positions -- the same as ours;
    # * MRR: PyG takes max_j rel_j/(j+1) = 1/(first hit rank) within top K -- same;
    # * every LinkPredMetric averages over examples with >= 1 label, i.e. users
    #   with no test items are skipped, as here;
    # * Coverage: unique predicted items / num_dst_nodes -- same, except PyG
    #   also counts masked (-inf) positions (none here: every user has >= 50
    #   unmasked items).
    # PyG accumulates in float32, hence the 1e-5 tolerance.
    # Not compared: LinkPredMAP / F1 (not computed here), weighted NDCG.
    for k in ks:
        metrics = {
            "recall": pyg.LinkPredRecall(k), "precision": pyg.LinkPredPrecision(k),
            "ndcg": pyg.LinkPredNDCG(k), "mrr": pyg.LinkPredMRR(k),
            "hit_rate": pyg.LinkPredHitRatio(k),
            "coverage": pyg.LinkPredCoverage(k, num_dst_nodes=scores.shape[1]),
        }
        evaluated = np.diff(test.indptr) > 0
        for name, m in metrics.items():
            if name == "coverage":  # coverage is over evaluated users only
                rows = torch.from_numpy(np.flatnonzero(evaluated))
                m.update(pred[rows], label)
            else:
                m.update(pred, label)
            assert float(m.compute()) == pytest.approx(res[f"{name}@{k}"], abs=1e-5), f"{name}@{k}"


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("ks, msg", [
    ((0,), "positive int"), ((-3,), "positive int"), ((2.5,), "positive int"), ((True,), "positive int"),
    (("a",), "positive int"), ((), "empty"), ((7,), "larger than the number of items"), (None, "ks"),
])
def test_bad_ks(ks, msg):
    with pytest.raises(ValueError, match=msg):
        evaluate_ranking(SCORES, TRAIN, TEST, ks=ks)


def test_shape_and_input_errors():
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(SCORES[:, :5], TRAIN, TEST, ks=(2,))
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(SCORES[:3], TRAIN, TEST, ks=(2,))
    with pytest.raises(ValueError, match="train has shape"):
        evaluate_ranking(SCORES, TRAIN, csr([[1]] * 4, 7), ks=(2,))
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_ranking(lambda u: torch.zeros(len(u), 5), TRAIN, TEST, ks=(2,))
    with pytest.raises(ValueError, match="scipy.sparse"):
        evaluate_ranking(SCORES, TRAIN.toarray(), TEST, ks=(2,))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_ranking(SCORES, TRAIN, TEST, ks=(2,), batch_size=0)
    with pytest.raises(ValueError, match="user ids"):
        evaluate_ranking(SCORES, TRAIN, TEST, ks=(2,), users=[0, 4])
    with pytest.raises(ValueError, match="larger than the number of items"):
        top_k_items(SCORES, TRAIN, 7, [0])
    with pytest.raises(ValueError, match="single positive int"):
        top_k_items(SCORES, TRAIN, (2, 3), [0])
    with pytest.raises(ValueError, match="train is required"):
        top_k_items(SCORES, None, 2, [0])


# --------------------------------------------------------------------------- #
# real data: Gowalla (LightGCN split)
# --------------------------------------------------------------------------- #
def _load_lines(path: Path):
    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.array(parts[1:], dtype=np.int64)
            rows.append(np.full(len(items), int(parts[0]), dtype=np.int64))
            cols.append(items)
    return np.concatenate(rows), np.concatenate(cols)


@pytest.mark.slow
@pytest.mark.skipif(not (GOWALLA / "train.txt").exists(), reason="Gowalla files not available")
def test_gowalla_random_and_oracle():
    (tr_r, tr_c), (te_r, te_c) = _load_lines(GOWALLA / "train.txt"), _load_lines(GOWALLA / "test.txt")
    shape = (29858, 40981)
    assert max(tr_r.max(), te_r.max()) + 1 == shape[0] and max(tr_c.max(), te_c.max()) + 1 == shape[1]
    train = sp.csr_matrix((np.ones(len(tr_r), np.float32), (tr_r, tr_c)), shape=shape)
    test = sp.csr_matrix((np.ones(len(te_r), np.float32), (te_r, te_c)), shape=shape)
    users = np.arange(2000)

    g = torch.Generator().manual_seed(0)
    emb_u, emb_i = torch.randn(shape[0], 64, generator=g), torch.randn(shape[1], 64, generator=g)
    res = evaluate_ranking(lambda u: emb_u[u] @ emb_i.T, train, test, ks=(20,), users=users)
    assert res["n_users"] == int((np.diff(test.indptr)[:2000] > 0).sum()) > 1900
    # random ranking: expected recall@20 ~ 20 / (n_items - |train_u|) ~ 5e-4
    assert 0.0 <= res["recall@20"] < 0.01
    assert res["ndcg@20"] < 0.01 and res["precision@20"] < 0.01 and res["hit_rate@20"] < 0.1
    assert res["coverage@20"] > 0.3  # 2000 random top-20 lists spread over the catalogue

    # oracle ("cheating") scorer: score = test matrix row -> every test item ranked first
    def oracle(u):
        return torch.from_numpy(test[u.numpy()].toarray())

    res = evaluate_ranking(oracle, train, test, ks=(20,), users=users, batch_size=512)
    n_t = np.diff(test.indptr)[:2000]
    n_t = n_t[n_t > 0]
    assert res["recall@20"] == pytest.approx(np.mean(np.minimum(20, n_t) / n_t), abs=1e-12)
    assert res["precision@20"] == pytest.approx(np.mean(np.minimum(20, n_t) / 20), abs=1e-12)
    assert res["ndcg@20"] == pytest.approx(1.0, abs=1e-12)
    assert res["mrr@20"] == res["hit_rate@20"] == 1.0
