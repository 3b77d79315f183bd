"""`--index faiss`: an inner-product index that, scanned exhaustively, equals exact top-k, never returns a
seen item, and is refused where it does not apply (one error line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import cli_fails as fails, cli_ok as ok, dataset_dir
from whyrec.serve.index import FaissIndex, default_nlist, exact_search, recall_at_k

ML100K = str(dataset_dir("ml-100k"))




@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 16))
    items = (centres[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, 16))).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    exclude = [rng.choice(3000, int(n), replace=False) for n in rng.integers(0, 200, 40)]
    for r in range(0, 40, 2):  # half the users have seen some of their own best items
        exclude[r] = np.concatenate([exclude[r], exact_search(items, queries[r], 15)[0][0, ::2]])
    return items, queries, exclude, FaissIndex(items)


def test_exhaustive_search_equals_exact_top_k(catalogue):
    items, queries, exclude, index = catalogue
    assert index.nlist == default_nlist(3000) == 55
    for ex in (None, exclude):
        got, got_s = index.search(queries, 10, ex, nprobe=index.nlist)
        want, want_s = exact_search(items, queries, 10, ex)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)


def test_seen_items_are_never_returned_and_scores_are_exact(catalogue):
    items, queries, exclude, index = catalogue
    for nprobe in (1, 4, index.nprobe):
        got, scores = index.search(queries, 20, exclude, nprobe=nprobe)
        for r in range(len(queries)):
            assert not set(got[r].tolist()) & set(exclude[r].tolist())
            valid = got[r] >= 0
            np.testing.assert_allclose(scores[r][valid], items[got[r][valid]] @ queries[r], rtol=1e-5, atol=1e-5)
            assert (np.diff(scores[r][valid]) <= 1e-6).all()  # best first
    # recall rises to 1 with the number of lists scanned
    want = exact_search(items, queries, 10, exclude)[0]
    recalls = [recall_at_k(index.search(queries, 10, exclude, nprobe=p)[0], want) for p in (1, 8, index.nlist)]
    assert recalls[0] <= recalls[1] <= recalls[2] == 1.0


def test_tuning_reaches_the_target_recall(catalogue):
    items, queries, exclude, _ = catalogue
    index = FaissIndex(items, nprobe=1)
    want = exact_search(items, queries, 10, exclude)[0]
    tuned = index.tune(queries, exclude, want, target=0.99)
    assert tuned["nprobe"] == index.nprobe and tuned["recall@10"] >= 0.99
    assert recall_at_k(index.search(queries, 10, exclude)[0], want) == tuned["recall@10"]
    if index.nprobe > 1:  # the smallest nprobe found (to within 1/8) : well below it, the target is missed
        lower = max(1, index.nprobe - max(1, index.nprobe // 8) - 1)
        assert recall_at_k(index.search(queries, 10, exclude, nprobe=lower)[0], want) < 0.99 or lower == index.nprobe


def test_fewer_items_than_k():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((5, 4)).astype(np.float32)
    index = FaissIndex(items)
    got, scores = index.search(items[:1], 10, [np.array([0, 3])], nprobe=index.nlist)
    assert sorted(got[0][:3].tolist()) == [1, 2, 4] and (got[0][3:] == -1).all() and np.isinf(scores[0][3:]).all()
    with pytest.raises(ValueError, match="non-finite"):
        FaissIndex(np.full((3, 2), np.nan, np.float32))


@pytest.fixture(scope="module")
def lgcn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ann_runs") / "lgcn"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "lightgcn", "--out", out, "--epochs", "2",
        "--lr", "0.01", "--dim", "16", "--eval-every", "1", "--no-progress", "--seed", "5"])
    return out


def test_service_with_faiss_equals_exact_when_exhaustive(lgcn_run):
    from whyrec.run import load_run
    from whyrec.serve.app import create_app

    run = load_run(lgcn_run)
    exact = TestClient(create_app(run))
    approx_app = create_app(run, index="faiss")
    service = approx_app.state.service
    assert service.ann is not None and service.ann.n_items == run.n_items == 1682
    approx = TestClient(approx_app)
    health = approx.get("/health").json()
    assert health["index"] == "faiss" and exact.get("/health").json()["index"] == "exact"
    # nprobe was tuned at load on a sample of the run's own users until recall@10 >= 0.99 there
    tuned = health["index_tuning"]
    assert tuned == service.ann.tuned and tuned["recall@10"] >= 0.99 and tuned["tuned_on"] == 256
    assert 1 <= tuned["nprobe"] <= tuned["nlist"] == service.ann.nlist and "index_tuning" not in exact.get("/health").json()
    seen = run.matrices["seen"]
    users = run.user_ids[::47]
    # default settings: never a seen item, every score the model's own, most of the exact top-10
    overlap = []
    for raw in users:
        a = approx.get(f"/users/{raw}/recommendations?k=10").json()["recommendations"]
        e = exact.get(f"/users/{raw}/recommendations?k=10").json()["recommendations"]
        u = run.user_index(raw)
        idx = [run.item_lookup[r["item_id"]] for r in a]
        assert len(a) == 10 and not set(idx) & set(seen[u].indices.tolist())
        exact_scores = {r["item_id"]: r["score"] for r in e}
        overlap.append(len(set(exact_scores) & {r["item_id"] for r in a}) / 10)
    assert np.mean(overlap) >= 0.9, overlap
    # scanned exhaustively, the answers are the exact ones (items, order, scores to float tolerance)
    service.ann.nprobe = service.ann.nlist
    for raw in users:
        a = approx.get(f"/users/{raw}/recommendations", params={"k": 20}).json()
        e = exact.get(f"/users/{raw}/recommendations", params={"k": 20}).json()
        assert [r["item_id"] for r in a["recommendations"]] == [r["item_id"] for r in e["recommendations"]]
        np.testing.assert_allclose([r["score"] for r in a["recommendations"]],
                                   [r["score"] for r in e["recommendations"]], rtol=1e-4, atol=1e-5)
        assert a["profile"] == e["profile"]
    # a new user folded in: answered from the index too, the liked items excluded, the same as exact
    body = {"liked": ["Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)"], "k": 10}
    a, e = approx.post("/recommendations", json=body).json(), exact.post("/recommendations", json=body).json()
    assert [r["item_id"] for r in a["recommendations"]] == [r["item_id"] for r in e["recommendations"]]
    assert not set(a["liked_ids"]) & {r["item_id"] for r in a["recommendations"]}
    assert all("because" in r for r in a["recommendations"])


def test_cli_recommend_with_faiss(lgcn_run):
    a = json.loads(ok(["recommend", lgcn_run, "--user", "1", "--k", "10", "--json", "--index", "faiss"]).stdout)
    e = json.loads(ok(["recommend", lgcn_run, "--user", "1", "--k", "10", "--json"]).stdout)
    from whyrec.run import load_run

    run = load_run(lgcn_run)
    seen = set(run.item_ids[run.matrices["seen"][run.user_index(1)].indices].tolist())
    got = [r["item_id"] for r in a["recommendations"]]
    assert len(got) == 10 and not set(got) & seen
    assert len(set(got) & {r["item_id"] for r in e["recommendations"]}) >= 8
    new = json.loads(ok(["recommend", lgcn_run, "--liked", "Toy Story (1995)", "--json", "--index", "faiss"]).stdout)
    assert new["recommendations"] and 1 not in {r["item_id"] for r in new["recommendations"]}


def test_bad_index_is_one_error_line(lgcn_run, tmp_path):
    fails(["recommend", lgcn_run, "--user", "1", "--index", "bogus"], "--index must be one of exact, faiss",
          "'bogus'")
    fails(["serve", lgcn_run, "--index", "bogus"], "--index must be one of exact, faiss")
    pop = tmp_path / "pop"
    ok(["train", "--dataset", "ml-100k", "--data-dir", ML100K, "--model", "pop", "--out", pop, "--no-progress"])
    fails(["recommend", pop, "--user", "1", "--index", "faiss"], "--index faiss needs a model whose scores are dot "
          "products", "pop")
    fails(["serve", pop, "--index", "faiss"], "--index faiss needs", "pop")
    from whyrec.serve.app import create_app

    with pytest.raises(ValueError, match="--index must be one of"):
        create_app(pop, index="hnsw")
