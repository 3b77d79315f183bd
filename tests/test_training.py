"""whyrec.train: negative sampling, BPR/L2, the fit loop, a real learning check."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from whyrec.models import MF, LightGCN, LightGCNConfig, MFConfig, Popularity
from whyrec.train import TrainConfig, UniformNegativeSampler, bpr_loss, fit, l2_reg

DATASETS = Path(os.environ.get("WHYREC_DATASETS",
                               Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing (set WHYREC_DATASETS)")
    return path


# --------------------------------------------------------------------------- #
# negative sampling
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def gowalla_train() -> sp.csr_matrix:
    rows, cols = [], []
    with open(_need(DATASETS / "gowalla" / "train.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.asarray(parts[1:], dtype=np.int64)
            rows.append(np.full(items.size, int(parts[0]), dtype=np.int64))
            cols.append(items)
    r, c = np.concatenate(rows), np.concatenate(cols)
    R = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(29858, 40981))
    assert R.nnz == 810_128
    return R


def test_sampler_never_returns_a_positive_on_gowalla(gowalla_train):
    R = gowalla_train
    s = UniformNegativeSampler(R, seed=7)
    users, pos, neg = s.sample_epoch(0)
    assert len(users) == R.nnz
    coo = R.tocoo()
    train_keys = coo.row.astype(np.int64) * R.shape[1] + coo.col
    # independent membership check (np.isin, not the sampler's searchsorted)
    assert not np.isin(users * R.shape[1] + neg, train_keys).any()
    assert np.isin(users * R.shape[1] + pos, train_keys).all()
    # every training interaction exactly once, shuffled
    assert np.array_equal(np.sort(users * R.shape[1] + pos), np.sort(train_keys))
    assert not np.array_equal(users, np.sort(users))
    assert neg.min() >= 0 and neg.max() < R.shape[1]
    # the authors' sampler: as many samples, every positive a training pair, no negative one
    users, pos, neg = UniformNegativeSampler(R, seed=7, positives="users").sample_epoch(0)
    assert len(users) == R.nnz
    assert np.isin(users * R.shape[1] + pos, train_keys).all()
    assert not np.isin(users * R.shape[1] + neg, train_keys).any()
    # ~uniform over the 29,858 users (~27 draws each), whatever their degree
    counts = np.bincount(users, minlength=R.shape[0])
    assert counts.min() > 0 and abs(counts.mean() - R.nnz / R.shape[0]) < 1e-9 and counts.std() < 1.2 * counts.mean() ** 0.5


def test_sampler_is_uniform_over_non_positives():
    R = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
                                [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.float32))
    s = UniformNegativeSampler(R, seed=0)
    n = 140_000
    neg = s.negatives(np.zeros(n, dtype=np.int64), np.random.default_rng(1))
    counts = np.bincount(neg, minlength=10)
    assert counts[:3].sum() == 0
    expected = n / 7
    chi2 = ((counts[3:] - expected) ** 2 / expected).sum()
    assert chi2 < 30, counts  # 6 dof: p ~ 4e-5 at 30
    neg1 = s.negatives(np.ones(n, dtype=np.int64), np.random.default_rng(2))
    assert (neg1 != 9).all() and np.abs(np.bincount(neg1, minlength=10)[:9] / n - 1 / 9).max() < 0.01


def test_sampler_is_deterministic():
    R = sp.random(50, 80, density=0.2, random_state=0, format="csr")
    a = UniformNegativeSampler(R, seed=3).sample_epoch(5)
    b = UniformNegativeSampler(R, seed=3).sample_epoch(5)
    c = UniformNegativeSampler(R, seed=3).sample_epoch(6)
    d = UniformNegativeSampler(R, seed=4).sample_epoch(5)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[2], c[2]) and not np.array_equal(a[2], d[2])


@pytest.mark.parametrize("density", [0.05, 0.4])
def test_membership_kernel_and_key_searches_agree(monkeypatch, density):
    """``is_positive`` three ways -- the compiled search of each user's row (on 1 and 3 threads; rows of ~25
    items: the kernel's scan, of ~200: its binary search), and without it
    the search of all keys with the queries sorted first (packed ``np.sort``, or ``argsort`` when value and
    position do not fit in 63 bits) or not: the same answers as np.isin, the same epoch's samples; a user id
    outside the matrix has no items."""
    import torch

    import whyrec.train.sampling as sampling

    R = sp.random(300, 500, density=density, random_state=1, format="csr")
    s = UniformNegativeSampler(R, seed=3, positives="users")
    rng = np.random.default_rng(0)
    coo = R.tocoo()
    hit = rng.integers(0, R.nnz, 50_000)
    users = np.concatenate([rng.integers(0, 300, 50_000), coo.row[hit]]).astype(np.int64)
    items = np.concatenate([rng.integers(0, 500, 50_000), coo.col[hit]]).astype(np.int64)
    truth = np.isin(users * 500 + items, coo.row.astype(np.int64) * 500 + coo.col)
    assert 50_000 < truth.sum() < 100_000
    epochs = []
    if sampling._membership() is not None:
        old = torch.get_num_threads()
        try:
            for threads in (1, 3):
                torch.set_num_threads(threads)
                assert np.array_equal(s.is_positive(users, items), truth)
        finally:
            torch.set_num_threads(old)
        assert not s.is_positive(np.array([-1, 300, 10**9]), np.array([0, 0, 0])).any()
        epochs.append(s.sample_epoch(2))
    monkeypatch.setattr(sampling, "_membership", lambda: None)  # the searches of all keys
    assert np.array_equal(s.is_positive(users, items), truth)
    order, qs = sampling._sorted_order(users * 500 + items, 300 * 500)
    assert np.array_equal(qs, np.sort(users * 500 + items)) and np.array_equal((users * 500 + items)[order], qs)
    order2, qs2 = sampling._sorted_order(users * 500 + items, 1 << 62)  # too large to pack: argsort
    assert np.array_equal(qs2, qs) and np.array_equal(np.sort(order2), np.arange(users.size))
    epochs.append(s.sample_epoch(2))
    monkeypatch.setattr(sampling, "SORTED_QUERIES_MIN", 1 << 62)  # never sort
    assert np.array_equal(s.is_positive(users, items), truth)
    epochs.append(UniformNegativeSampler(R, seed=3, positives="users").sample_epoch(2))
    for other in epochs[1:]:
        for x, y in zip(epochs[0], other):
            assert np.array_equal(x, y)


def test_sampler_rejects_user_with_every_item():
    R = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="every item"):
        UniformNegativeSampler(R)


def test_user_uniform_positives_by_hand():
    """``positives="users"`` (the LightGCN authors' sampler): users with a training item are equally
    likely whatever their degree (user 1 has none), and each user's positives are equally likely."""
    R = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0],   # degree 6
                                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # no training item: never drawn
                                [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],   # degree 1
                                [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]],  # degree 2
                               dtype=np.float32))
    s = UniformNegativeSampler(R, seed=0, positives="users")
    users, pos, neg = (np.concatenate(x) for x in zip(*(s.sample_epoch(e) for e in range(3000))))
    assert users.size == 3000 * R.nnz
    counts = np.bincount(users, minlength=4)
    assert counts[1] == 0
    expected = users.size / 3
    chi2 = ((counts[[0, 2, 3]] - expected) ** 2 / expected).sum()
    assert chi2 < 20, counts  # 2 dof: p ~ 5e-5 at 20
    # every (user, positive) is a training pair, every negative is not
    dense = R.toarray().astype(bool)
    assert dense[users, pos].all() and not dense[users, neg].any()
    # within user 0 the six positives are equally likely; user 3's two as well
    c0 = np.bincount(pos[users == 0], minlength=10)[:6]
    assert np.abs(c0 / c0.sum() - 1 / 6).max() < 0.01
    c3 = np.bincount(pos[users == 3], minlength=10)[6:8]
    assert abs(c3[0] / c3.sum() - 0.5) < 0.01
    # the default pass over interactions weights users by degree instead
    u_int = UniformNegativeSampler(R, seed=0).sample_epoch(0)[0]
    assert np.array_equal(np.bincount(u_int, minlength=4), [6, 0, 1, 2])
    with pytest.raises(ValueError, match="positives must be one of"):
        UniformNegativeSampler(R, positives="edges")


# --------------------------------------------------------------------------- #
# losses
# --------------------------------------------------------------------------- #
def test_bpr_loss_by_hand():
    pos = torch.tensor([1.0, 0.0, 3.0])
    neg = torch.tensor([0.0, 2.0, 3.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -(math.log(sig(1.0)) + math.log(sig(-2.0)) + math.log(sig(0.0))) / 3
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    # numerically stable for large margins
    assert torch.isfinite(bpr_loss(torch.tensor([-200.0]), torch.tensor([200.0])))
    assert bpr_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item() == pytest.approx(400.0)


def test_l2_by_hand():
    u = torch.tensor([[1.0, 2.0], [0.0, 1.0]])   # ‖·‖² = 6
    i = torch.tensor([[3.0, 0.0], [0.0, 0.0]])   # 9
    j = torch.tensor([[1.0, 1.0], [1.0, 1.0]])   # 4
    assert l2_reg(1e-4, 2, u, i, j).item() == pytest.approx(1e-4 * 0.5 * 19 / 2, rel=1e-6)


def test_cosine_schedule_by_hand_and_in_the_optimizer():
    from whyrec.train.loop import epoch_lr

    cfg = TrainConfig(epochs=4, lr=0.02, lr_min=0.002, lr_schedule="cosine")
    # lr_min + (lr - lr_min)(1 + cos(pi (e - 1) / 4)) / 2 for e = 1..4
    want = [0.02, 0.002 + 0.018 * (1 + math.sqrt(0.5)) / 2, 0.011, 0.002 + 0.018 * (1 - math.sqrt(0.5)) / 2]
    assert [epoch_lr(cfg, e) for e in range(1, 5)] == pytest.approx(want, rel=1e-12)
    assert epoch_lr(TrainConfig(lr=0.003), 17) == 0.003
    R, _ = _small()
    hist = fit(MF(30, 40, MFConfig(dim=4)), R, None, cfg, progress=False)
    assert [row["lr"] for row in hist.epochs] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        fit(MF(30, 40), R, None, TrainConfig(epochs=1, lr_schedule="step"), progress=False)


def test_minibatch_steps_means_and_one_step_per_batch():
    from whyrec.train.loop import minibatch_steps

    w = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([w], lr=0.1)
    x = torch.arange(5.0)  # batches [0, 1], [2, 3], [4]
    seen = []

    def loss(xb):
        seen.append(xb.tolist())
        a, b = (w * xb).sum(), torch.tensor(1.0)
        return {"a": a, "b": b, "loss": a + b}

    row = minibatch_steps(opt, (x,), 2, loss)
    assert seen == [[0.0, 1.0], [2.0, 3.0], [4.0]]
    # w: 1 -> 1 - 0.1*1 = 0.9 -> 0.9 - 0.1*5 = 0.4; a = 1*1, 0.9*5, 0.4*4
    assert w.item() == pytest.approx(0.4 - 0.1 * 4, abs=1e-6)
    assert row["a"] == pytest.approx((1.0 + 4.5 + 1.6) / 3) and row["b"] == pytest.approx(1.0)
    assert row["loss"] == pytest.approx(row["a"] + row["b"])


# --------------------------------------------------------------------------- #
# the fit loop
# --------------------------------------------------------------------------- #
def _small():
    R = sp.random(30, 40, density=0.15, random_state=1, format="csr")
    R.data[:] = 1
    V = sp.random(30, 40, density=0.05, random_state=2, format="csr")
    V.data[:] = 1
    V = V - V.multiply(R)
    V.eliminate_zeros()
    return R.tocsr(), V.tocsr()


def test_early_stopping_restores_best_weights(tmp_path):
    R, V = _small()
    torch.manual_seed(0)
    m = MF(30, 40, MFConfig(dim=8))
    seq = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snapshots = {}

    def fake_eval(model, train, valid, ks):
        v = next(seq)
        snapshots[v] = model.user_emb.weight.detach().clone()
        return {"recall@20": v, "ndcg@20": v / 2}

    h = fit(m, R, V, TrainConfig(epochs=10, eval_every=1, patience=2, lr=0.05, batch_size=64),
            out_dir=tmp_path, progress=False, evaluate=fake_eval)
    assert h.stopped_early and len(h.epochs) == 4
    assert h.best_epoch == 2 and h.best_score == 0.3
    assert torch.equal(m.user_emb.weight, snapshots[0.3])
    assert not m.training
    import pandas as pd

    df = pd.read_csv(tmp_path / "curves.csv")
    assert list(df["epoch"]) == [1, 2, 3, 4] and "recall@20" in df and "loss" in df
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_fit_with_shared_evaluator():
    pytest.importorskip("whyrec.evaluate.ranking")
    R, V = _small()
    torch.manual_seed(0)
    m = LightGCN(30, 40, LightGCNConfig(dim=8, n_layers=2))  # graph set by fit
    h = fit(m, R, V, TrainConfig(epochs=2, eval_every=1, batch_size=64, ks=(5, 20)), progress=False)
    assert m.adj is not None
    assert len(h.evals) == 2 and "recall@20" in h.evals[0][1] and "ndcg@5" in h.evals[0][1]
    assert h.losses[1] < h.losses[0] + 1e-3


# --------------------------------------------------------------------------- #
# real learning check on MovieLens 100K
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def ml100k_split():
    d = np.loadtxt(_need(DATASETS / "ml-100k" / "u.data"), dtype=np.int64)
    d = d[d[:, 2] >= 4]  # positives: rating >= 4
    users, items = d[:, 0] - 1, d[:, 1] - 1
    U, I = 943, 1682
    rng = np.random.default_rng(0)
    is_train = np.zeros(len(users), dtype=bool)
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(U + 1))
    for u in range(U):  # per-user random 80/20 split
        idx = order[bounds[u]:bounds[u + 1]].copy()
        rng.shuffle(idx)
        is_train[idx[: int(round(0.8 * len(idx)))]] = True
    mk = lambda m: sp.csr_matrix((np.ones(m.sum(), np.float32), (users[m], items[m])), shape=(U, I))  # noqa
    return mk(is_train), mk(~is_train)


def local_recall(model, train, test, k=20) -> float:
    with torch.no_grad():
        s = model.score_users(torch.arange(train.shape[0])).clone()
    rows = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    s[torch.from_numpy(rows), torch.from_numpy(train.indices.astype(np.int64))] = -float("inf")
    top = s.topk(k, dim=1).indices.numpy()
    rec = []
    for u in range(train.shape[0]):
        t = test.indices[test.indptr[u]:test.indptr[u + 1]]
        if t.size:
            rec.append(np.isin(top[u], t).sum() / t.size)
    return float(np.mean(rec))


@pytest.fixture(scope="module")
def trained_ml100k(ml100k_split):
    train, test = ml100k_split
    torch.manual_seed(0)
    m = LightGCN(943, 1682, LightGCNConfig(dim=64, n_layers=3), graph=train)
    cfg = TrainConfig(epochs=15, lr=1e-2, batch_size=2048, eval_every=5, patience=None, num_threads=1)
    h = fit(m, train, test, cfg, progress=False,
            evaluate=lambda model, tr, te, ks: {"recall@20": local_recall(model, tr, te)})
    return m, h


def test_lightgcn_learns_ml100k(ml100k_split, trained_ml100k):
    train, test = ml100k_split
    assert train.nnz > 40_000 and test.nnz > 10_000
    m, h = trained_ml100k
    pop = local_recall(Popularity(train), train, test)
    lgn = local_recall(m, train, test)
    recalls = [e[1]["recall@20"] for e in h.evals]
    assert len(set(recalls)) == len(recalls), "evaluations must see the updated weights"
    assert lgn == pytest.approx(max(recalls))  # best weights restored
    assert h.losses[-1] < h.losses[0]
    assert lgn > pop + 0.05, (lgn, pop)


def test_fold_in_direction_for_training_users(ml100k_split, trained_ml100k):
    """fold_in(train items of u) ignores u's own layer-0 vector and the
    change of the items' degrees, so it is not e_u -- but it points the same
    way, much more than towards other users' embeddings."""
    train, _ = ml100k_split
    m, _ = trained_ml100k
    eu, _ = m.embeddings()
    users = [u for u in range(200) if train.indptr[u + 1] - train.indptr[u] >= 5]
    folded = torch.stack([m.fold_in(torch.from_numpy(train.indices[train.indptr[u]:train.indptr[u + 1]]))
                          for u in users])
    cos_self = torch.nn.functional.cosine_similarity(folded, eu[users]).numpy()
    other = torch.tensor(users).roll(1)
    cos_other = torch.nn.functional.cosine_similarity(folded, eu[other]).numpy()
    assert np.median(cos_self) > 0.7, np.median(cos_self)
    assert np.median(cos_self) > np.median(cos_other) + 0.1
    # adding the user's trained layer-0 vector brings it closer still
    with_l0 = torch.stack([m.fold_in(torch.from_numpy(train.indices[train.indptr[u]:train.indptr[u + 1]]),
                                     user_layer0=m.user_emb.weight[u]) for u in users])
    cos_l0 = torch.nn.functional.cosine_similarity(with_l0, eu[users]).numpy()
    assert np.median(cos_l0) > np.median(cos_self)
