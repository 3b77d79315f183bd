"""The graph filters (GF-CF, BSPM, ChebyCF) against dense numpy computations of their papers'
formulas on small graphs, their exact history decomposition, new users as new rows, and a real
fit on ML-100K through the CLI."""

from __future__ import annotations

import dataclasses
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


# ------------------------------------------------------------------------------------------------ #
# the torch path (what runs on CUDA too) against scipy sparse products
# ------------------------------------------------------------------------------------------------ #
def scipy_scores(model, X: sp.csr_matrix) -> np.ndarray:
    """The model's filter on rows ``X`` with scipy sparse products and numpy in float64, from the same
    basis and settings: ``X P̃ = (X R̃^T) R̃`` and the rank-k term as ``((X ⊙ a) V_k) M^T``."""
    Rn = sp.csr_matrix(model.graph.Rn, dtype=np.float64)
    X = sp.csr_matrix(X, dtype=np.float64)
    V = model.V.double().numpy()
    prop = lambda Y: np.asarray(Rn.T @ (Rn @ (Y.toarray() if sp.issparse(Y) else Y).T)).T  # noqa: E731
    pw = model.graph.item_power
    if isinstance(model, GFCF):
        return prop(X) + model.config.alpha * np.asarray(X @ sp.diags(pw(-0.5)) @ V) @ (V * pw(0.5)[:, None]).T
    if isinstance(model, BSPM):
        def poly(coeffs, Y):  # Σ c_n Y P̃^n by Horner's rule, Y dense (b, n)
            out = coeffs[-1] * Y
            for c in coeffs[-2::-1]:
                out = prop(out) + c * Y
            return out
        p, q = model.polynomials()
        right = poly(q, (V * pw(0.5)[:, None]).T).T   # q(P̃) D^{1/2} V_k
        return poly(p, X.toarray()) + model.config.beta * np.asarray(X @ sp.diags(pw(-0.5)) @ V) @ right.T
    c = model.config
    xn = (X @ sp.diags(pw(-c.beta))).toarray()
    coeffs = model.coefficients
    lap = lambda Y: Y - 2 * prop(Y)  # noqa: E731
    prev, cur = xn, lap(xn)
    out = coeffs[0] * prev + (coeffs[1] * cur if len(coeffs) > 1 else 0)
    for ck in coeffs[2:]:
        prev, cur = cur, 2 * lap(cur) - prev
        out = out + ck * cur
    return (out + c.alpha * (xn @ V) @ V.T) * pw(c.beta)[None, :]


def larger_graph(seed=5, n_users=150, n_items=90) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    R = (rng.random((n_users, n_items)) < rng.random(n_items)[None, :] * 0.2).astype(np.float32)
    R[:, 11] = 0.0
    R[3, :] = 0.0
    return sp.csr_matrix(R)


TORCH_FILTERS = [(GFCF, GFCFConfig(rank=12, alpha=0.4)),
                 (BSPM, BSPMConfig(rank=12, K_s=2, K_b=2, T_s=1.5)),
                 (BSPM, BSPMConfig(rank=12, merge="late", solver="euler", t_point_combination=True)),
                 (ChebyCF, ChebyCFConfig(rank=12, order=6))]


@pytest.mark.parametrize("cls,config", TORCH_FILTERS, ids=["gf-cf", "bspm-em", "bspm-lm", "cheby-cf"])
def test_torch_scoring_equals_scipy_products(cls, config):
    """Every scoring entry point (training users, changed histories, a new row, the exact history
    terms) runs in torch on the model's device; on the CPU it equals a scipy/numpy evaluation of the
    same filter, whatever the block size."""
    train = larger_graph()
    model = cls(train, config).fit_basis(seed=1)
    expected = scipy_scores(model, model.graph.R)
    np.testing.assert_allclose(model_scores(model), expected, rtol=1e-4, atol=1e-5)
    model.block = 7  # blocks that do not divide the users
    np.testing.assert_allclose(model_scores(model), expected, rtol=1e-4, atol=1e-5)
    changed = train[[0, 3, 9]].tolil()
    changed[2, 11] = 5.0  # any stored value counts once, an item without training users too
    changed = changed.tocsr()
    changed.data[changed.indptr[0]] = 0  # a removed item (kept as an explicit zero: not in the history)
    want = scipy_scores(model, (changed != 0).astype(np.float32))
    got = model.score_histories(changed)
    assert got.device == model.device and got.shape == (3, model.n_items)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-5)
    hist = train[9].indices
    np.testing.assert_allclose(model.score_items(hist).double().numpy(), expected[9], rtol=1e-4, atol=1e-5)
    terms = model.history_contributions(np.r_[hist, hist[:1]], np.arange(model.n_items)).double().numpy()
    unit = sp.csr_matrix((np.ones(len(hist) + 1), (np.arange(len(hist) + 1), np.r_[hist, hist[:1]])),
                         shape=(len(hist) + 1, model.n_items))
    np.testing.assert_allclose(terms, scipy_scores(model, unit), rtol=1e-4, atol=1e-5)
    pairs = model(torch.tensor([9, 0, 9]), torch.tensor([1, 2, 3]))
    np.testing.assert_allclose(pairs.double().numpy(), expected[[9, 0, 9], [1, 2, 3]], rtol=1e-4, atol=1e-5)


def test_sparse_rows_in_torch_equal_scipy():
    """The block of rows the filters start from (:class:`whyrec.models.spectral.Rows`): its gather
    ``R̃ X``, ``P̃ X``, ``V^T X``, dense ``X`` and scaling equal scipy's, duplicates and empty rows included."""
    from whyrec.models.spectral import Rows

    train = larger_graph(7)
    model = GFCF(train, GFCFConfig(rank=10)).fit_basis()
    rows = sp.csr_matrix((np.array([1, 2, 1, 1, 3], np.float32), np.array([4, 4, 0, 11, 89]),
                          np.array([0, 2, 2, 5])), shape=(3, model.n_items))  # a duplicate, an empty row
    assert not rows.has_canonical_format
    ref = sp.csr_matrix(rows, copy=True)
    ref.sum_duplicates()
    ref = ref.astype(np.float64)
    Rn = model.graph.Rn.astype(np.float64)
    block = Rows.of(model, rows)
    np.testing.assert_allclose(block.times(model._RnT).double().numpy(), (Rn @ ref.T).toarray(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(block.propagate().double().numpy(), (Rn.T @ (Rn @ ref.T)).toarray(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(block.dense().double().numpy(), ref.T.toarray())
    V = model.V
    np.testing.assert_allclose(block.project(V).double().numpy(), (ref @ V.double().numpy()).T, rtol=1e-5, atol=1e-7)
    w = np.linspace(0.5, 2.0, model.n_items)
    scaled = block.scaled(torch.from_numpy(w.astype(np.float32)))
    np.testing.assert_allclose(scaled.dense().double().numpy(), (ref @ sp.diags(w)).T.toarray(), rtol=1e-6)
    assert rows.nnz == 5 and not rows.has_canonical_format  # the caller's matrix is left as it was
    empty = Rows.of(model, sp.csr_matrix((2, model.n_items), dtype=np.float32))
    assert empty.propagate().abs().sum() == 0 and empty.project(V).shape == (10, 2)


@pytest.mark.parametrize("cls,config", TORCH_FILTERS[:1] + TORCH_FILTERS[2:], ids=["gf-cf", "bspm", "cheby-cf"])
def test_the_operator_moves_with_the_model_and_is_not_saved(cls, config, tmp_path):
    """``R̃``/``R̃^T`` are non-persistent buffers: they follow ``.to()`` (any ``_apply``), the caches
    derived on the old device are dropped, and the state dict holds what it did before: the basis."""
    from whyrec.train.checkpoint import load_weights, save_weights

    train = larger_graph(2)
    model = cls(train, config).fit_basis(seed=0)
    before = model_scores(model)
    assert set(model.state_dict()) == {"basis", "singular_values"}
    assert {name for name, _ in model.named_buffers()} == {"_Rn", "_RnT", "basis", "singular_values"}
    old_op = model._RnT
    assert model._cache
    assert model.to("cpu") is model and model.device.type == "cpu"
    model._apply(lambda t: t.clone())  # what .to(another device) does to every buffer
    assert model._RnT is not old_op and not model._cache
    np.testing.assert_allclose(model_scores(model), before, rtol=1e-6, atol=1e-7)
    save_weights(model, tmp_path / "w.safetensors")
    again = load_weights(cls(train, dataclasses.replace(config)), tmp_path / "w.safetensors")
    np.testing.assert_allclose(model_scores(again), before, rtol=1e-6, atol=1e-7)
