"""``--method counterfactual``: hand-computed answers on a tiny graph, brute force on small random graphs,
and a real ML-100K GF-CF run whose reported sets are re-scored independently here."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app
from whyrec.explain.counterfactual import CounterfactualSearch, counterfactual_set, margins, ranks
from whyrec.models.gf_cf import GFCF, GFCFConfig
from whyrec.models.nmf import NMFConfig, NMFRecommender

runner = CliRunner()


def matrix(edges, shape) -> sp.csr_matrix:
    r, c = zip(*edges)
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=shape)


def tiny_run(model, train, name="gf-cf"):
    return SimpleNamespace(model=model, matrices={"train": train, "seen": train}, n_items=train.shape[1],
                           config={"model": name}, ratings=None, path=None, _explain_caches=None)


# User 0 has history {0, 1, 2}; item 3 is their first recommendation, item 4 the only other candidate.
#   u1 {0,3}  u2 {1,3}  u3 {2,4}  u4 {2,4}  u5 {2,3}  u6 {2,3}      (every other user has degree 2)
# item degrees: d0 = d1 = 2, d2 = 5, d3 = 4, d4 = 2.  GF-CF with alpha = 0 is s = x P̃ with
# P̃[j, t] = Σ_v R[v, j] R[v, t] / (d_v sqrt(d_j d_t)), so (by hand)
#   F(0,3) = F(1,3) = 1/(2 sqrt(2·4)) = 1/(4√2) = 0.17678    F(2,3) = 2/(2 sqrt(5·4)) = 1/(2√5) = 0.22361
#   F(2,4) = 2/(2 sqrt(5·2)) = 1/√10 = 0.31623                F(0,4) = F(1,4) = 0
#   s(3) = 1/(2√2) + 1/(2√5) = 0.57716 > s(4) = 0.31623.
# Removing the item that contributes most to item 3 (item 2) also removes all of item 4's support:
# {2}: s(3) = 0.35355, s(4) = 0; {0} or {1}: s(3) = 0.40038 > 0.31623; {0, 2}: 0.17678 > 0;
# {0, 1, 2}: a tie at 0 (a tie does not push item 3 down).  The only sets that take item 3 out of first
# place are {0, 1} (s(3) = 0.22361 < 0.31623, rank 2) and nothing smaller: the answer is {0, 1}.
HAND_EDGES = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (2, 3), (3, 2), (3, 4), (4, 2), (4, 4), (5, 2), (5, 3),
              (6, 2), (6, 3)]


@pytest.fixture(scope="module")
def hand():
    train = matrix(HAND_EDGES, (7, 5))
    model = GFCF(train, GFCFConfig(rank=1, alpha=0.0)).fit_basis()
    return tiny_run(model, train)


def test_hand_computed_scores(hand):
    s = hand.model.score_users([0])[0].double().numpy()
    assert s[3] == pytest.approx(1 / (2 * np.sqrt(2)) + 1 / (2 * np.sqrt(5)), rel=1e-5)
    assert s[4] == pytest.approx(1 / np.sqrt(10), rel=1e-5)


def test_hand_computed_counterfactual_on_the_exact_path(hand):
    res = counterfactual_set(hand, 0, 3, k=1)
    assert res["found"] and sorted(res["removed"]) == [0, 1] and res["size"] == 2
    assert res["optimal"] and res["lower_bound"] == 2 and res["exists"]
    assert (res["rank_before"], res["rank_after"]) == (1, 2)
    assert res["score_before"] == pytest.approx(0.57716, abs=1e-5)
    assert res["score_after"] == pytest.approx(1 / (2 * np.sqrt(5)), rel=1e-5)
    assert res["margin_before"] == pytest.approx(0.57716 - 0.31623, abs=1e-5)
    assert res["rescorings"] == 2  # the full history, then the one verification of the optimum
    # K = 2: only one other item can be ranked, so no removal can push item 3 out of the top 2 (proven)
    res2 = counterfactual_set(hand, 0, 3, k=2)
    assert not res2["found"] and res2["exists"] is False and res2["lower_bound"] is None


def test_hand_computed_counterfactual_on_the_rescoring_path(hand):
    """The search used for models that are not linear (exact leave-one-out estimates, greedy with exact
    re-scoring), driven here through the same GF-CF: it finds the same {0, 1}. By hand: the single removals
    leave margins 0.08415, 0.08415 and 0.35355 (item 2 raises it), so step 1 takes item 0, and step 2's
    children {0, 1} (margin -0.09262) and {0, 2} (0.17678) give {0, 1}."""
    search = CounterfactualSearch(hand, 0, 3)
    search.linear = False
    res = counterfactual_set(hand, 0, 3, k=1, search=search)
    assert res["found"] and sorted(res["removed"]) == [0, 1]
    assert res["estimate"].startswith("leave-one-out") and not res["optimal"]
    assert res["margin_after"] == pytest.approx(1 / (2 * np.sqrt(5)) - 1 / np.sqrt(10), abs=1e-5)
    # 1 (full) + 3 (leave-one-out) + 3 (step 1) + 2 (step 2) + 1 (verification) + 2 (irreducibility check)
    assert res["rescorings"] == 12


def test_max_size_and_already_out(hand):
    res = counterfactual_set(hand, 0, 3, k=1, max_size=1)
    assert not res["found"] and res["exists"] is False and res["lower_bound"] == 2  # proven: 1 is not enough
    out = counterfactual_set(hand, 0, 4, k=1)  # item 4 is second already
    assert out["found"] and out["already_out"] and out["removed"] == [] and out["rank_before"] == 2
    with pytest.raises(ValueError, match="--k must be a positive integer"):
        counterfactual_set(hand, 0, 3, k=0)


def test_rank_and_margin_definitions():
    s = np.array([[0.5, 0.9, 0.2, 0.5, 0.7]])
    assert ranks(s, 3, mask=[1]).tolist() == [2]  # 0.7 beats it; the tie 0.5 at item 0 does not
    assert margins(s, 3, [1], k=1).tolist() == pytest.approx([-0.2])
    assert margins(s, 3, [1], k=2).tolist() == pytest.approx([0.0])  # tie: still in the top 2
    assert margins(s, 3, [1], k=4).tolist() == [np.inf]


def brute_force(run, user, item, k, hist, mask):
    """Smallest set (by exhaustive search over all subsets) taking ``item`` out of the top ``k``."""
    full = set(hist.tolist())
    for size in range(1, len(hist) + 1):
        sets = list(itertools.combinations(hist.tolist(), size))
        rows = sp.csr_matrix((np.ones(len(sets) * (len(hist) - size), np.float32),
                              (np.repeat(np.arange(len(sets)), len(hist) - size),
                               np.concatenate([sorted(full - set(s)) for s in sets]).astype(np.int64))),
                             shape=(len(sets), run.n_items)) if size < len(hist) else \
            sp.csr_matrix((len(sets), run.n_items), dtype=np.float32)
        s = run.model.score_histories(rows).double().numpy()
        m = margins(s, item, mask, k)
        if (m < 0).any():
            return size
    return None


@pytest.mark.parametrize("seed", [0, 4, 5, 6, 8, 9])  # graphs whose answers need 1-4 removals
def test_filter_search_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    D = (rng.random((16, 14)) < 0.5).astype(np.float32)
    D[0, :] = 0
    D[0, :8] = 1  # user 0: eight history items
    R = sp.csr_matrix(D)
    model = GFCF(R, GFCFConfig(rank=4, alpha=0.5, svd="arpack")).fit_basis()
    run = tiny_run(model, R)
    hist = R[0].indices.astype(np.int64)
    s = model.score_users([0])[0].numpy().copy()
    s[hist] = -np.inf
    t = int(np.argmax(s))
    sizes = []
    for k in (1, 2, 3):
        best = brute_force(run, 0, t, k, hist, hist)
        res = counterfactual_set(run, 0, t, k=k, max_size=8)
        beam = counterfactual_set(run, 0, t, k=k, max_size=8, beam=4)
        assert best is not None and res["found"] and beam["found"]
        assert best <= beam["size"] <= res["size"] and res["rank_after"] > k and beam["rank_after"] > k
        assert res["lower_bound"] <= best  # the bound is a bound
        if k == 1:  # the linear filters' K = 1 answer is the optimum
            assert res["size"] == best and res["optimal"]
        if res["optimal"]:
            assert res["size"] == best
        sizes.append(best)
    assert max(sizes) >= 2


def test_nmf_greedy_is_verified_and_irreducible():
    rng = np.random.default_rng(3)
    D = (rng.random((30, 16)) < 0.3).astype(np.float32)
    D[0, :8] = 1
    R = sp.csr_matrix(D)
    model = NMFRecommender(30, 16, NMFConfig(n_components=4, max_iter=300)).fit_matrix(R)
    run = tiny_run(model, R, "nmf")
    hist = R[0].indices.astype(np.int64)
    s = model.score_histories(R[0]).numpy()[0].copy()
    s[hist] = -np.inf
    t = int(np.argmax(s))
    res = counterfactual_set(run, 0, t, k=1, max_size=8, pool=8)
    best = brute_force(run, 0, t, 1, hist, hist)
    assert res["found"] == (best is not None)
    if res["found"]:
        assert res["size"] >= best and res["estimate"].startswith("leave-one-out")
        removed = set(res["removed"])
        keep = [j for j in hist if j not in removed]
        rows = [keep] + [keep + [j] for j in removed]  # the set, and the set with one item put back
        X = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                           (np.repeat(np.arange(len(rows)), [len(r) for r in rows]), np.concatenate(rows))),
                          shape=(len(rows), 16))
        m = margins(model.score_histories(X).double().numpy(), t, hist, 1)
        assert m[0] < 0 and (m[1:] >= 0).all()  # it flips, and no item of it can be spared


# ---------------------------------------------------------------------------------------------- #
# a real run
# ---------------------------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def gfcf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf") / "gf-cf"
    res = runner.invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                              "--model", "gf-cf", "--opt", "rank=64", "--opt", "alpha=0.3", "--seed", "3",
                              "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def one_error(result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    return err[0]


def independent_ranks(model, seen_row, hist, removed_sets, t) -> list[int]:
    """``t``'s rank after each removal, scored here straight from the model (one batched call)."""
    rows = [np.array(sorted(set(hist.tolist()) - set(r)), np.int64) for r in removed_sets]
    X = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                       (np.repeat(np.arange(len(rows)), [len(r) for r in rows]), np.concatenate(rows))),
                      shape=(len(rows), model.n_items))
    s = model.score_histories(X).clone()
    s[:, torch.as_tensor(seen_row)] = -torch.inf
    return [int((row > row[t]).sum()) + 1 for row in s]


def test_ml100k_sets_really_flip_the_rank(gfcf_run):
    from whyrec.explain.counterfactual import explain_run
    from whyrec.run import load_run

    run = load_run(gfcf_run)
    seen, train = run.matrices["seen"], run.matrices["train"]
    users = np.flatnonzero(np.diff(train.indptr) >= 5)[:12]
    found = 0
    for u in users:
        for k in (1, 10):
            res = explain_run(run, int(u), k=k, max_size=30)
            if not res["found"]:
                assert res["exists"] is False or "no set" in res["statement"].lower()
                continue
            found += 1
            t = run.item_lookup[res["item"]]
            removed = [r["index"] for r in res["removed"]]
            hist = train[u].indices
            assert set(removed) <= set(hist.tolist())
            # the set, nothing removed, and the set with each one of its items put back
            sets = [removed, []] + [[x for x in removed if x != j] for j in removed]
            after, before, *put_back = independent_ranks(run.model, seen[u].indices, hist, sets, t)
            assert after == res["rank_after"] and after > k, res
            assert before == res["rank_before"] <= k
            assert all(r <= k for r in put_back)  # irreducible: no item of the set can be spared
    assert found >= 12  # most of the 24 (user, k) questions have an answer within 30 removals


def test_cli_and_service(gfcf_run):
    res = runner.invoke(app, ["explain", str(gfcf_run), "--user", "5", "--method", "counterfactual", "--k", "10",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "counterfactual" and out["k"] == 10 and out["rank_before"] <= 10
    assert {"removed", "rank_before", "rank_after", "score_before", "score_after", "rescorings", "statement",
            "found", "verified"} <= set(out)
    if out["found"]:
        assert out["statement"].startswith("Without ") and out["statement"].endswith("would not be in your top 10.")
        assert out["verified"] and out["rank_after"] > 10
    text = runner.invoke(app, ["explain", str(gfcf_run), "--user", "5", "--method", "counterfactual"])
    assert text.exit_code == 0 and "exact re-scorings" in text.stdout
    assert "only apply to --method counterfactual" in one_error(
        runner.invoke(app, ["explain", str(gfcf_run), "--user", "5", "--method", "history", "--k", "3"]))
    assert "--k" in one_error(runner.invoke(app, ["explain", str(gfcf_run), "--user", "5", "--method",
                                                  "counterfactual", "--k", "0"]))
    assert "already interacted" in one_error(runner.invoke(
        app, ["explain", str(gfcf_run), "--user", "1", "--item", "1", "--method", "counterfactual"]))

    from fastapi.testclient import TestClient

    from whyrec.serve import create_app

    client = TestClient(create_app(gfcf_run))
    assert "counterfactual" in client.get("/health").json()["available_methods"]
    rec = client.get("/users/5/recommendations?k=3").json()["recommendations"][0]
    body = client.get(f"/users/5/explanations/{rec['item_id']}?method=counterfactual&k=10").json()
    assert body == {**out, "seconds": body["seconds"]}
    assert client.get(f"/users/5/explanations/{rec['item_id']}?method=counterfactual&k=0").status_code == 422


def test_models_without_history_dependence_are_refused(tmp_path):
    from whyrec.explain.counterfactual import check_run

    with pytest.raises(ValueError, match="do not depend on the user's history"):
        check_run(SimpleNamespace(model=torch.nn.Linear(1, 1), config={"model": "mf"}))
