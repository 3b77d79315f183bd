"""The accuracy cost of LightGCN's history-only mode (issue 16, item 4; ``docs/explanations.md``).

Three ways to score the same test users, full ranking, training items masked (``Run.evaluate``):

* ``free``: a run trained with LightGCN's free layer-0 user embeddings (``--run-free``);
* ``free, scored history-only``: the same weights in :class:`whyrec.models.lightgcn_history.LightGCNHistory`
  (the user's ``α_0 e_u^(0)`` term dropped at scoring time, nothing retrained);
* ``history``: a run trained with ``--opt user_repr=history`` (``--run-history``).

    python benchmarks/lightgcn_history.py --run-free runs/ml100k --run-history runs/ml100k-history \\
        --out benchmarks/results/lightgcn_history_ml100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-free", required=True)
    p.add_argument("--run-history", required=True)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    from whyrec.models.lightgcn_history import LightGCNHistory
    from whyrec.run import load_run

    ks = (10, 20)
    free = load_run(args.run_free)
    hist = load_run(args.run_history)
    rows = []
    for label, run in (("free", free), ("history", hist)):
        t0 = time.perf_counter()
        rows.append({"scoring": label, "run": str(run.path), "model_config": run.config["model_config"],
                     "epochs": run.metrics.get("epochs") or run.metrics.get("best_epoch"),
                     **run.evaluate(k=ks), "seconds": time.perf_counter() - t0})
    model = free.model
    converted = LightGCNHistory(model.n_users, model.n_items, model.config, graph=free.matrices["train"])
    converted.load_state_dict(model.state_dict())
    converted.eval()
    free.model = converted
    rows.insert(1, {"scoring": "free, scored history-only", "run": str(free.path), **free.evaluate(k=ks)})
    out = {"dataset": free.config["dataset"], "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(),
           "rows": rows}
    print("| scoring | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scoring']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
              f"{r['ndcg@20']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
