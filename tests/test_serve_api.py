"""`whyrec serve`: every endpoint and every error of the HTTP API (FastAPI's test client, plus a real
uvicorn on loopback for the streamed-body limit), on a tiny LightGCN run trained on ML-100K."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import types
import warnings
from urllib.parse import urlparse

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import dataset_dir

warnings.filterwarnings("ignore", message="Using `httpx` with")
from fastapi.testclient import TestClient  # noqa: E402

from whyrec.cli import app as cli  # noqa: E402
from whyrec.serve.app import create_app, running_server  # noqa: E402

runner = CliRunner()
ML100K = str(dataset_dir("ml-100k"))


def train(out, *extra, dataset="ml-100k"):
    result = runner.invoke(cli, ["train", "--dataset", dataset, "--data-dir", str(dataset_dir(dataset)),
                                 "--out", str(out), "--no-progress", "--seed", "1", *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def lgcn_dir(tmp_path_factory):
    return train(tmp_path_factory.mktemp("serve") / "lgcn", "--model", "lightgcn", "--epochs", "2", "--lr", "0.01",
                 "--dim", "16", "--eval-every", "2")


@pytest.fixture(scope="module")
def before(lgcn_dir):
    return snapshot(lgcn_dir)


@pytest.fixture(scope="module")
def run(lgcn_dir, before):
    from whyrec.run import load_run

    return load_run(lgcn_dir)


@pytest.fixture(scope="module")
def client(lgcn_dir, before):
    return TestClient(create_app(lgcn_dir))  # from the folder, as `whyrec serve` does


@pytest.fixture(scope="module")
def pop_client(tmp_path_factory):
    return TestClient(create_app(train(tmp_path_factory.mktemp("serve") / "pop", "--model", "pop")))


def detail(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert "detail" in body
    return body["detail"]


# ------------------------------------------------------------------------------------------------ #
def test_health_says_what_the_run_can_do(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["dataset"] == "ml-100k" and h["model"] == "lightgcn"
    assert (h["n_users"], h["n_items"]) == (943, 1682) and h["user_id_range"] == [1, 943]
    from whyrec.recipes import get_recipe

    # the recipe's methods whose capability needs the model meets: shapley needs RESCORE (history-only mode)
    free = [m for m in get_recipe("lightgcn").explain_methods if m != "shapley"]
    assert h["explain_methods"] == free and h["new_users"] is True
    assert set(h["available_methods"]) <= set(h["explain_methods"]) and "concepts" in h["available_methods"]


def test_openapi_document_lists_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/items", "/recommendations", "/users/{raw_id}/recommendations",
                                  "/users/{raw_id}/explanations/{raw_item_id}"}
    assert "post" in spec["paths"]["/recommendations"]
    params = {p["name"]: p for p in spec["paths"]["/users/{raw_id}/recommendations"]["get"]["parameters"]}
    assert params["k"]["schema"]["maximum"] == 500 and params["k"]["schema"]["minimum"] == 1
    assert client.get("/docs").status_code == 404  # Swagger UI would need a CDN


def test_user_recommendations_match_recommend_and_exclude_seen(client, run):
    from whyrec.recommend import recommend_for_user

    body = client.get("/users/7/recommendations?k=20").json()
    ref = recommend_for_user(run, 7, 20)
    assert body["user"] == 7 and body["k"] == 20 and len(body["recommendations"]) == 20
    assert [r["item_id"] for r in body["recommendations"]] == [r["item_id"] for r in ref["recommendations"]]
    for got, want in zip(body["recommendations"], ref["recommendations"]):
        assert got["title"] == want["title"] and got["genres"] == want["genres"] and got["rank"] == want["rank"]
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)
    u = run.user_index(7)
    seen = {int(run.item_ids[i]) for i in run.matrices["seen"][u].indices}
    assert body["n_seen"] == len(seen) and not seen & {r["item_id"] for r in body["recommendations"]}
    scores = [r["score"] for r in body["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    counts = [g["count"] for g in body["profile"]]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    assert all(g["share"] == pytest.approx(g["count"] / len(seen)) for g in body["profile"])


def test_fast_path_and_fastapi_route_give_the_same_body(client):
    fast = client.get("/users/42/recommendations?k=15")
    routed = client.get("/users/42/recommendations?k=15&via=route")  # an extra parameter: FastAPI answers
    assert fast.status_code == routed.status_code == 200 and fast.content == routed.content
    assert client.get("/users/42/recommendations").json()["k"] == 10
    assert len(client.get("/users/42/recommendations?k=500").json()["recommendations"]) == 500


def test_unknown_user_is_404_with_a_message(client):
    assert "unknown user id '99999'" in detail(client.get("/users/99999/recommendations"), 404)
    assert "unknown user id" in detail(client.get("/users/abc/recommendations?k=5"), 404)
    assert "unknown user id" in detail(client.get("/users/99999/explanations/50?method=concepts"), 404)


@pytest.mark.parametrize("query", ["k=0", "k=501", "k=-3", "k=abc", "k=1e3", "k="])
def test_k_outside_1_to_500_is_422(client, query):
    r = client.get(f"/users/1/recommendations?{query}")
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", [{"liked": ["toy story"], "k": 0}, {"liked": ["toy story"], "k": 501},
                                  {"liked": []}, {"k": 10}, {"liked": "toy story"}])
def test_bad_new_user_body_is_422(client, body):
    assert client.post("/recommendations", json=body).status_code == 422


def test_new_user_fold_in(client, run):
    from whyrec.recommend import recommend_for_new_user

    r = client.post("/recommendations", json={"liked": ["toy story", 50, "Fargo (1996)"], "k": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["liked"] == ["Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)"]
    assert body["liked_ids"] == [1, 50, 100] and body["k"] == 12 and len(body["recommendations"]) == 12
    ref = recommend_for_new_user(run, ["toy story", "50", "Fargo (1996)"], 12)
    assert [x["item_id"] for x in body["recommendations"]] == [x["item_id"] for x in ref["recommendations"]]
    assert not {1, 50, 100} & {x["item_id"] for x in body["recommendations"]}
    for rec in body["recommendations"]:  # "because you liked": an exact decomposition of the score
        assert sorted(b["item_id"] for b in rec["because"]) == [1, 50, 100]
        assert sum(b["contribution"] for b in rec["because"]) == pytest.approx(rec["score"], rel=1e-4, abs=1e-5)
    genres = {g["genre"] for g in body["profile"]}
    assert {"Animation", "Sci-Fi", "Crime"} <= genres


def test_new_user_unknown_item_is_404(client):
    msg = detail(client.post("/recommendations", json={"liked": ["toy story", "zzzz qqqq xxxx"]}), 404)
    assert "no item matches 'zzzz qqqq xxxx'" in msg
    assert "'999999'" in detail(client.get("/users/1/explanations/999999?method=concepts"), 404)


def test_new_user_needs_a_lightgcn_run(pop_client):
    assert "LightGCN" in detail(pop_client.post("/recommendations", json={"liked": ["toy story"]}), 400)
    assert pop_client.get("/health").json()["new_users"] is False
    body = pop_client.get("/users/3/recommendations?k=5").json()  # pop has no embeddings: its own scorer
    assert len(body["recommendations"]) == 5 and body["recommendations"][0]["score"] > 100


def test_models_without_embeddings_answer_from_precomputed_scores_like_recommend(tmp_path, monkeypatch):
    """pop has no embedding space: its scores are precomputed at start-up and give exactly what
    `whyrec recommend` gives; above the size limit every request runs the model instead."""
    import whyrec.serve.app as serve_app
    from whyrec.recommend import recommend_for_user
    from whyrec.run import load_run

    folder = train(tmp_path / "pop", "--model", "pop")
    run = load_run(folder)
    c = TestClient(create_app(run))
    monkeypatch.setattr(serve_app, "PRECOMPUTED_SCORES_LIMIT", 0)
    c_model = TestClient(create_app(load_run(folder)))
    for user in ("3", "7", "100"):
        want = recommend_for_user(run, user, 10)["recommendations"]
        for client in (c, c_model):
            got = client.get(f"/users/{user}/recommendations?k=10").json()["recommendations"]
            assert [(r["item_id"], r["rank"]) for r in got] == [(r["item_id"], r["rank"]) for r in want]
            assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want])


def test_body_over_the_limit_is_413(client):
    big = json.dumps({"liked": ["toy story"] * 20000, "k": 10})
    assert len(big) > 64 * 1024
    assert "too large" in detail(client.post("/recommendations", content=big,
                                             headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: the streamed bytes are counted
        yield b'{"liked": ["'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"]}'

    assert "too large" in detail(client.post("/recommendations", content=chunks(),
                                             headers={"content-type": "application/json"}), 413)
    small = create_app(client.app.state.service.run, max_body_bytes=100)
    with TestClient(small) as c:
        assert c.post("/recommendations", json={"liked": ["toy story"] * 30}).status_code == 413
        assert c.post("/recommendations", json={"liked": ["toy story"]}).status_code == 200


def _raw(base: str, request: bytes) -> bytes:
    url = urlparse(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_body_limit_on_a_real_server(run):
    with running_server(create_app(run, max_body_bytes=1000)) as base:
        # a declared length over the limit is refused before any body is sent
        head = _raw(base, b"POST /recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 10000000\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
        # a chunked body (no length) is cut off once it passes the limit
        body = b"".join(b"%x\r\n%s\r\n" % (500, b" " * 500) for _ in range(10)) + b"0\r\n\r\n"
        head = _raw(base, b"POST /recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + body)
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
        head = _raw(base, b"GET /users/1/recommendations?k=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")


def test_items_search(client):
    items = client.get("/items?q=star%20wars").json()["items"]
    assert items[0]["title"] == "Star Wars (1977)" and items[0]["item_id"] == 50
    assert items[0]["n_interactions"] > 500 and "Sci-Fi" in items[0]["genres"]
    assert client.get("/items?q=50").json()["items"][0]["item_id"] == 50
    assert [i["title"] for i in client.get("/items?q=usual suspects").json()["items"]] == ["Usual Suspects, The (1995)"]
    many = client.get("/items?q=the&limit=50").json()["items"]
    assert len(many) == 50
    assert client.get("/items?q=zzzzqqq").json()["items"] == []
    assert client.get("/items?q=").status_code == 422 and client.get("/items").status_code == 422
    assert client.get("/items?q=star&limit=51").status_code == 422


# ------------------------------------------------------------------------------------------------ #
# explanations
# ------------------------------------------------------------------------------------------------ #
def test_unsupported_method_is_400_naming_the_supported_ones(client, pop_client):
    from whyrec.recipes import get_recipe

    supported = "supported: " + ", ".join(m for m in get_recipe("lightgcn").explain_methods if m != "shapley")
    assert "features" not in supported
    msg = detail(client.get("/users/1/explanations/50?method=features"), 400)
    assert "cannot be explained with method features" in msg and supported in msg
    assert supported in detail(client.get("/users/1/explanations/50?method=bogus"), 400)
    assert "supported: none" in detail(pop_client.get("/users/1/explanations/50?method=concepts"), 400)
    assert client.get("/users/1/explanations/50").status_code == 422  # method is required


def test_missing_method_module_is_a_clean_501(run, monkeypatch):
    from whyrec import explain

    import dataclasses

    monkeypatch.setitem(explain.EXPLAINERS, "history",
                        dataclasses.replace(explain.EXPLAINERS["history"], module="whyrec.explain._not_written_yet"))
    c = TestClient(create_app(run))
    assert "not available in this version" in detail(c.get("/users/1/explanations/50?method=history"), 501)
    assert "history" not in c.get("/health").json()["available_methods"]


@pytest.fixture
def fake_history(monkeypatch):
    """A stand-in ``history`` explainer: records its calls."""
    calls = []
    mod = types.ModuleType("whyrec.explain.history")

    def explain_run(run, user, item, **options):
        calls.append((user, item, options))
        if options.get("steps") == 13:
            raise RuntimeError("explainer bug")
        if options.get("steps") == 12:
            raise ValueError("bad option for history")
        return {"method": "history", "user": int(run.user_ids[user]), "item": int(run.item_ids[item]),
                "score": np.float32(1.5), "attributions": [{"title": "A", "attribution": 1.0}]}

    mod.explain_run, mod.render_text, mod.plot = explain_run, lambda r: "", lambda r, p: None
    monkeypatch.setitem(sys.modules, "whyrec.explain.history", mod)
    return calls


def test_explanation_dispatches_to_the_method_module(run, fake_history):
    c = TestClient(create_app(run), raise_server_exceptions=False)
    assert "history" in c.get("/health").json()["available_methods"]
    assert "only apply to --method features" in detail(
        c.get("/users/7/explanations/100?method=history&baseline=zero"), 400)
    r = c.get("/users/7/explanations/Fargo%20(1996)?method=history&steps=20&top=5")
    assert r.status_code == 200, r.text
    body = r.json()
    legacy = {"method": "history", "user": 7, "item": 100, "score": 1.5,
              "attributions": [{"title": "A", "attribution": 1.0}]}
    assert {k: body[k] for k in legacy} == legacy  # the method's own result, plus the common shape
    assert body["explanation"]["score"] == 1.5 and body["explanation"]["user"] == 7
    assert body["already_interacted"] is True  # user 7 rated Fargo: the explanation says so
    user, item, options = fake_history[0]
    assert user == run.user_index(7) and item == run.titles().resolve("100")
    assert options == {"steps": 20, "top": 5}  # options that are not the method's: refused (below)
    assert c.get("/users/7/explanations/100?method=history&steps=20&top=5").json() == body
    assert len(fake_history) == 1  # the same pair and options again: from the cache
    assert "unknown user id" in detail(c.get("/users/100000/explanations/100?method=history"), 404)
    assert "no item matches" in detail(c.get("/users/7/explanations/qqqqzzzz?method=history"), 404)
    assert c.get("/users/7/explanations/100?method=history&steps=0").status_code == 422
    assert c.get("/users/7/explanations/100?method=history&steps=1001").status_code == 422
    assert c.get("/users/7/explanations/100?method=history&baseline=median").status_code == 422
    assert "bad option" in detail(c.get("/users/7/explanations/100?method=history&steps=12"), 400)
    assert "explainer bug" in detail(c.get("/users/7/explanations/100?method=history&steps=13"), 500)


def test_concepts_explanation_for_real(client):
    r = client.get("/users/7/explanations/50?method=concepts")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "concepts" and body["user"] == 7 and body["item"] == 50
    rows = body["genres"]
    assert rows and {"genre", "sensitivity", "share", "item_genre"} <= set(rows[0])
    assert any(g["item_genre"] for g in rows)


def test_history_explanation_for_real_is_complete_and_matches_the_cli_module(client, run):
    r = client.get("/users/7/explanations/50?method=history&top=5")
    assert r.status_code == 200, r.text
    body = r.json()
    from whyrec.explain import history

    direct = history.explain_run(run, run.user_index(7), run.titles().resolve("50"), top=5)
    assert body["steps"] == 3 and len(body["attributions"]) == 5  # K = 3 exact nodes by default
    assert body["score"] == pytest.approx(direct["score"], abs=1e-9)
    assert [a["item"] for a in body["attributions"]] == [a["item"] for a in direct["attributions"]]
    # completeness: the history's attributions add up to ŷ(trained graph) − ŷ(user's edges removed)
    total = body["positive_total"] + body["negative_total"]
    assert total == pytest.approx(body["score"] - body["baseline_score"], abs=1e-6)


# ------------------------------------------------------------------------------------------------ #
def test_the_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for ref in ('src="/static/app.js"', 'href="/static/style.css"', 'id="liked-input"', 'id="recs"'):
        assert ref in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "https://" not in js.text.replace("http://www.w3.org/2000/svg", "")
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_a_run_without_genres_starts_and_says_why_concepts_cannot_answer(tmp_path):
    """Start-up prepares every method's per-run work; one that cannot apply to this dataset
    (concepts on Last.fm: no genres) must not stop the service, its requests get a clear 400."""
    c = TestClient(create_app(train(tmp_path / "lfm", "--model", "lightgcn", "--epochs", "1", dataset="lastfm-kg")))
    user = c.get("/health").json()["user_id_range"][0]
    top = c.get(f"/users/{user}/recommendations?k=1").json()["recommendations"][0]["item_id"]
    assert "no item genres" in detail(c.get(f"/users/{user}/explanations/{top}?method=concepts"), 400)
    assert c.get(f"/users/{user}/explanations/{top}?method=history").status_code == 200


def test_serve_command_refuses_a_bad_run_folder(tmp_path):
    result = runner.invoke(cli, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "error: run folder" in result.stderr and "does not exist" in result.stderr
    assert "--port" in runner.invoke(cli, ["serve", "--help"]).output


def test_worker_factory_reads_the_run_from_the_environment(lgcn_dir, monkeypatch):
    from whyrec.serve.app import app_from_env

    monkeypatch.delenv("WHYREC_SERVE_RUN", raising=False)
    with pytest.raises(RuntimeError, match="WHYREC_SERVE_RUN"):
        app_from_env()
    monkeypatch.setenv("WHYREC_SERVE_RUN", str(lgcn_dir))
    monkeypatch.setenv("WHYREC_SERVE_MAX_BODY", "20")
    c = TestClient(app_from_env())
    assert c.get("/users/1/recommendations?k=2").status_code == 200
    assert c.post("/recommendations", json={"liked": ["toy story", "star wars"]}).status_code == 413


def test_the_service_never_wrote_into_the_run_folder(lgcn_dir, before, client):
    client.get("/users/1/recommendations")  # after every test above
    assert snapshot(lgcn_dir) == before


def test_explanation_queue_is_first_in_first_out_and_hands_back_errors():
    """One worker: jobs start in arrival order, results and exceptions reach their own request."""
    import asyncio
    import threading

    from whyrec.serve.app import ExplainQueue

    started, gate = [], threading.Event()

    def work(job):
        gate.wait(5)
        started.append(job)
        if job == "bad":
            raise KeyError("no such user")
        return job * 2

    q = ExplainQueue(work, workers=1)

    async def main():
        tasks = [asyncio.ensure_future(q.submit(j)) for j in ("a", "b", "bad", "c", "d")]
        await asyncio.sleep(0.05)  # every job is queued before the worker may start
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    assert started == ["a", "b", "bad", "c", "d"]
    assert out[:2] == ["aa", "bb"] and out[3:] == ["cc", "dd"]
    assert isinstance(out[2], KeyError) and out[2].args == ("no such user",)


# ------------------------------------------------------------------------------------------------ #
# the service only wraps the library: the same request gives the same JSON from Python and HTTP
# ------------------------------------------------------------------------------------------------ #
def test_python_cli_and_http_give_the_same_json(client, lgcn_dir):
    """One request three ways — ``Run`` in Python (a fresh load, nothing precomputed), ``whyrec ...
    --json`` and HTTP (the service's precomputed tables and fast path) — gives one JSON object."""
    from whyrec.run import load_run

    fresh = load_run(lgcn_dir)
    assert fresh.prepared is None  # the Python side computes every request; the service precomputed

    def cli_json(*args):
        result = runner.invoke(cli, [*map(str, args), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    def same(a, b):  # floats through JSON: what each face prints; scores to float32 round-off
        a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
        sa = [r.pop("score") for r in a.get("recommendations", [])]
        sb = [r.pop("score") for r in b.get("recommendations", [])]
        assert a == b and sa == pytest.approx(sb, rel=1e-5)

    for user in ("1", "42", "7"):
        py = fresh.recommend(user=user, k=8).to_dict()
        assert py["n_seen"] == fresh.matrices["seen"][fresh.user_index(user)].nnz and py["profile"]
        same(client.get(f"/users/{user}/recommendations?k=8").json(), py)
        same(client.get(f"/users/{user}/recommendations?k=8&via=route").json(), py)
        same(cli_json("recommend", lgcn_dir, "--user", user, "--k", 8), py)
        assert py["profile"] == fresh.profile(user=user)
    liked = ["toy story", "50", "Fargo (1996)", "Star Wars (1977)"]
    py = fresh.recommend(liked=liked, k=7).to_dict()
    assert all(r["because"] for r in py["recommendations"])  # the library itself says "because you liked"
    assert py["profile"] == fresh.profile(liked=liked) and len(py["notes"]) == 1  # "50" is Star Wars
    same(client.post("/recommendations", json={"liked": liked, "k": 7}).json(), py)
    same(cli_json("recommend", lgcn_dir, *[a for x in liked for a in ("--liked", x)], "--k", 7), py)
    assert client.get("/items?q=star&limit=20").json()["items"] == fresh.search("star", limit=20)
    item = py["recommendations"][0]["item_id"]
    why = json.loads(json.dumps(fresh.explain(user="1", item=item, method="history", top=5).to_dict()))
    timed = why.pop("seconds")  # how long it took: the one key that differs from run to run
    http = client.get(f"/users/1/explanations/{item}?method=history&top=5").json()
    cli_why = cli_json("explain", lgcn_dir, "--user", "1", "--item", item, "--method", "history", "--top", 5)
    assert timed > 0 and http.pop("seconds") > 0 and cli_why.pop("seconds") > 0
    assert http == why == cli_why and len(why["attributions"]) == 5


def test_genre_profile_counts_by_hand(run):
    from whyrec.recommend import genre_profile

    toy, star = run.titles().resolve("1"), run.titles().resolve("50")  # Animation|Children's|Comedy; Action|Adventure|Romance|Sci-Fi|War
    prof = {g["genre"]: (g["count"], g["share"]) for g in genre_profile(run, [toy, star, toy])}
    assert prof["Animation"] == (2, 2 / 3) and prof["Sci-Fi"] == (1, 1 / 3)
    assert list(prof)[:3] == ["Animation", "Children's", "Comedy"]  # most frequent first, ties by name
    with pytest.raises(ValueError, match="either user"):
        run.profile()


def test_fold_in_contributions_equal_a_dense_computation():
    """A 2-user, 3-item graph by hand: the per-liked-item terms are w_j Σ_k α_{k+1} e_j^(k) · e_r with
    the layers from a dense normalized adjacency, and they sum to the folded-in user's scores."""
    import scipy.sparse as sp
    import torch

    from whyrec.models import LightGCN, LightGCNConfig

    train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    torch.manual_seed(0)
    model = LightGCN(2, 3, LightGCNConfig(dim=4, n_layers=2), graph=train)
    a = np.zeros((5, 5))
    a[:2, 2:], a[2:, :2] = train.toarray(), train.toarray().T
    d = a.sum(1)
    norm = a / np.sqrt(np.outer(d, d))
    e0 = model._emb0().detach().double().numpy()
    layers = [e0, norm @ e0, norm @ norm @ e0]
    final = sum(alpha * x for alpha, x in zip([1 / 3] * 3, layers))
    liked, targets = [0, 2], [0, 1, 2]
    deg = train.toarray().sum(0)
    w = 1 / np.sqrt(len(liked) * (deg[liked] + 1))
    want = np.stack([w[j] * sum(layers[k][2 + liked[j]] / 3 for k in range(2)) @ final[2:][targets].T
                     for j in range(2)])
    got = model.fold_in_contributions(liked, targets).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    scores = model.score_vectors(model.fold_in(torch.tensor(liked)).unsqueeze(0))[0].detach().double().numpy()
    np.testing.assert_allclose(got.sum(0), scores[targets], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="distinct"):
        model.fold_in_contributions([0, 0], targets)
