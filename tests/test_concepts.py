"""Concept Activation Vectors for genres (issue 6, seed 004)."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app
from whyrec.explain.concepts import (ConceptActivationVectors, ConceptError, ConceptSignificanceTest, GenreHistory,
                                     agreement, cosine_matrix, genre_matrix, pca_2d, rank_genres, select_genres)


# ----------------------------------------------------------------------------------------------- synthetic
def planted(seed=0, n_items=800, d=16, n_genres=3, shift=2.0):
    """Items ~ N(0, I); the members of genre g (disjoint blocks) are shifted by ``shift * w_g``,
    w_g orthonormal planted directions."""
    rng = np.random.default_rng(seed)
    W = np.linalg.qr(rng.normal(size=(d, n_genres)))[0].T  # (G, d) orthonormal
    X = rng.normal(size=(n_items, d))
    M = np.zeros((n_items, n_genres), bool)
    block = n_items // (2 * n_genres)
    for g in range(n_genres):
        M[g * block:(g + 1) * block, g] = True
        X[M[:, g]] += shift * W[g]
    return X, M, W, rng


def test_planted_direction_is_recovered_and_its_user_ranks_first():
    X, M, W, rng = planted()
    cavs = ConceptActivationVectors(random_state=0).fit(X, M, ["A", "B", "C"])
    cos = np.sum(cavs.cavs_ * W, axis=1)
    assert (cos > 0.9).all(), cos
    assert np.allclose(np.linalg.norm(cavs.cavs_, axis=1), 1.0)
    assert (cavs.accuracy_ > 0.8).all() and (cavs.balanced_accuracy_ > 0.8).all()
    users = rng.normal(size=(200, X.shape[1]))
    users[17] = 3.0 * W[1]  # a user built along genre B's direction
    S = cavs.sensitivities(users)
    assert S.shape == (200, 3)
    assert np.allclose(S, users @ cavs.cavs_.T)
    assert int(np.argmax(S[:, 1])) == 17                 # highest sensitivity to B of all users
    assert rank_genres(S, cavs.names_)[17][0] == "B"     # and B is that user's top genre
    C = cosine_matrix(cavs.cavs_)
    # "vs all other items" puts the other genres in the negatives: mildly negative cosines
    assert np.allclose(np.diag(C), 1) and (np.abs(C[~np.eye(3, dtype=bool)]) < 0.5).all()
    coords, energy = pca_2d(cavs.cavs_)
    assert coords.shape == (3, 2) and 0 < energy.sum() <= 1 + 1e-9


def test_random_concepts_are_not_significant_but_planted_ones_are():
    X, M, W, rng = planted(seed=1)
    rand = np.zeros((X.shape[0], 3), bool)
    for j in range(3):
        rand[rng.choice(X.shape[0], size=100, replace=False), j] = True
    both = np.concatenate([M[:, :1], rand], axis=1)
    cavs = ConceptActivationVectors(random_state=0).fit(X, both, ["planted", "r1", "r2", "r3"])
    test = ConceptSignificanceTest(n_random=19, random_state=0).fit(X, cavs, rng.normal(size=(50, X.shape[1])))
    assert test.p_value_[0] == pytest.approx(1 / 20) and test.significant_[0]
    assert (test.p_value_[1:] > 0.05).all(), test.p_value_
    assert not test.significant_[1:].any()
    assert test.null_auc_.shape == test.null_balanced_accuracy_.shape == (4, 19)
    assert abs(test.null_auc_.mean() - 0.5) < 0.05


def test_closed_form_equals_autograd_directional_derivative():
    X, M, W, rng = planted(seed=2)
    cavs = ConceptActivationVectors().fit(X, M)
    users = torch.tensor(rng.normal(size=(3, X.shape[1])))
    S = cavs.sensitivities(users)
    for u in range(3):
        for j in range(3):
            e_m = torch.tensor(X[3], requires_grad=True)
            h = users[u] @ e_m                        # h_u(e_m) = e_u · e_m
            (grad,) = torch.autograd.grad(h, e_m)
            v = torch.tensor(cavs.cavs_[j])
            assert float(grad @ v) == pytest.approx(S[u, j], rel=1e-10, abs=1e-12)
            # and as a forward-mode directional derivative
            _, jvp = torch.func.jvp(lambda e: users[u] @ e, (torch.tensor(X[3]),), (v,))
            assert float(jvp) == pytest.approx(S[u, j], rel=1e-10, abs=1e-12)


def test_agrees_with_captum_tcav():
    from captum.concept import TCAV, Concept
    from torch.utils.data import DataLoader

    X, M, W, rng = planted(seed=3)
    ours = ConceptActivationVectors().fit(X, M[:, 0], ["A"])
    users = rng.normal(size=(30, X.shape[1]))

    class Scorer(torch.nn.Module):  # h(e_m) = E_users @ e_m with the embedding as the "layer"
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Identity()
            self.users = torch.tensor(users, dtype=torch.float32)

        def forward(self, x):
            return self.emb(x) @ self.users.T

    Xt = torch.tensor(X, dtype=torch.float32)
    genre = Concept(0, "A", DataLoader(Xt[M[:, 0]], batch_size=512))
    other = Concept(1, "other", DataLoader(Xt[~M[:, 0]], batch_size=512))
    random.seed(0)
    torch.manual_seed(0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tcav = TCAV(Scorer(), ["emb"], save_path=tmp)
        cav = tcav.compute_cavs([[genre, other]])["0-1"]["emb"]
        classes = list(cav.stats["classes"])
        v = cav.stats["weights"][classes.index(0)].double().numpy()
        v /= np.linalg.norm(v)
        assert float(v @ ours.cavs_[0]) > 0.9
        # TCAV's sign count for target user t is 1 iff the gradient e_t has a positive
        # projection on the CAV: must match the sign of our closed-form sensitivity
        S = ours.sensitivities(users)[:, 0]
        for t in np.argsort(-np.abs(S))[:5]:
            scores = tcav.interpret(Xt[:8], [[genre, other]], target=int(t))
            sign = float(scores["0-1"]["emb"]["sign_count"][0])
            assert sign == (1.0 if S[t] > 0 else 0.0)


def test_genre_selection_errors():
    M, names = genre_matrix([["Comedy"], ["Comedy", "Horror"], ["unknown"]] + [["Comedy"]] * 20 + [[]] * 20)
    assert names == ["Comedy", "Horror", "unknown"]
    with pytest.raises(ConceptError, match="unknown genre 'Foo'; valid genres: Comedy"):
        select_genres(M, names, ["Foo"])
    with pytest.raises(ConceptError, match="'Horror' has 1 item"):
        select_genres(M, names, ["horror"])
    cols, skipped = select_genres(M, names)
    assert cols == [0] and {s["genre"] for s in skipped} == {"Horror", "unknown"}
    with pytest.raises(ConceptError, match="no item genres"):
        genre_matrix(None)


def test_history_and_agreement():
    import scipy.sparse as sp

    ratings = sp.csr_matrix(np.array([[5, 1, 0, 4], [2, 0, 3, 0], [4, 4, 4, 4]], float))
    train = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], float))
    M = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)
    h = GenreHistory.from_matrices(ratings, train, M)
    assert np.allclose(h.n_rated, [[2, 1], [1, 1], [2, 2]])
    assert np.allclose(h.mean_rating, [[3, 4], [2, 3], [4, 4]])
    assert np.allclose(h.share[0], [0.5, 0.5]) and np.isnan(h.share[1]).all()
    S = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]])
    a = agreement(S, h, ["x", "y"], min_ratings=1)
    assert a[0]["mean_rating"]["n"] == 3 and a[0]["share"]["n"] == 2
    assert a[0]["mean_rating"]["pearson_r"] == pytest.approx(np.corrcoef(S[:, 0], [3, 2, 4])[0, 1])


def test_alignment_regularizer_gradient_is_exact():
    """The alignment objective's loss, and so the optimizer's gradient, is BPR + w · L_align exactly."""
    import scipy.sparse as sp

    from whyrec.models import LightGCN, LightGCNConfig
    from whyrec.train.alignment import Alignment, batch_alignment_loss
    from whyrec.train.loop import TrainConfig
    from whyrec.train.losses import bpr_loss

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((30, 40)) < 0.2).astype(np.float32))
    genres = rng.random((40, 3)) < 0.3
    pref = rng.normal(size=(30, 3)).astype(np.float32)
    torch.manual_seed(0)
    m = LightGCN(30, 40, LightGCNConfig(dim=8, n_layers=2), graph=train)
    objective = Alignment(genres, pref, weight=0.7)
    objective.setup(m, train, TrainConfig(reg=0.0, seed=0), torch.device("cpu"))
    m.train()
    objective.epoch(1)  # fits the CAVs on the current item embeddings
    assert objective.cavs.shape == (3, 8) and objective.refits == 1
    u, i, j = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    parts = objective.loss(u, i, j)
    g1 = torch.autograd.grad(parts["loss"], [m.user_emb.weight, m.item_emb.weight])
    be = m.batch_embeddings(u, i, j)
    ref = bpr_loss((be.users * be.pos).sum(-1), (be.users * be.neg).sum(-1)) \
        + 0.7 * batch_alignment_loss(be.users, objective.cavs, torch.tensor(pref)[u])
    g2 = torch.autograd.grad(ref, [m.user_emb.weight, m.item_emb.weight])
    assert float(parts["loss"].detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-6)


def test_alignment_extras_use_training_interactions_only(ml100k):
    from whyrec.data.splits import make_split
    from whyrec.train.alignment import alignment_extras

    split = make_split(ml100k, "user-holdout", seed=1)
    ex = alignment_extras(ml100k, split.train)
    names = list(ex["align_genre_names"])
    assert "unknown" not in names and "Drama" in names
    assert ex["align_genres"].shape == (ml100k.n_items, len(names))
    assert ex["align_pref"].shape == (ml100k.n_users, len(names))
    # changing the test interactions does not change the preferences
    ex2 = alignment_extras(ml100k, np.sort(split.train))
    assert np.allclose(ex["align_pref"], ex2["align_pref"])
    z = ex["align_pref"]
    assert np.allclose(z.mean(0), 0, atol=1e-5) and np.allclose(z.std(0), 1, atol=1e-3)


# ----------------------------------------------------------------------------------------------- real run + CLI
@pytest.fixture(scope="module")
def mf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mf100k"
    res = CliRunner().invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                   "--model", "mf", "--out", str(out), "--epochs", "6", "--lr", "0.01",
                                   "--eval-every", "6", "--no-progress", "--k", "20"])
    assert res.exit_code == 0, res.output
    return out


def _error(res) -> str:
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_cli_concepts_real_run(mf_run, tmp_path):
    import pandas as pd

    out = tmp_path / "c"
    genres = "Drama,Comedy,Action,Horror,Sci-Fi,Children's"
    res = CliRunner().invoke(app, ["concepts", str(mf_run), "--out", str(out), "--json", "--random-runs", "19",
                                   "--min-ratings", "5", "--genres", genres, "--scatter", "comedy"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    g = summary["genres"]
    assert list(g) == genres.split(",")
    for name, e in g.items():
        for key in ("n_items", "cav_accuracy", "cav_auc", "p_value", "significant", "correlation_mean_rating",
                    "correlation_share", "tcav_score"):
            assert key in e, (name, key)
        for which in ("correlation_mean_rating", "correlation_share"):
            assert set(e[which]) == {"n", "pearson_r", "pearson_p", "spearman_r", "spearman_p"}
            assert e[which]["n"] > 50
        assert 1 / 20 <= e["p_value"] <= 1
    assert sum(e["significant"] for e in g.values()) >= 3          # real genres are not noise
    assert sum(e["correlation_share"]["pearson_r"] > 0 for e in g.values()) >= 5
    assert set(summary["cosine"]) == set(g)
    for f in ("cav_pca.png", "cav_cosine.png", "correlations.png", "scatter_comedy.png"):
        assert (out / f).stat().st_size > 1000
    # refuses to overwrite a non-empty --out
    assert "--overwrite" in _error(CliRunner().invoke(app, ["concepts", str(mf_run), "--out", str(out)]))
    # every genre (ML-100k's "unknown" is skipped), no significance test
    res = CliRunner().invoke(app, ["concepts", str(mf_run), "--out", str(out), "--overwrite", "--random-runs", "0"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["genres"]) == 18 and summary["skipped"][0]["genre"] == "unknown"
    assert all(e["p_value"] is None for e in summary["genres"].values())
    df = pd.read_csv(out / "sensitivity.csv")
    assert list(df.columns) == ["user_id"] + list(summary["genres"]) and len(df) == 943
    assert df["user_id"].iloc[0] == 1


def test_cli_concepts_bad_input(mf_run, tmp_path):
    run = CliRunner()
    msg = _error(run.invoke(app, ["concepts", str(mf_run), "--out", str(tmp_path / "a"), "--genres", "Comedy,Foo"]))
    assert "unknown genre 'Foo'" in msg and "Comedy" in msg and "Horror" in msg
    msg = _error(run.invoke(app, ["concepts", str(mf_run), "--out", str(tmp_path / "b"), "--genres", "unknown"]))
    assert "has 2 item(s); a CAV needs at least 10" in msg
    # a run folder without item metadata
    bare = tmp_path / "bare"
    shutil.copytree(mf_run, bare)
    items = json.loads((bare / "items.json").read_text())
    items["genres"] = None
    (bare / "items.json").write_text(json.dumps(items))
    from whyrec.run import write_manifest

    write_manifest(bare)
    msg = _error(run.invoke(app, ["concepts", str(bare), "--out", str(tmp_path / "c")]))
    assert "no item genres" in msg
    msg = _error(run.invoke(app, ["explain", str(bare), "--user", "1", "--method", "concepts"]))
    assert "no item genres" in msg


def test_cli_explain_concepts(mf_run, tmp_path):
    fig = tmp_path / "u1.png"
    res = CliRunner().invoke(app, ["explain", str(mf_run), "--user", "1", "--method", "concepts", "--json",
                                   "--figure", str(fig)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["method"] == "concepts" and r["user"] == 1 and r["item"] is None
    assert len(r["genres"]) == 18 and [g["rank"] for g in r["genres"]] == list(range(1, 19))
    s = [g["sensitivity"] for g in r["genres"]]
    assert s == sorted(s, reverse=True)
    assert sum(g["n_rated"] for g in r["genres"]) >= r["n_rated"]
    assert fig.stat().st_size > 1000
    res = CliRunner().invoke(app, ["explain", str(mf_run), "--user", "1", "--method", "concepts",
                                   "--item", "50", "--top", "5"])
    assert res.exit_code == 0, res.output
    assert "sensitivity" in res.stdout and res.stdout.count("\n") >= 7


def test_explanations_reuse_one_cav_fit_per_run_and_refit_when_weights_change(mf_run, monkeypatch):
    """The service explains many users: the G logistic regressions run once per run and genre
    selection, give the same numbers as a fresh fit, and are redone after the weights change."""
    import torch

    from whyrec.explain import concepts
    from whyrec.run import load_run

    fits = []
    real_fit = concepts.ConceptActivationVectors.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(1)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(concepts.ConceptActivationVectors, "fit", counting_fit)
    run = load_run(mf_run)
    a = concepts.explain_run(run, 0, None)
    b = concepts.explain_run(run, 5, 10)
    assert len(fits) == 1
    fresh = load_run(mf_run)
    assert concepts.explain_run(fresh, 5, 10) == b and len(fits) == 2
    concepts.explain_run(run, 0, None, genre="Comedy,Horror")  # another selection: its own fit
    assert len(fits) == 3
    with torch.no_grad():
        run.model.user_emb.weight.mul_(2.0)  # CAVs (item side) unchanged, every sensitivity doubles
    doubled = concepts.explain_run(run, 0, None)
    assert len(fits) == 4
    s_a = {g["genre"]: g["sensitivity"] for g in a["genres"]}
    s_d = {g["genre"]: g["sensitivity"] for g in doubled["genres"]}
    assert s_d == pytest.approx({g: 2 * v for g, v in s_a.items()}, rel=1e-9, abs=1e-12)
