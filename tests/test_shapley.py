"""``--method shapley``: against the Shapley formula evaluated by brute force over every coalition (numpy,
independent of Captum), on the hand-computed GF-CF graph of test_counterfactual.py (linear: the values
are the exact contributions written down there), and on real ML-100K runs (a graph filter: equal to the
exact decomposition; NMF, not linear in the history: additive to the score minus the no-history score)."""

from __future__ import annotations

from itertools import combinations
from math import factorial
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import whyrec
from test_counterfactual import HAND_EDGES, matrix
from whyrec.explain import EXPLAINERS
from whyrec.explain.shapley import EXACT_MAX, shapley_values
from whyrec.models.gf_cf import GFCF, GFCFConfig


def brute_force(f, n: int) -> np.ndarray:
    """φ_j = Σ_{S ⊆ N∖{j}} |S|!(n−|S|−1)!/n! (f(S ∪ {j}) − f(S)), every coalition enumerated."""
    phi = np.zeros(n)
    for j in range(n):
        others = [i for i in range(n) if i != j]
        for size in range(n):
            w = factorial(size) * factorial(n - size - 1) / factorial(n)
            for s in combinations(others, size):
                phi[j] += w * (f(set(s) | {j}) - f(set(s)))
    return phi


def game(weights, pairs):
    """A non-additive game: Σ weights of the members, plus a bonus for every pair present together."""
    def f(members: set) -> float:
        return sum(weights[i] for i in members) + sum(b for (a, c), b in pairs.items() if a in members and c in members)

    def batched(coalitions: torch.Tensor) -> torch.Tensor:
        return torch.tensor([f({i for i, x in enumerate(row) if x > 0.5}) for row in coalitions.tolist()],
                            dtype=torch.float64)

    return f, batched


def test_exact_values_equal_the_formula_on_a_game_with_interactions():
    f, batched = game([1.0, -0.5, 2.0, 0.0, 0.25], {(0, 1): 3.0, (2, 4): -1.0, (1, 3): 0.5})
    phi, full, none = shapley_values(batched, 5)
    assert np.allclose(phi, brute_force(f, 5), atol=1e-12)
    # a pair's bonus is split evenly between its two members
    assert phi[0] == pytest.approx(1.0 + 1.5) and phi[3] == pytest.approx(0.25)
    assert full == pytest.approx(f(set(range(5)))) and none == 0.0


def test_sampled_values_are_additive_exactly_and_near_the_formula():
    rng = np.random.default_rng(0)
    n = EXACT_MAX + 3
    f, batched = game(list(rng.normal(size=n)), {(0, 1): 2.0, (2, 5): -1.5, (3, 8): 1.0})
    exact = brute_force(f, n)
    few, full, none = shapley_values(batched, n, samples=3, seed=1)
    assert few.sum() == pytest.approx(full - none, abs=1e-6)  # every order telescopes
    many, _, _ = shapley_values(batched, n, samples=400, seed=1)
    assert np.abs(many - exact).max() < 0.1 < np.abs(few - exact).max() + 0.1
    assert np.abs(many - exact).max() < np.abs(few - exact).max()
    again, _, _ = shapley_values(batched, n, samples=3, seed=1)
    assert np.array_equal(few, again)  # seeded


def test_hand_computed_graph_filter():
    train = matrix(HAND_EDGES, (7, 5))
    model = GFCF(train, GFCFConfig(rank=1, alpha=0.0)).fit_basis()
    run = SimpleNamespace(model=model, matrices={"train": train, "seen": train}, n_items=5, n_users=7,
                          config={"model": "gf-cf"}, user_ids=np.arange(7), item_ids=np.arange(5), item_titles=None,
                          ratings=None, path=None, _explain_caches=None)
    r = EXPLAINERS["shapley"].load().explain_run(run, 0, 3)
    values = {h["item"]: h["value"] for h in r["history"]}
    # F(0,3) = F(1,3) = 1/(4√2), F(2,3) = 1/(2√5) (test_counterfactual.py)
    assert values[0] == pytest.approx(1 / (4 * np.sqrt(2)), rel=1e-5)
    assert values[1] == pytest.approx(1 / (4 * np.sqrt(2)), rel=1e-5)
    assert values[2] == pytest.approx(1 / (2 * np.sqrt(5)), rel=1e-5)
    assert r["exact"] and r["baseline"] == pytest.approx(0, abs=1e-7)
    assert r["score"] == pytest.approx(sum(values.values()), rel=1e-5)


@pytest.fixture(scope="module")
def gfcf_run(ml100k):
    return whyrec.fit(ml100k, model="gf-cf", seed=0, progress=False)


def test_graph_filter_on_ml100k_equals_the_exact_decomposition(gfcf_run):
    run = gfcf_run
    why = run.explain(user="1", method="shapley", top=1000, samples=2)
    exact = run.explain(user="1", item=why.item, method="history", top=1000)
    assert why.additive and why.item == exact.item
    got = {c.item: c.value for c in why.contributions}
    want = {c.item: c.value for c in exact.contributions}
    assert set(got) == set(want) and len(got) > EXACT_MAX
    assert max(abs(got[i] - want[i]) for i in got) < 1e-5
    assert sum(got.values()) == pytest.approx(why.score - why.baseline, abs=1e-5)


def test_nmf_on_ml100k_is_additive_over_its_no_history_score(ml100k):
    run = whyrec.fit(ml100k, model="nmf", seed=0, progress=False)
    from whyrec.explain import supported_methods

    assert "shapley" in supported_methods(run)
    why = run.explain(user="5", method="shapley", top=5, samples=4, seed=3)
    d = why.to_dict()
    assert d["n_history"] > len(d["history"]) and why.contributions[-1].label.endswith("other history items")
    assert sum(c.value for c in why.contributions) == pytest.approx(why.score - why.baseline, abs=1e-4)
    values = [c.value for c in why.contributions[:-1]]
    assert values == sorted(values, reverse=True) and values[0] > 0


def test_options_are_checked(gfcf_run):
    with pytest.raises(ValueError, match="--samples only apply to --method shapley"):
        EXPLAINERS["counterfactual"].check_options({"samples": 4})
    with pytest.raises(ValueError, match="samples must be at least 1"):
        gfcf_run.explain(user="1", method="shapley", samples=0)
