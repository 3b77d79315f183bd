"""The per-recommendation faithfulness metrics against answers written down by hand (issue 16, item 6)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from whyrec.explain.faithfulness import evaluate_curves, paired_test
from whyrec.models.gf_cf import GFCF, GFCFConfig

# The graph of tests/test_counterfactual.py: user 0 has history {0, 1, 2}, GF-CF with alpha = 0 scores
#   s(3) = F(0,3) + F(1,3) + F(2,3) = 1/(4√2) + 1/(4√2) + 1/(2√5) = 0.577164     s(4) = F(2,4) = 1/√10 = 0.316228
# (items 0-2 are masked; item 3 is user 0's top-1, item 4 the only competitor).
EDGES = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (2, 3), (3, 2), (3, 4), (4, 2), (4, 4), (5, 2), (5, 3),
         (6, 2), (6, 3)]
A, B, C = 1 / (4 * np.sqrt(2)), 1 / (2 * np.sqrt(5)), 1 / np.sqrt(10)  # F(0,3) = F(1,3), F(2,3), F(2,4)
S0 = 2 * A + B


@pytest.fixture(scope="module")
def run():
    r, c = zip(*EDGES)
    train = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(7, 5))
    test = sp.csr_matrix((np.ones(1, np.float32), ([0], [4])), shape=(7, 5))
    model = GFCF(train, GFCFConfig(rank=1, alpha=0.0)).fit_basis()
    return SimpleNamespace(model=model, matrices={"train": train, "test": test, "seen": train}, n_items=5,
                           config={"model": "gf-cf"}, user_ids=np.arange(7), item_ids=np.arange(5), path="hand",
                           ratings=None, _explain_caches=None)


def test_history_explainer_by_hand(run):
    """The exact decomposition orders the history by F(j, 3): item 2 (0.2236), then 0 and 1 (0.1768, tie by
    index).  Deletion: without {2} s(3) = 2A = 0.35355 (s(4) = 0: rank 1), without {2, 0} s(3) = A (rank 1).
    Insertion: only {2} gives s(3) = B = 0.22361 < s(4) (rank 2), only {2, 0} gives A + B (rank 1)."""
    res = evaluate_curves(run, "history", max_remove=2, ks=(1,), fidelity_m=2, flip_max=2, users=[0])
    u = res["per_user"][0]
    assert (u["user"], u["item"], u["n_history"]) == (0, 3, 3) and u["score"] == pytest.approx(S0, rel=1e-5)
    assert u["deletion_rank"] == [1, 1] and u["insertion_rank"] == [2, 1]
    np.testing.assert_allclose(u["deletion_score"], [2 * A / S0, A / S0], rtol=1e-5)
    np.testing.assert_allclose(u["insertion_score"], [B / S0, (A + B) / S0], rtol=1e-5)
    assert res["deletion"]["area"] == pytest.approx((3 * A / S0) / 2, rel=1e-5)  # 0.459431
    assert res["insertion"]["area"] == pytest.approx((A + 2 * B) / S0 / 2, rel=1e-5)  # 0.540569
    assert res["knockout"]["1"] == [0.0, 0.0]  # item 3 never leaves first place in this order
    assert res["flip"]["1"] == {"flipped": 0.0, "median": None, "n_flipped": 0}
    fd = res["fidelity"]  # at m = 2: (s0 - A)/s0 and (s0 - (A + B))/s0
    assert fd["fidelity_plus"] == pytest.approx(1 - A / S0, rel=1e-5)  # 0.693713
    assert fd["fidelity_minus"] == pytest.approx(1 - (A + B) / S0, rel=1e-5)  # 0.306287
    assert fd["fidelity_plus@1"] == 0.0 and fd["fidelity_minus@1"] == 0.0
    one = evaluate_curves(run, "history", max_remove=2, ks=(1,), fidelity_m=1, flip_max=2, users=[0])
    assert one["fidelity"]["fidelity_minus@1"] == 1.0  # only item 2 kept: item 4 overtakes (rank 2)
    assert one["fidelity"]["fidelity_plus"] == pytest.approx(1 - 2 * A / S0, rel=1e-5)


def test_counterfactual_explainer_by_hand(run):
    """The counterfactual set is {0, 1} (listed 0, 1: equal F(j, 3)), then item 2.  Deletion: without {0}
    s(3) = A + B (rank 1), without {0, 1} s(3) = B < s(4) (rank 2): knocked out at m = 2, flip size 2 --
    where the history explainer's lower deletion area never knocks the item out."""
    res = evaluate_curves(run, "counterfactual", max_remove=2, ks=(1, 2), fidelity_m=2, flip_max=2, users=[0])
    u = res["per_user"][0]
    assert u["deletion_rank"] == [1, 2] and u["insertion_rank"] == [1, 1]
    np.testing.assert_allclose(u["deletion_score"], [(A + B) / S0, B / S0], rtol=1e-5)
    np.testing.assert_allclose(u["insertion_score"], [A / S0, 2 * A / S0], rtol=1e-5)
    assert res["knockout"] == {"1": [0.0, 1.0], "2": [0.0, 0.0]}  # only two items can be ranked: never out of 2
    assert res["flip"]["1"] == {"flipped": 1.0, "median": 2.0, "n_flipped": 1}
    assert res["flip"]["2"]["flipped"] == 0.0
    assert res["fidelity"]["fidelity_plus@1"] == 1.0 and res["fidelity"]["fidelity_minus@1"] == 0.0
    assert res["deletion"]["area"] == pytest.approx((A + 2 * B) / S0 / 2, rel=1e-5)
    # PN/PS of the set E = {0, 1}: without E, s(3) = B < s(4) = C (rank 2: out of first place, not of the top 2);
    # E alone, s(3) = 2A > s(4) = 0 (rank 1)
    assert u["set_size"] == 2 and u["set_ranks"] == [2, 1]
    assert res["pn_ps"] == {"n_explained": 1, "set_size_median": 2.0, "PN@1": 1.0, "PS@1": 1.0, "PN@2": 0.0,
                            "PS@2": 1.0}
    assert evaluate_curves(run, "history", max_remove=2, ks=(1,), fidelity_m=1, flip_max=2, users=[0])["pn_ps"] \
        is None  # a ranking, not a set: PN/PS do not apply


def test_random_curve_is_a_real_removal_order(run):
    res = evaluate_curves(run, "random", max_remove=2, ks=(1,), fidelity_m=1, flip_max=2, users=[0], seed=0)
    u = res["per_user"][0]
    # whatever the order, each removal set is one of the hand-computed ones
    singles = {(2 * A) / S0, (A + B) / S0}
    assert any(u["deletion_score"][0] == pytest.approx(v, rel=1e-5) for v in singles)
    pairs = {A / S0, B / S0}
    assert any(u["deletion_score"][1] == pytest.approx(v, rel=1e-5) for v in pairs)
    # a filter is linear: removing order[:m] and keeping only order[:m] split the score exactly
    np.testing.assert_allclose(np.add(u["deletion_score"], u["insertion_score"]), [1.0, 1.0], rtol=1e-5)


def test_paired_test_and_bad_input(run):
    a = {"per_user": [{"user": i, "item": 0, "deletion_area": 0.1 * i} for i in range(8)]}
    b = {"per_user": [{"user": i, "item": 0, "deletion_area": 0.1 * i + 0.05} for i in range(8)]}
    t = paired_test(a, b)
    assert t["n"] == 8 and t["median_difference"] == pytest.approx(-0.05) and t["p_value"] < 0.05
    assert paired_test(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="no test user has more than --max-remove 3"):
        evaluate_curves(run, "history", max_remove=3, users=[0])
    with pytest.raises(ValueError, match="--fidelity-m 3 is larger than --max-remove 2"):
        evaluate_curves(run, "history", max_remove=2, fidelity_m=3, users=[0])
    with pytest.raises(ValueError, match="unknown faithfulness method"):
        evaluate_curves(run, "bogus", max_remove=2, fidelity_m=1, users=[0])
