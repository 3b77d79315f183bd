"""KGCN (whyrec.models.kgcn, recipe ``kgcn``): the paper's formula by hand, scoring paths, training on Last.fm."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from whyrec.cli import app
from whyrec.models.kgcn import KGCN, KGCNConfig, sample_neighbors

torch.set_num_threads(1)
runner = CliRunner()

# tiny KG: items 0..3 are entities 0..3, entities 4..6 are attributes; relations 0, 1.
# item 0 has 4 neighbours (>= K: distinct sample), items 1, 2 fewer (with replacement),
# item 3 none ("self" relation); entity 4 -- 6 is an entity-entity link (reached at H = 2).
TRIPLES = np.array([[0, 0, 4], [0, 1, 5], [0, 1, 6], [0, 0, 2],
                    [1, 0, 4], [2, 1, 6], [2, 0, 5], [4, 1, 6]], np.int64)
N_USERS, N_ITEMS, N_ENT, N_REL, K = 3, 4, 7, 2, 3


def tiny(n_iter: int, aggregator: str = "sum", **kw) -> KGCN:
    torch.manual_seed(7)
    m = KGCN(N_USERS, N_ITEMS, TRIPLES, N_ENT, N_REL,
             KGCNConfig(dim=5, n_neighbors=K, n_iter=n_iter, aggregator=aggregator, neighbor_seed=3, **kw))
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # fixed, large, distinct weights so that softmax, relu, tanh and each W_i matter
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return m.eval()


def by_hand(m: KGCN, u: int, v: int) -> float:
    """The paper's recursion in numpy from the model's parameters and sampled neighbours:
    rep(e, 0) = e; rep(e, i) = σ_i(W_i agg(rep(e, i-1), Σ_k π̃_k rep(S(e)_k, i-1)) + b_i),
    π̃ = softmax_k(u · r_k), σ = tanh at i = H else relu; score = u · rep(v, H)."""
    U = m.user_emb.weight.detach().double().numpy()
    E = m.entity_emb.weight.detach().double().numpy()
    R = m.relation_emb.weight.detach().double().numpy()
    Ws = [lin.weight.detach().double().numpy() for lin in m.aggregators]
    bs = [lin.bias.detach().double().numpy() for lin in m.aggregators]
    adj_e, adj_r = m.adj_entity.numpy(), m.adj_relation.numpy()
    H, agg, user = m.n_iter, m.config.aggregator, U[u]

    def rep(e: int, i: int) -> np.ndarray:
        if i == 0:
            return E[e]
        scores = np.array([user @ R[r] for r in adj_r[e]])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        v_s = sum(w[k] * rep(int(adj_e[e, k]), i - 1) for k in range(len(w)))
        own = rep(e, i - 1)
        x = {"sum": own + v_s, "concat": np.concatenate([own, v_s]), "neighbor": v_s}[agg]
        y = Ws[i - 1] @ x + bs[i - 1]
        return np.tanh(y) if i == H else np.maximum(y, 0.0)

    return float(user @ rep(v, H))


def test_neighbour_sample_follows_the_kg():
    m = tiny(1)
    links = {(int(h), int(t), int(r)) for h, r, t in TRIPLES} | {(int(t), int(h), int(r)) for h, r, t in TRIPLES}
    adj_e, adj_r = m.adj_entity.numpy(), m.adj_relation.numpy()
    assert adj_e.shape == adj_r.shape == (N_ENT, K)
    for e in range(N_ENT):
        for n, r in zip(adj_e[e], adj_r[e]):
            if e == 3:  # no triple: itself through the extra "self" relation
                assert (n, r) == (3, N_REL)
            else:
                assert (e, int(n), int(r)) in links
    assert len(set(adj_e[0])) == K  # 4 neighbours >= K: drawn without replacement
    assert set(adj_e[1]) == {4}  # one neighbour: K draws with replacement
    # the sample is a persistent buffer (saved with the weights) and a function of the seed
    assert "adj_entity" in m.state_dict() and "adj_relation" in m.state_dict()
    again = sample_neighbors(TRIPLES, N_ENT, K, N_REL, np.random.default_rng(3))
    assert np.array_equal(again[0], adj_e) and np.array_equal(again[1], adj_r)


@pytest.mark.parametrize("n_iter,aggregator", [(1, "sum"), (2, "sum"), (2, "concat"), (1, "neighbor")])
def test_score_matches_the_paper_by_hand(n_iter, aggregator):
    m = tiny(n_iter, aggregator)
    with torch.no_grad():
        scores = m.score_users(torch.arange(N_USERS)).double().numpy()
    assert np.isfinite(scores).all() and scores.std() > 0.1
    for u in range(N_USERS):
        for v in range(N_ITEMS):
            assert scores[u, v] == pytest.approx(by_hand(m, u, v), rel=1e-5, abs=1e-5), (u, v)


def test_user_specific_attention_changes_scores():
    """Item 0 has neighbours through both relations, so its representation depends on the user;
    item 1 (one neighbour) does not."""
    m = tiny(1)
    with torch.no_grad():
        reps = m.item_representations(m.user_emb.weight, torch.arange(N_ITEMS).unsqueeze(0))
    assert (reps[0, 0] - reps[1, 0]).abs().max() > 1e-3
    torch.testing.assert_close(reps[0, 1], reps[1, 1])


@pytest.mark.parametrize("n_iter", [1, 2])
def test_score_users_equals_batch_embeddings_and_forward(n_iter):
    m = tiny(n_iter, eval_budget=1)  # one item per chunk: exercises the chunking
    users = torch.tensor([0, 1, 2, 2, 1, 0])
    pos = torch.tensor([0, 3, 1, 2, 0, 2])
    neg = torch.tensor([1, 2, 3, 0, 3, 3])
    with torch.no_grad():
        full = m.score_users(users)
        be = m.batch_embeddings(users, pos, neg)
        pairs = m(users, pos)
    assert full.shape == (len(users), N_ITEMS)
    rows = torch.arange(len(users))
    torch.testing.assert_close((be.users * be.pos).sum(-1), full[rows, pos])
    torch.testing.assert_close((be.users * be.neg).sum(-1), full[rows, neg])
    torch.testing.assert_close(pairs, full[rows, pos])
    # L2 rows: the user's and the items' own trainable rows
    torch.testing.assert_close(be.users0, m.user_emb.weight[users])
    torch.testing.assert_close(be.pos0, m.entity_emb.weight[pos])
    torch.testing.assert_close(be.neg0, m.entity_emb.weight[neg])
    with pytest.raises(NotImplementedError):
        m.embeddings()


def test_bad_kg_is_refused():
    with pytest.raises(ValueError, match="n_entities"):
        KGCN(2, 5, TRIPLES, 4, N_REL)
    with pytest.raises(ValueError, match="relation"):
        KGCN(2, 4, TRIPLES, N_ENT, 1)


def _train(out, model, *extra):
    args = ["train", "--dataset", "lastfm-kg", "--data-dir", str(dataset_dir("lastfm-kg")), "--model", model,
            "--out", str(out), "--seed", "2020", "--k", "100", "--threads", "1", "--no-progress", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "metrics.json").read_text())["test"]


def test_learns_on_lastfm_and_reloads(tmp_path):
    from whyrec.run import load_run

    pop = _train(tmp_path / "pop", "pop")
    kgcn = _train(tmp_path / "kgcn", "kgcn", "--epochs", "8", "--eval-every", "4", "--lr", "0.01")
    assert kgcn["recall@100"] > pop["recall@100"] + 0.03, (kgcn, pop)
    config = json.loads((tmp_path / "kgcn" / "config.json").read_text())
    assert config["model_config"]["dim"] == 16 and config["train_config"]["batch_size"] == 128
    assert config["train_config"]["lr"] == 0.01  # a flag given a non-default value wins
    run = load_run(tmp_path / "kgcn")
    assert isinstance(run.model, KGCN) and set(run.extras) == {"kg_triples", "n_entities", "n_relations"}
    from whyrec.evaluate import evaluate_ranking

    again = evaluate_ranking(run.model.score_users, run.matrices["train"], run.matrices["test"], ks=(100,))
    assert again["recall@100"] == pytest.approx(kgcn["recall@100"], abs=1e-9)
    # reloading twice gives the same scores (the neighbour sample comes from the weights file)
    other = load_run(tmp_path / "kgcn").model
    with torch.no_grad():
        users = torch.arange(50)
        torch.testing.assert_close(run.model.score_users(users), other.score_users(users), rtol=0, atol=0)


def test_dataset_without_kg_is_refused(tmp_path):
    out = tmp_path / "x"
    result = runner.invoke(app, ["train", "--dataset", "ml-100k", "--data-dir", str(dataset_dir("ml-100k")),
                                 "--model", "kgcn", "--out", str(out), "--threads", "1", "--no-progress"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "knowledge graph" in lines[0] and "ml-100k" in lines[0] and "Traceback" not in result.output
    assert not out.exists()


def test_generic_flags_default_to_the_models_own_values_and_a_given_flag_is_used(tmp_path):
    """No flag: the KGCN paper's lr 5e-4 / batch 128 / d 16; `--lr 0.001` (LightGCN's default value)
    is used as given, not mistaken for "not given"."""
    _train(tmp_path / "plain", "kgcn", "--epochs", "1")
    cfg = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert cfg["train_config"]["lr"] == 5e-4 and cfg["train_config"]["batch_size"] == 128
    assert cfg["model_config"]["dim"] == 16
    _train(tmp_path / "given", "kgcn", "--epochs", "1", "--lr", "0.001", "--dim", "64")
    cfg = json.loads((tmp_path / "given" / "config.json").read_text())
    assert cfg["train_config"]["lr"] == 0.001 and cfg["model_config"]["dim"] == 64
