"""Seconds per LightGCN training epoch on Gowalla: whyrec vs PyG.

Paper hyper-parameters: dim 64, 3 layers, batch 2048, lr 1e-3, reg 1e-4,
Adam; an epoch is one pass over the 810,128 training interactions = 396
batches. Each implementation runs in its own subprocess (so its peak RSS is
its own) and times a fixed number of batches after warm-up; seconds/epoch =
median per-batch time x 396 (+ the epoch's negative sampling for whyrec, timed
separately).

* ``whyrec``: :func:`whyrec.train.fit`'s inner step (LightGCN.batch_embeddings,
  BPR + L2, fused Adam) on batches from UniformNegativeSampler.
* ``bound``: the 3-layer propagation alone, forward + backward
  (``propagate_final`` with the symmetric backward), x 396 batches.
* ``pyg_example``: ``torch_geometric.nn.models.LightGCN`` as its
  ``examples/lightgcn.py`` runs it: ``model(edge_index, edge_label_index)``
  on the (2, 2·nnz) edge_index (gcn_norm recomputed every layer of every
  batch), ``recommendation_loss``.
* ``pyg_csr``: the same PyG model with ``normalize=False`` given the
  pre-normalized ``torch.sparse_csr`` adjacency as ``edge_index`` (PyG
  dispatches to ``torch.sparse.mm``; autograd's generic sparse backward).

Usage::

    python benchmarks/bench_lightgcn_epoch.py [--batches 30] [--threads 2]   # or --threads 1,2

Writes ``benchmarks/results/lightgcn_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
warnings.filterwarnings("ignore", message=".*deprecated.*")

DIM, LAYERS, BATCH, LR, REG = 64, 3, 2048, 1e-3, 1e-4


def load_gowalla(folder: Path):
    import numpy as np
    import scipy.sparse as sp

    rows, cols = [], []
    with open(folder / "train.txt") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.asarray(parts[1:], dtype=np.int64)
            rows.append(np.full(items.size, int(parts[0]), dtype=np.int64))
            cols.append(items)
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(29858, 40981))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timeit(step, n: int, warmup: int) -> tuple[float, list[float]]:
    """Median seconds per call over ``n`` calls after ``warmup`` (the median
    resists the CPU contention of a shared machine), and all the times."""
    import statistics

    for b in range(warmup):
        step(b)
    times = []
    for b in range(warmup, warmup + n):
        t = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def run_whyrec(R, n, warmup):
    import torch

    from whyrec.models import LightGCN, LightGCNConfig
    from whyrec.train import UniformNegativeSampler, batch_l2, bpr_loss
    from whyrec.train.loop import _adam

    torch.manual_seed(2020)
    t = time.perf_counter()
    model = LightGCN(*R.shape, LightGCNConfig(dim=DIM, n_layers=LAYERS), graph=R).train()
    t_graph = time.perf_counter() - t
    opt = _adam(model.parameters(), LR)
    sampler = UniformNegativeSampler(R, seed=2020)
    t = time.perf_counter()
    users, pos, neg = sampler.sample_epoch(1)
    t_sample = time.perf_counter() - t
    users, pos, neg = (torch.from_numpy(a) for a in (users, pos, neg))

    def step(b):
        sl = slice(b * BATCH, (b + 1) * BATCH)
        u, i, j = users[sl], pos[sl], neg[sl]
        be = model.batch_embeddings(u, i, j)
        loss = bpr_loss((be.users * be.pos).sum(-1), (be.users * be.neg).sum(-1)) \
            + batch_l2(REG, be)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    per_batch, times = _timeit(step, n, warmup)
    return {"per_batch_s": per_batch, "batch_times_s": times, "sample_epoch_s": t_sample,
            "graph_build_s": t_graph}


def run_bound(R, n, warmup):
    import torch

    from whyrec.graph import normalized_adjacency, propagate_final

    adj = normalized_adjacency(R)
    emb0 = (torch.randn(sum(R.shape), DIM) * 0.1).requires_grad_(True)

    def step(_):
        out = propagate_final(adj, emb0, LAYERS)
        out.backward(torch.ones_like(out))

    per_batch, times = _timeit(step, n, warmup)
    return {"per_batch_s": per_batch, "batch_times_s": times}


def _pyg_batches(R, seed=0):
    import numpy as np
    import torch

    coo = R.tocoo()
    U, I = R.shape
    rng = np.random.default_rng(seed)
    perm = torch.from_numpy(rng.permutation(R.nnz))
    u = torch.from_numpy(coo.row.astype(np.int64))
    i = torch.from_numpy(coo.col.astype(np.int64)) + U
    g = torch.Generator().manual_seed(seed)

    def batch(b):
        idx = perm[b * BATCH:(b + 1) * BATCH]
        pos = torch.stack([u[idx], i[idx]])
        # as in PyG's examples/lightgcn.py: random item, no collision check
        neg = torch.stack([pos[0], torch.randint(U, U + I, (idx.numel(),), generator=g)])
        return torch.cat([pos, neg], dim=1)

    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    return edge_index, batch


def run_pyg(R, n, warmup, mode):
    import torch
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    from whyrec.graph import normalized_adjacency

    U, I = R.shape
    edge_index, batch = _pyg_batches(R)
    if mode == "example":
        model = PygLightGCN(U + I, DIM, LAYERS)
        graph = edge_index
    else:
        model = PygLightGCN(U + I, DIM, LAYERS, normalize=False)
        graph = normalized_adjacency(R)  # symmetric, so adj_t == adj
    torch.nn.init.normal_(model.embedding.weight, std=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(b):
        eli = batch(b)
        pos_rank, neg_rank = model(graph, eli).chunk(2)
        loss = model.recommendation_loss(pos_rank, neg_rank, node_id=eli.unique(), lambda_reg=REG)
        opt.zero_grad()
        loss.backward()
        opt.step()

    per_batch, times = _timeit(step, n, warmup)
    return {"per_batch_s": per_batch, "batch_times_s": times}


def check_same_propagation(R) -> float:
    """Max |whyrec - PyG(csr)| of the final embeddings (sanity)."""
    import torch
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    from whyrec.graph import normalized_adjacency, propagate_final

    adj = normalized_adjacency(R)
    pyg = PygLightGCN(sum(R.shape), DIM, LAYERS, normalize=False)
    with torch.no_grad():
        ours = propagate_final(adj, pyg.embedding.weight, LAYERS)
        ref = pyg.get_embedding(adj)
    return float((ours - ref).abs().max())


def child(args) -> None:
    import torch

    torch.set_num_threads(int(args.threads))
    R = load_gowalla(Path(args.data))
    n_batches_epoch = math.ceil(R.nnz / BATCH)
    if args.only == "whyrec":
        res = run_whyrec(R, args.batches, args.warmup)
    elif args.only == "bound":
        res = run_bound(R, args.batches, args.warmup)
    elif args.only == "pyg_example":
        res = run_pyg(R, args.pyg_batches, 1, "example")
    elif args.only == "pyg_csr":
        res = run_pyg(R, args.pyg_csr_batches, 1, "csr")
        res["max_abs_diff_vs_whyrec"] = check_same_propagation(R)
    else:
        raise SystemExit(f"unknown part {args.only}")
    res["epoch_s"] = res["per_batch_s"] * n_batches_epoch + res.get("sample_epoch_s", 0.0)
    res["peak_rss_mb"] = _rss_mb()
    res["n_batches_epoch"] = n_batches_epoch
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get(
        "WHYREC_GOWALLA", str(ROOT.parent / "shared" / "datasets" / "gowalla")))
    ap.add_argument("--batches", type=int, default=30, help="timed batches (whyrec, bound)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pyg-batches", type=int, default=3, help="timed batches, PyG as in its example")
    ap.add_argument("--pyg-csr-batches", type=int, default=10, help="timed batches, PyG with CSR")
    ap.add_argument("--threads", default="2", help="torch threads; a comma list runs each (e.g. 1,2)")
    ap.add_argument("--parts", default="whyrec,bound,pyg_csr,pyg_example")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lightgcn_epoch.json"))
    ap.add_argument("--only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return child(args)

    import torch

    results, ratios = {}, {}
    load_before = os.getloadavg()
    thread_counts = [int(t) for t in str(args.threads).split(",")]
    for threads in thread_counts:
        res = results[str(threads)] = {}
        print(f"-- torch.set_num_threads({threads})", flush=True)
        for part in args.parts.split(","):
            cmd = [sys.executable, __file__, "--only", part, "--data", args.data, "--batches", str(args.batches),
                   "--warmup", str(args.warmup), "--pyg-batches", str(args.pyg_batches),
                   "--pyg-csr-batches", str(args.pyg_csr_batches), "--threads", str(threads)]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                raise SystemExit(f"part {part} failed")
            r = res[part] = json.loads(line[-1][7:])
            print(f"{part:12s} {r['per_batch_s'] * 1000:9.1f} ms/batch  {r['epoch_s']:9.1f} s/epoch  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB   ({time.perf_counter() - t:.0f} s wall)", flush=True)
        ratios[str(threads)] = rat = {}
        w = res.get("whyrec")
        if w:
            print(f"whyrec sampling: {w['sample_epoch_s']:.2f} s/epoch (included above)")
            if "pyg_example" in res:
                rat["pyg_example/whyrec"] = res["pyg_example"]["epoch_s"] / w["epoch_s"]
            if "pyg_csr" in res:
                rat["pyg_csr/whyrec"] = res["pyg_csr"]["epoch_s"] / w["epoch_s"]
            if "bound" in res:
                rat["whyrec/bound"] = w["epoch_s"] / res["bound"]["epoch_s"]
                rat["whyrec_without_sampling/bound"] = w["per_batch_s"] / res["bound"]["per_batch_s"]
        targets = {"pyg_example/whyrec": (">=", 10.0), "pyg_csr/whyrec": (">=", 2.0),
                   "whyrec/bound": ("<=", 1.3)}
        for k, v in rat.items():
            tgt = targets.get(k)
            ok = "" if tgt is None else ("  target %s %.1f: %s" % (
                tgt[0], tgt[1], "met" if (v >= tgt[1] if tgt[0] == ">=" else v <= tgt[1]) else "NOT met"))
            print(f"{k:32s} {v:6.2f}{ok}", flush=True)
    out = {
        "dataset": "gowalla (LightGCN authors' train.txt, 29858 users x 40981 items, 810128 interactions)",
        "hyperparameters": {"dim": DIM, "n_layers": LAYERS, "batch_size": BATCH, "lr": LR, "reg": REG},
        "threads": thread_counts, "timed_batches": {"whyrec": args.batches, "bound": args.batches,
                                                   "pyg_example": args.pyg_batches,
                                                   "pyg_csr": args.pyg_csr_batches},
        "results": results, "ratios": ratios,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "note": ("median per-batch time x batches per epoch; whyrec epoch includes negative sampling; "
                 "results and ratios are keyed by torch thread count"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
