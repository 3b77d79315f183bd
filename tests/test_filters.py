"""The graph filters (GF-CF, BSPM, ChebyCF) against dense numpy computations of their papers'
formulas on small graphs, their exact history decomposition, new users as new rows, and a real
fit on ML-100K through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app as cli
from whyrec.models.bspm import BSPM, BSPMConfig
from whyrec.models.cheby_cf import ChebyCF, ChebyCFConfig, chebyshev_coefficients, plateau
from whyrec.models.gf_cf import GFCF, GFCFConfig


def small_graph(seed=0, n_users=30, n_items=20, p=0.2) -> sp.csr_matrix:
    """Random binary interactions with one item and one user that have none (degree 0)."""
    rng = np.random.default_rng(seed)
    R = (rng.random((n_users, n_items)) < p).astype(np.float32)
    R[:, 3] = 0.0   # an item nobody interacted with
    R[7, :] = 0.0   # a user without history
    R[0, :5] = [1, 1, 1, 0, 0]  # user 0 has a known history
    return sp.csr_matrix(R)


def dense_parts(R: sp.csr_matrix, k: int):
    """Dense R, R̃, P̃ = R̃ᵀR̃, item degrees, and V_k from numpy's full SVD (float64)."""
    R = R.toarray().astype(np.float64)
    du, di = R.sum(1), R.sum(0)
    inv = lambda d: np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)  # noqa: E731
    Rn = inv(du)[:, None] * R * inv(di)[None, :]
    _, s, vt = np.linalg.svd(Rn)
    return R, Rn, Rn.T @ Rn, di, vt[:k].T


def power(d, p):
    return np.where(d > 0, np.where(d > 0, d, 1.0) ** p, 0.0)


def model_scores(model) -> np.ndarray:
    return model.score_users(torch.arange(model.n_users)).double().numpy()


def test_gf_cf_equals_the_dense_formula():
    train = small_graph()
    R, Rn, P, di, V = dense_parts(train, 6)
    model = GFCF(train, GFCFConfig(rank=6, alpha=0.7, svd="arpack")).fit_basis()
    ideal = np.diag(power(di, -0.5)) @ V @ V.T @ np.diag(power(di, 0.5))
    expected = R @ (P + 0.7 * ideal)
    np.testing.assert_allclose(model_scores(model), expected, rtol=1e-4, atol=1e-5)
    assert np.all(model_scores(model)[7] == 0)  # no history, nothing to filter


def rk4(y, f, h):
    k1 = f(y)
    k2 = f(y + h / 2 * k1)
    k3 = f(y + h / 2 * k2)
    k4 = f(y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def euler(y, f, h):
    return y + h * f(y)


def bspm_dense(R, P, di, V, c: BSPMConfig) -> np.ndarray:
    """The authors' procedure, step by step on dense matrices (their getUsersRating)."""
    idl = R @ np.diag(power(di, -0.5)) @ V @ V.T @ np.diag(power(di, 0.5))  # one Euler step, T = 1
    states_b, b = [], R.copy()
    for _ in range(c.K_b):
        b = euler(b, lambda y: y @ P - y, c.T_b / c.K_b)
        states_b.append(b)
    solve = rk4 if c.solver == "rk4" else euler
    s = b + c.beta * idl if c.merge == "early" else b
    states_s = []
    for _ in range(c.K_s):
        s = solve(s, lambda y: -y @ P, c.T_s / c.K_s)
        states_s.append(s)
    out = np.mean(states_b + states_s, axis=0) if c.t_point_combination else states_s[-1]
    return out if c.merge == "early" else out + c.beta * idl


@pytest.mark.parametrize("config", [
    BSPMConfig(rank=5, svd="arpack"),  # the Gowalla setting: EM, one RK4 step of 2.5
    BSPMConfig(rank=5, beta=0.3, T_s=1.2, K_s=2, solver="euler", merge="late", svd="arpack"),
    BSPMConfig(rank=4, beta=0.5, T_s=2.0, K_s=2, T_b=1.5, K_b=2, t_point_combination=True, svd="arpack"),
    BSPMConfig(rank=4, T_s=1.0, K_s=3, merge="late", t_point_combination=True, svd="arpack"),
])
def test_bspm_equals_the_ode_solved_step_by_step(config):
    train = small_graph(1)
    R, Rn, P, di, V = dense_parts(train, config.rank)
    model = BSPM(train, config).fit_basis()
    np.testing.assert_allclose(model_scores(model), bspm_dense(R, P, di, V, config), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nodes", ["code", "exact"])
def test_chebyshev_coefficients_interpolate_the_plateau(nodes):
    K, phi = 8, 1.5
    c = chebyshev_coefficients(K, phi, nodes)
    x = np.cos((K + 1.5 - np.arange(1, K + 2)) / (K + 1) * math.pi)  # the K+1 Chebyshev roots
    if nodes == "exact":  # numpy's own interpolation at the Chebyshev points of the first kind
        np.testing.assert_allclose(c, np.polynomial.chebyshev.chebinterpolate(lambda t: plateau(t, phi), K),
                                   atol=1e-12)
    else:  # the authors' targets: the plateau at the Lobatto points, rounded, put at the roots
        lob = np.round(np.cos((K - np.arange(K + 1)) / K * math.pi), 3)
        h = np.round(plateau(lob, phi), 3)
        np.testing.assert_allclose(np.polynomial.chebyshev.chebval(x, c), h, atol=1e-10)
    # either way the filter keeps the smoothest signal and removes the roughest
    assert np.polynomial.chebyshev.chebval(-1.0, c) == pytest.approx(1.0, abs=0.05)
    assert np.polynomial.chebyshev.chebval(1.0, c) == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("nodes", ["code", "exact"])
def test_cheby_cf_equals_the_dense_spectral_filter(nodes):
    train = small_graph(2)
    config = ChebyCFConfig(order=6, flatness=1.5, rank=5, alpha=0.3, beta=0.4, nodes=nodes, svd="arpack")
    R, Rn, P, di, V = dense_parts(train, config.rank)
    L = np.eye(len(P)) - 2 * P  # L̃ = 2L/λmax − I with λmax = 2
    lam, Q = np.linalg.eigh(L)
    c = chebyshev_coefficients(config.order, config.flatness, nodes)
    H = Q @ np.diag(np.polynomial.chebyshev.chebval(lam, c)) @ Q.T  # h(L̃) by its eigendecomposition
    X = R * power(di, -config.beta)[None, :]
    expected = (X @ H + config.alpha * X @ V @ V.T) * power(di, config.beta)[None, :]
    model = ChebyCF(train, config).fit_basis()
    np.testing.assert_allclose(model_scores(model), expected, rtol=1e-4, atol=1e-5)


def test_randomized_basis_spans_the_top_singular_subspace():
    train = small_graph(3, 60, 40, 0.15)
    _, _, _, _, V = dense_parts(train, 8)
    model = GFCF(train, GFCFConfig(rank=8, svd="randomized")).fit_basis(seed=0)
    Vr = model.V.double().numpy()
    np.testing.assert_allclose(Vr @ Vr.T, V @ V.T, atol=1e-5)


FILTERS = [GFCF(small_graph(4), GFCFConfig(rank=6, svd="arpack")),
           BSPM(small_graph(4), BSPMConfig(rank=6, svd="arpack")),
           ChebyCF(small_graph(4), ChebyCFConfig(rank=6, svd="arpack"))]


@pytest.mark.parametrize("model", FILTERS, ids=["gf-cf", "bspm", "cheby-cf"])
def test_history_decomposition_is_exact(model):
    model.fit_basis()
    R = model.graph.R
    scores = model_scores(model)
    hist = R[0].indices
    contrib = model.history_contributions(hist, np.arange(model.n_items)).double().numpy()  # (|H|, n_items)
    # the contributions sum to every item's score
    np.testing.assert_allclose(contrib.sum(0), scores[0], rtol=1e-5, atol=1e-6)
    # removing one history item and re-scoring changes each score by exactly that item's contribution
    for p, j in enumerate(hist):
        row = R[0].toarray()
        row[0, j] = 0
        rescored = model.score_histories(sp.csr_matrix(row)).double().numpy()[0]
        np.testing.assert_allclose(scores[0] - rescored, contrib[p], rtol=1e-5, atol=1e-6)
    # a new user given a training user's history gets that user's scores
    np.testing.assert_allclose(model.score_items(hist).double().numpy(), scores[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.score_histories(R[[0, 5]]).double().numpy(), scores[[0, 5]], rtol=1e-6,
                               atol=1e-7)


def test_filter_options_are_checked():
    runner = CliRunner()
    for opt, needle in [("rank=0", "rank must be a positive integer"), ("alpha=abc", "alpha must be float"),
                        ("bogus=1", "does not know --opt bogus"), ("svd=lanczos", "svd must be one of")]:
        result = runner.invoke(cli, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                     "--model", "gf-cf", "--out", "/tmp/whyrec-never-written", "--opt", opt])
        assert result.exit_code == 1, result.output
        assert needle in result.output, result.output


@pytest.fixture(scope="module")
def ml100k_runs(tmp_path_factory):
    """A selected GF-CF run and a popularity run on the same ML-100K split."""
    root = tmp_path_factory.mktemp("filters")
    runner = CliRunner()
    common = ["--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")), "--seed", "3", "--no-progress"]
    for name in ("gf-cf", "pop"):
        result = runner.invoke(cli, ["train", *common, "--model", name, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
    return root


def test_gf_cf_on_ml100k_beats_popularity_and_saves_its_selection(ml100k_runs):
    runner = CliRunner()
    recall = {}
    for name in ("gf-cf", "pop"):
        result = runner.invoke(cli, ["evaluate", str(ml100k_runs / name), "--k", "20", "--json"])
        assert result.exit_code == 0, result.output
        recall[name] = json.loads(result.output)["recall@20"]
    assert recall["gf-cf"] > recall["pop"] + 0.1, recall
    config = json.loads((ml100k_runs / "gf-cf" / "config.json").read_text())
    selection = config["train_config"]["selection"]
    assert len(selection["table"]) == 16  # rank × alpha
    best = max(selection["table"], key=lambda r: r["recall@20"])
    assert config["model_config"]["rank"] == best["rank"] and config["model_config"]["alpha"] == best["alpha"]
    metrics = json.loads((ml100k_runs / "gf-cf" / "metrics.json").read_text())
    assert metrics["valid"]["recall@20"] == pytest.approx(best["recall@20"], abs=0.02)  # all users vs a sample


def test_gf_cf_run_recommends_explains_and_folds_in_exactly(ml100k_runs):
    from whyrec.explain.history import explain_run
    from whyrec.recommend import recommend_for_new_user, recommend_for_user
    from whyrec.run import load_run

    run = load_run(ml100k_runs / "gf-cf")
    recs = recommend_for_user(run, "1", 10)["recommendations"]
    assert len(recs) == 10 and all(r["title"] for r in recs)
    u = run.user_index("1")
    top = run.item_lookup[recs[0]["item_id"]]
    why = explain_run(run, u, top, top=10_000)
    assert why["exact"] and why["score"] == pytest.approx(recs[0]["score"], rel=1e-5)
    total = sum(r["attribution"] for r in why["attributions"])
    assert total == pytest.approx(why["score"], rel=1e-4)
    assert why["n_history"] == len(why["attributions"]) == run.matrices["train"][u].nnz
    # a new user who likes user 1's training history gets user 1's scores, with exact "because" parts
    hist = [str(int(run.item_ids[j])) for j in run.matrices["train"][u].indices]
    new = recommend_for_new_user(run, hist, 10)["recommendations"]
    full = run.model.score_users([u])[0]
    for r in new:
        assert r["score"] == pytest.approx(float(full[run.item_lookup[r["item_id"]]]), rel=1e-5)
        assert sum(b["contribution"] for b in r["because"]) == pytest.approx(r["score"], rel=1e-4)
    # the CLI prints the same explanation
    result = CliRunner().invoke(cli, ["explain", str(ml100k_runs / "gf-cf"), "--user", "1", "--method", "history"])
    assert result.exit_code == 0, result.output
    assert "exact decomposition" in result.output


def test_gf_cf_run_is_served(ml100k_runs):
    from fastapi.testclient import TestClient

    from whyrec.serve.app import create_app

    client = TestClient(create_app(ml100k_runs / "gf-cf"))
    health = client.get("/health").json()
    assert health["new_users"] and "history" in health["available_methods"]
    recs = client.get("/users/1/recommendations?k=5").json()["recommendations"]
    assert len(recs) == 5
    why = client.get(f"/users/1/explanations/{recs[0]['item_id']}?method=history").json()
    assert why["exact"] and why["score"] == pytest.approx(recs[0]["score"], rel=1e-5)
    new = client.post("/recommendations", json={"liked": ["Toy Story (1995)", "star wars"], "k": 3}).json()
    assert len(new["recommendations"]) == 3
    for r in new["recommendations"]:
        assert [b["title"] for b in r["because"]] and \
            sum(b["contribution"] for b in r["because"]) == pytest.approx(r["score"], rel=1e-4)


def test_faithfulness_of_the_exact_decomposition(ml100k_runs):
    result = CliRunner().invoke(cli, ["faithfulness", str(ml100k_runs / "gf-cf"), "--method", "history,random",
                                      "--remove", "10", "--runs", "1", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = {m["method"]: m["results"][0] for m in json.loads(result.output)["methods"]}
    # removing the ten items that contribute most knocks out more of the user's own top 10 than random
    assert rows["history"]["top10_kept"] < rows["random"]["top10_kept"] - 0.1, rows


@pytest.mark.parametrize("model", FILTERS, ids=["gf-cf", "bspm", "cheby-cf"])
def test_concept_embeddings_are_the_rank_k_term(model):
    """The vectors concepts are fitted on reproduce exactly the model's rank-k term."""
    model.fit_basis()
    users, items = model.concept_embeddings()
    full = model_scores(model)
    weight = {"gf-cf": "alpha", "bspm": "beta", "cheby-cf": "alpha"}[
        {GFCF: "gf-cf", BSPM: "bspm", ChebyCF: "cheby-cf"}[type(model)]]
    saved = getattr(model.config, weight)
    try:
        setattr(model.config, weight, 0.0)
        without = model_scores(model)
    finally:
        setattr(model.config, weight, saved)
    np.testing.assert_allclose((users @ items.T).double().numpy(), full - without, rtol=1e-4, atol=1e-5)


def test_concepts_on_a_filter_run(ml100k_runs):
    result = CliRunner().invoke(cli, ["explain", str(ml100k_runs / "gf-cf"), "--user", "1", "--method", "concepts",
                                      "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["genres"] and "rank-k term" in out["concept_space"]


def test_capabilities_are_declared_not_probed():
    """Callers ask a model what it can do; every model declares it in its class."""
    from whyrec.models import MF, LightGCN, Popularity
    from whyrec.models.base import CUDA, DOT, EXACT_HISTORY, FOLD_IN, GRAPH, INTRINSIC, NEW_ROW, RESCORE, can
    from whyrec.models.nmf import NMFRecommender
    from whyrec.models.resolved import Resolved

    assert {c for c in (RESCORE, NEW_ROW, EXACT_HISTORY, DOT, CUDA) if can(FILTERS[0], c)} == {RESCORE, NEW_ROW,
                                                                                              EXACT_HISTORY, CUDA}
    assert LightGCN.capabilities == {DOT, GRAPH, FOLD_IN, CUDA} and MF.capabilities == {DOT, CUDA}
    assert NMFRecommender.capabilities == {DOT, RESCORE, CUDA} and Resolved.capabilities == {RESCORE, INTRINSIC, CUDA}
    assert Popularity.capabilities == {CUDA} and not can(object(), RESCORE)
