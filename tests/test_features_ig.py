"""Seed 000: LightGCN with side features, Integrated Gradients over features (Captum) and over the
user's history edges; completeness on trained weights, agreement with a full re-propagation,
a planted feature, exact leave-one-edge-out, bad input through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app
from whyrec.explain import features as F
from whyrec.explain import history as H
from whyrec.models import LightGCN, LightGCNConfig
from whyrec.models.lightgcn_features import LightGCNFeatures, LightGCNFeaturesConfig
from whyrec.run import load_run
from whyrec.train.loop import TrainConfig, fit

runner = CliRunner()
FAST = ["--epochs", "2", "--eval-every", "2", "--batch-size", "16384", "--lr", "0.02", "--dim", "32", "--no-progress"]


def _train(tmp, name, *extra):
    out = tmp / name
    r = runner.invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                            "--out", str(out), *FAST, *extra])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("ig")
    return {"features": _train(tmp, "feat", "--model", "lightgcn-features"),
            "plain": _train(tmp, "plain", "--model", "lightgcn", "--epochs", "1")}


@pytest.fixture(scope="module")
def frun(runs):
    return load_run(runs["features"])


# --------------------------------------------------------------------------- features IG
def test_completeness_on_trained_weights(frun):
    ig = F.FeatureIG.for_run(frun)
    assert set(ig.group_names) >= {"gender", "age", "occupation", "zip_region", "Comedy", "Fantasy", "year"}
    rng = np.random.default_rng(0)
    users = rng.integers(0, frun.n_users, 40)
    items = rng.integers(0, frun.n_items, 40)
    for baseline in ("mean", "zero"):
        res = ig.attribute(users, items, steps=F.DEFAULT_STEPS, baseline=baseline)
        diff = res["score"] - res["baseline_score"]
        total = res["attributions"].sum(1)
        assert torch.all((total - diff).abs() <= 0.01 * diff.abs() + 1e-9)
        assert torch.allclose(res["groups"].sum(1), total)
        assert torch.allclose(res["delta"], total - diff, atol=1e-9)
    # the explained score is the model's own prediction
    model_scores = frun.model(torch.as_tensor(users), torch.as_tensor(items)).double()
    assert torch.allclose(res["score"], model_scores, atol=1e-4)
    # exact quadrature: the number of steps does not change the result
    a1 = ig.attribute(users[:5], items[:5], steps=1)["attributions"]
    a50 = ig.attribute(users[:5], items[:5], steps=50)["attributions"]
    assert torch.allclose(a1, a50, atol=1e-9)


def test_batched_ig_equals_captum_on_full_repropagation(frun):
    from captum.attr import IntegratedGradients

    ig = F.FeatureIG.for_run(frun)
    for u, m, baseline in ((3, 50, "mean"), (100, 7, "zero")):
        ours = ig.attribute([u], [m], steps=4, baseline=baseline)
        naive = IntegratedGradients(F.repropagation_forward(frun.model, u, m, dtype=torch.float64))
        ref, delta = naive.attribute(ours["inputs"], baselines=ours["baselines"], n_steps=4,
                                     return_convergence_delta=True)
        assert torch.allclose(ours["attributions"], ref, atol=1e-6), (ours["attributions"] - ref).abs().max()
        assert abs(float(delta)) < 1e-6
    # and a plain Riemann sum of the closed-form gradient
    u, m = 11, 222
    ours = ig.attribute([u], [m], steps=50, baseline="mean")
    x, xb = ours["inputs"], ours["baselines"]
    s = frun.model.pair_operator(torch.tensor([u]), torch.tensor([m])).double()
    args = (ig.E_users[[u]], ig.E_items[[m]], s, x)
    n = 400
    total = torch.zeros_like(x)
    for k in range(n):
        p = (xb + (k + 0.5) / n * (x - xb)).requires_grad_(True)
        (g,) = torch.autograd.grad(ig._forward(p, *args).sum(), p)
        total += g / n
    assert torch.allclose(ours["attributions"], total * (x - xb), atol=1e-8)


def _synthetic(seed=0):
    """300 users with an occupation, gender and age; 120 movies with genres and a decade. Users whose
    occupation is 'writer' (occupation=0) like only Fantasy movies, everyone else only non-Fantasy."""
    rng = np.random.default_rng(seed)
    nu, ni = 240, 120
    occ, gender, age = rng.integers(0, 6, nu), rng.integers(0, 2, nu), rng.integers(0, 4, nu)
    Xu = np.zeros((nu, 12), np.float32)
    Xu[np.arange(nu), occ] = 1
    Xu[np.arange(nu), 6 + gender] = 1
    Xu[np.arange(nu), 8 + age] = 1
    ucols = [f"occupation={k}" for k in range(6)] + ["gender=F", "gender=M"] + [f"age={k}" for k in range(4)]
    ugroups = ["occupation"] * 6 + ["gender"] * 2 + ["age"] * 4
    genres = ["Action", "Comedy", "Drama", "Fantasy", "Horror", "Romance"]
    Xm = np.zeros((ni, 8), np.float32)
    for i in range(ni):
        Xm[i, rng.choice(6, size=rng.integers(1, 3), replace=False)] = 1
        Xm[i, 6 + rng.integers(0, 2)] = 1
    mcols = [f"genre={g}" for g in genres] + ["year=1980s", "year=1990s"]
    mgroups = genres + ["year", "year"]
    fant, other = np.flatnonzero(Xm[:, 3] == 1), np.flatnonzero(Xm[:, 3] == 0)
    rows, cols = [], []
    for u in range(nu):
        items = rng.choice(fant if occ[u] == 0 else other, 6, replace=False)
        rows += [u] * len(items)
        cols += list(items)
    R = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(nu, ni))
    return R, Xu, Xm, occ, fant, (ucols, ugroups, mcols, mgroups)


def test_planted_feature_ranked_first():
    R, Xu, Xm, occ, fant, names = _synthetic()
    torch.manual_seed(0)
    model = LightGCNFeatures(R.shape[0], R.shape[1], LightGCNFeaturesConfig(dim=16, n_layers=2), graph=R,
                             user_features=Xu, item_features=Xm)
    fit(model, R, None, TrainConfig(epochs=60, batch_size=512, lr=0.02, reg=1e-3, num_threads=1), progress=False)
    ig = F.FeatureIG(model, *names)
    pairs = [(u, i) for u in np.flatnonzero(occ == 0)[:10] for i in [i for i in fant if i not in set(R[u].indices)][:3]]
    pairs = np.array(pairs)
    res = ig.attribute(pairs[:, 0], pairs[:, 1], steps=20, baseline="mean")
    first = [ig.group_names[j] for j in res["groups"].argmax(1).tolist()]
    assert first.count("occupation") == len(pairs), first
    item_side = [g for g in ig.group_names if ig.group_side[g] == "item"]
    cols = [ig.group_names.index(g) for g in item_side]
    assert item_side[int(res["groups"][:, cols].mean(0).argmax())] == "Fantasy"


# --------------------------------------------------------------------------- history IG
def _tiny(K, seed=1):
    rng = np.random.default_rng(seed)
    nu, ni = 6, 8
    dense = (rng.random((nu, ni)) < 0.45).astype(np.float32)
    dense[0] = [1, 1, 1, 1, 0, 0, 0, 0]
    R = sp.csr_matrix(dense)
    torch.manual_seed(seed)
    model = LightGCN(nu, ni, LightGCNConfig(dim=4, n_layers=K, init_std=0.5), graph=R)
    model.eval()
    return model, R


def _dense_score(model, u, m, t):
    A = model.adj.to_dense().double()
    hist, a = H.HistoryContext(model).edges(u)
    U = model.n_users
    A[u, U + hist] = t * a
    A[U + hist, u] = t * a
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double()
    E = sum(al * torch.linalg.matrix_power(A, k) @ e0 for k, al in enumerate(model.alphas))
    return E[u] @ E[U + m]


def test_history_context_refuses_a_model_without_a_graph():
    from whyrec.models import MF

    with pytest.raises(ValueError, match="declares GRAPH"):
        H.HistoryContext(MF(6, 8))
    with pytest.raises(ValueError, match="it has none set"):
        H.HistoryContext(LightGCN(6, 8, LightGCNConfig(dim=4)))


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
def test_history_ig_on_tiny_graph_vs_leave_one_edge_out(K):
    model, R = _tiny(K)
    ctx = H.HistoryContext(model)
    u, m = 0, 7
    res = H.history_attributions(ctx, u, m, steps=None)
    hist = res["history"]
    assert list(hist) == list(R[u].indices)
    H_ = len(hist)
    full = float(_dense_score(model, u, m, torch.ones(H_, dtype=torch.float64)))
    none = float(_dense_score(model, u, m, torch.zeros(H_, dtype=torch.float64)))
    assert res["score"] == pytest.approx(full, abs=1e-10)
    assert res["baseline_score"] == pytest.approx(none, abs=1e-10)
    assert res["attributions"].sum() == pytest.approx(full - none, abs=1e-10)  # completeness
    loo = np.array([full - float(_dense_score(model, u, m, torch.ones(H_, dtype=torch.float64)
                                              - torch.eye(H_, dtype=torch.float64)[j])) for j in range(H_)])
    assert np.allclose(H.removal_effects(ctx, u, m, range(H_)), loo, atol=1e-10)
    # an independent IG: dense autograd, 64 midpoint steps
    n = 64
    ref = np.zeros(H_)
    for k in range(n):
        t = torch.full((H_,), (k + 0.5) / n, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(_dense_score(model, u, m, t), t)
        ref += g.numpy() / n
    assert np.allclose(res["attributions"], ref, atol=1e-3 * np.abs(ref).max())
    if K == 1:  # m is not in the history: ŷ is linear in the edge scales, so IG == leave-one-edge-out
        assert np.allclose(res["attributions"], loo, atol=1e-12)
    else:
        assert np.array_equal(np.sign(res["attributions"]), np.sign(loo))
        assert np.argmax(res["attributions"]) == np.argmax(loo)
    # more quadrature nodes change nothing (exact for >= K nodes)
    assert np.allclose(H.history_attributions(ctx, u, m, steps=40)["attributions"], res["attributions"], atol=1e-12)


@pytest.mark.parametrize("K", [0, 1, 2, 3, 4, 6])
def test_rank2_edge_scaling_equals_the_densely_rebuilt_graph(K):
    """Arbitrary per-edge scales (not just IG's path), several items at once, an item inside the
    user's own history included: the closed-form recursion equals propagating the rebuilt Â(t)."""
    model, R = _tiny(K, seed=3)
    ctx = H.HistoryContext(model)
    u = 0
    hist, a = ctx.edges(u)
    rng = np.random.default_rng(K)
    items = [7, int(hist[1]), 5, 7]
    t = torch.tensor(rng.uniform(-0.5, 1.5, (len(items), len(hist))), dtype=torch.float64)
    got = H.edge_scaled_scores(ctx, u, items, t)
    want = torch.stack([_dense_score(model, u, m, t[c]) for c, m in enumerate(items)]).detach()
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-10)


def test_history_on_trained_runs(runs, frun):
    plain = load_run(runs["plain"])
    for run in (plain, frun):
        u, m = 4, 30
        imp = H.history_importances(run, u, m)
        assert set(imp) == set(run.matrices["train"][u].indices)
        res = H.explain_run(run, u, m, steps=50, top=5)
        assert sum(imp.values()) == pytest.approx(res["score"] - res["baseline_score"], rel=1e-6)
        assert res["score"] == pytest.approx(float(run.model(torch.tensor([u]), torch.tensor([m]))), abs=1e-4)
        assert res["because"].startswith("Because you liked") and len(res["attributions"]) == 5
        assert H.importances is H.history_importances
    # removing edges and re-normalizing the graph is what faithfulness does: our model supports it
    hist = frun.matrices["train"][4]
    full = frun.model.score_histories(hist, users=torch.tensor([4]))
    assert torch.allclose(full[0], frun.model.score_users(torch.tensor([4]))[0], atol=1e-4)


# --------------------------------------------------------------------------- CLI
def test_cli_features_json_and_figures(runs, tmp_path):
    fig = tmp_path / "fig1.png"
    r = runner.invoke(app, ["explain", str(runs["features"]), "--user", "1", "--method", "features", "--json",
                            "--figure", str(fig)])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert {"score", "baseline_score", "delta", "attributions"} <= set(body)
    assert {"age", "gender", "occupation"} <= set(body["attributions"])
    assert sum(body["attributions"].values()) == pytest.approx(body["score"] - body["baseline_score"], rel=0.01)
    assert fig.stat().st_size > 1000
    r = runner.invoke(app, ["explain", str(runs["features"]), "--user", "1", "--method", "features",
                            "--compare-items", "Star Wars (1977)", "--compare-items", "Aladdin (1992)",
                            "--genre", "fantasy", "--figure", str(tmp_path / "fig2.png")])
    assert r.exit_code == 0, r.output
    assert "Fantasy" in r.stdout and (tmp_path / "fig2.png").is_file()
    r = runner.invoke(app, ["explain", str(runs["plain"]), "--user", "1", "--method", "history"])
    assert r.exit_code == 0, r.output
    assert "Because you liked" in r.stdout


def _error(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    err = [line for line in r.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    return err[0]


def test_cli_bad_input(runs, tmp_path):
    feat, plain = str(runs["features"]), str(runs["plain"])
    assert "no item matches" in _error(["explain", feat, "--user", "1", "--item", "qqqzzzxx", "--method", "features"])
    assert "unknown user id" in _error(["explain", feat, "--user", "99999", "--method", "history"])
    msg = _error(["explain", plain, "--user", "1", "--method", "features"])
    assert "features" in msg and "supported: history, concepts" in msg
    msg = _error(["explain", feat, "--user", "1", "--method", "features", "--genre", "Westernz"])
    assert "unknown feature/genre" in msg and "Western" in msg
    msg = _error(["train", "--dataset", "ml-latest-small", "--data-dir", str(dataset_dir("ml-latest-small")),
                  "--model", "lightgcn-features", "--features", "user", "--out", str(tmp_path / "x"), "--no-progress"])
    assert "no user features" in msg
    msg = _error(["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")), "--model",
                  "lightgcn-features", "--opt", "loss=mse", "--out", str(tmp_path / "y"), "--no-progress"])
    assert "loss must be bpr or bce" in msg
    r = runner.invoke(app, ["explain", feat, "--user", "1", "--method", "features", "--steps", "0"])
    assert r.exit_code != 0 and "--steps" in r.output
    with pytest.raises(ValueError, match="--steps must be a positive integer"):
        F.explain_run(load_run(feat), 0, 0, steps=0)
    with pytest.raises(ValueError, match="--steps must be a positive integer"):
        H.explain_run(load_run(feat), 0, 0, steps=-3)
