"""One sparse product in each node order, interleaved in one process: what the locality order buys.

    python benchmarks/bench_order.py                        # Gowalla, 20 rounds, 2 threads
    python benchmarks/bench_order.py --scale 4M --rounds 7  # a synthetic power-law graph (bench_scale.py's)

Builds the training graph's normalized adjacency ``Â`` (``whyrec.graph.normalized_adjacency``) and times
``Â X`` for a random ``(N, 64)`` float32 ``X`` (``graph._spmm``: what a training step runs -- MKL's CSR kernel
before 2026-12-03, ``whyrec.spmm``'s since)
with ``Â`` renumbered by each of

* ``natural``: users, then items, as the data numbers them;
* ``rcm``: reverse Cuthill-McKee (``locality_order(adj, clusters=0)``, the order before 2026-12-03);
* ``rcm_users_first``: the same, users before items (``locality_order(adj, n_users=U, clusters=0)``);
* ``groups``: what a LightGCN step uses now, ``locality_order(adj, n_users=U)``: spectral groups where the
  graph has communities, else ``rcm_users_first``;
* ``groups_forced``: spectral groups even without communities (``min_eigenvalue=0``).

The orders alternate within every round (the order of the orders rotates each round), so the machine's load
hits them alike. Reported: the median seconds of a product per order, the ratio to ``rcm``, each order's
build time, and the spectral test's 16th ``|λ|`` (``graph._spectral_embedding``). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from whyrec.graph import (GROUP_MIN_EIGENVALUE, _spectral_embedding, _spmm, locality_order,  # noqa: E402
                          normalized_adjacency, permute_adjacency)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="gowalla", help="gowalla, or a bench_scale.py scale (100k, 1M, 4M, 16M)")
    ap.add_argument("--data", default=os.environ.get("WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/order_<scale>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from _out import write
    from bench_step_ab import load_train

    args.train_npz, args.steps_per_epoch = None, None
    train = load_train(args)
    n_users = train.shape[0]
    adj = normalized_adjacency(train)
    n = adj.shape[0]
    recipes = {
        "natural": lambda: torch.arange(n),
        "rcm": lambda: locality_order(adj, clusters=0),
        "rcm_users_first": lambda: locality_order(adj, n_users=n_users, clusters=0),
        "groups": lambda: locality_order(adj, n_users=n_users),
        "groups_forced": lambda: locality_order(adj, n_users=n_users, min_eigenvalue=0.0),
    }
    orders, mats, build_s = {}, {}, {}
    for name, make in recipes.items():
        t = time.perf_counter()
        orders[name] = make()
        build_s[name] = time.perf_counter() - t
        mats[name] = permute_adjacency(adj, orders[name])
    sigma16 = float(_spectral_embedding(adj, 16, 0)[1][-1])
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(0))
    load_start = os.getloadavg()
    names = list(mats)
    times = {name: [] for name in names}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            _spmm(mats[name], x)
            if r:
                times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "scale": args.scale, "n_users": n_users,
        "n_items": train.shape[1], "nnz": int(adj.values().numel()), "threads": args.threads, "rounds": args.rounds,
        "product_s_median": med, "product_s_all": times, "over_rcm": {k: v / med["rcm"] for k, v in med.items()},
        "order_build_s": build_s, "sigma16": sigma16, "group_min_eigenvalue": GROUP_MIN_EIGENVALUE,
        "groups_formed": not torch.equal(orders["groups"], orders["rcm_users_first"]),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    print(json.dumps({k: out[k] for k in ("product_s_median", "over_rcm", "order_build_s", "sigma16", "groups_formed",
                                          "load_average_start", "load_average_end")}))
    write(args.out or ROOT / "benchmarks" / "results" / f"order_{args.scale}.json", out)


if __name__ == "__main__":
    main()
