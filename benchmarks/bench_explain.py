"""Latency of one Integrated-Gradients feature explanation on ML-1M, side by side with a naive
reference, and the top-1 recommendation of every user explained in one batch job.

    python benchmarks/bench_explain.py --run RUN_DIR [--steps 50] [--naive 2] [--threads 2]

``RUN_DIR``: a ``lightgcn-features`` run on ML-1M (see ``docs/explain_ig.md`` for the command).

* **ours**: :func:`whyrec.explain.features.explain_run` for a given (user, item) after the run is
  loaded (the per-run precompute -- final embeddings, baselines -- is timed separately, once);
  median over ``--repeat`` random users. The same for ``--method history``.
* **naive reference** (what the seed's ~40 s implementation did): Captum IG on a forward that takes
  ONE interpolated feature vector, writes it into the pair's rows of the feature matrices and
  re-propagates the whole graph (``internal_batch_size=1``: one full forward/backward per step).
  Timed on ``--naive`` explanations and extrapolated to all users.
* **batch job**: every user's top-1 item as `whyrec recommend` lists it (every rated item masked), then
  :func:`whyrec.explain.features.explain_many` over all those pairs; total seconds and the worst
  completeness error.

Writes ``benchmarks/results/explain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--naive", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "explain.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from captum.attr import IntegratedGradients

    from whyrec.evaluate import top_k_items
    from whyrec.explain import features as F
    from whyrec.explain import history as H
    from whyrec.run import load_run

    load_avg = os.getloadavg()
    t0 = time.perf_counter()
    run = load_run(args.run)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ig = F.FeatureIG.for_run(run)
    t_pre = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    users = rng.integers(0, run.n_users, args.repeat)
    items = rng.integers(0, run.n_items, args.repeat)

    F.explain_run(run, int(users[0]), int(items[0]), steps=args.steps)  # warm-up
    ours = []
    for u, m in zip(users, items):
        t0 = time.perf_counter()
        F.explain_run(run, int(u), int(m), steps=args.steps)
        ours.append(time.perf_counter() - t0)
    with_top = []
    for u in users[:5]:
        t0 = time.perf_counter()
        F.explain_run(run, int(u), None, steps=args.steps)
        with_top.append(time.perf_counter() - t0)
    hist_t = []
    H.explain_run(run, int(users[0]), int(items[0]), steps=args.steps)
    for u, m in zip(users[:10], items[:10]):
        t0 = time.perf_counter()
        H.explain_run(run, int(u), int(m), steps=args.steps)
        hist_t.append(time.perf_counter() - t0)
    hist_exact = []
    for u, m in zip(users[:10], items[:10]):
        t0 = time.perf_counter()
        H.history_importances(run, int(u), int(m))
        hist_exact.append(time.perf_counter() - t0)

    naive, naive_err = [], []
    for u, m in zip(users[: args.naive], items[: args.naive]):
        res = ig.attribute([int(u)], [int(m)], steps=args.steps)
        x = res["inputs"].float()
        xb = res["baselines"].float()
        t0 = time.perf_counter()
        ref = IntegratedGradients(F.repropagation_forward(run.model, int(u), int(m))).attribute(
            x, baselines=xb, n_steps=args.steps, internal_batch_size=1)
        naive.append(time.perf_counter() - t0)
        naive_err.append(float((ref.double() - res["attributions"]).abs().max()))

    t0 = time.perf_counter()
    all_users = np.arange(run.n_users)
    top1, _ = top_k_items(run.model.score_users, run.matrices["seen"], 1, all_users)
    t_rank = time.perf_counter() - t0
    batch = F.explain_many(run, np.stack([all_users, top1[:, 0]], 1), steps=args.steps)
    diff = batch["score"] - batch["baseline_score"]
    rel = np.abs(batch["delta"]) / np.maximum(np.abs(diff), 1e-12)

    per_ours = statistics.median(ours)
    per_naive = statistics.median(naive)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads, "load_average_at_start": load_avg,
                    "platform": platform.platform(), "torch": torch.__version__,
                    "note": "shared 2-core machine, loaded by other processes: absolute seconds are inflated"},
        "run": str(args.run), "dataset": run.config["dataset"], "model": run.config["model"],
        "model_config": run.config["model_config"], "n_users": run.n_users, "n_items": run.n_items,
        "n_train_edges": int(run.matrices["train"].nnz), "steps": args.steps, "quadrature": "gausslegendre",
        "load_run_s": t_load, "per_run_precompute_s": t_pre,
        "features_one_explanation_s": {"median": per_ours, "min": min(ours), "max": max(ours), "n": len(ours),
                                       "target": 0.2},
        "features_one_explanation_with_top1_lookup_s": {"median": statistics.median(with_top), "n": len(with_top)},
        "history_one_explanation_s": {"median": statistics.median(hist_t), "n": len(hist_t),
                                      "note": f"{args.steps} quadrature nodes + single-edge removal effects of the top 10"},
        "history_importances_exact_min_nodes_s": {"median": statistics.median(hist_exact), "n": len(hist_exact),
                                                  "note": "K nodes (exact), the faithfulness interface"},
        "naive_reference_one_explanation_s": {"median": per_naive, "runs": naive, "n": len(naive),
                                              "max_abs_difference_to_ours": max(naive_err)},
        "speedup_one_explanation": per_naive / per_ours,
        "batch_job_all_users_top1": {"n_pairs": int(len(all_users)), "ranking_s": t_rank, "explain_s": batch["seconds"],
                                     "total_s": t_rank + batch["seconds"],
                                     "max_relative_completeness_error": float(rel.max()),
                                     "naive_extrapolated_s": per_naive * len(all_users)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
