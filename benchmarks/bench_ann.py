"""Recall, latency, build time and memory of ``--index faiss`` against exact search on a large catalogue.

A synthetic, seeded catalogue of ``--items`` item vectors (``--dim``, default 64) with cluster structure
and popularity-like norms (``--clusters`` centres; an item is its centre plus noise, scaled by a
log-normal factor, so that the inner product, not only the direction, decides), and ``--queries``
user vectors drawn the same way (a mix of two centres plus the same noise). Each user has ``--seen`` seen
items — half of them among their exact top 100, the rest random — which must never be returned.

For every ``--nprobe`` it measures recall@10 of :class:`whyrec.serve.index.FaissIndex` against the exact
top-10 (seen items masked in both), and the latency of one query (p50/p99, one thread, one user at a
time as the service asks), next to the exact search's (a ``(d,) x (d, n)`` torch product and a top-k,
what ``--index exact`` does per request). Optionally (``--serve``) it writes a run folder whose MF
model holds these vectors, starts ``whyrec serve --index exact|faiss`` on it and measures the
service's p50/p99 with ``benchmarks/bench_serve.py``'s client.

    python benchmarks/bench_ann.py --items 1000000 --serve        # writes benchmarks/results/ann.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from procmem import peak_rss_mb, rss_mb, status_mb  # noqa: E402


def catalogue(n_items: int, n_queries: int, dim: int, clusters: int, seed: int, noise: float = 1.0):
    """``(items, queries, rng, centres)``: the seeded catalogue and ``n_queries`` user vectors around
    the same centres (:func:`users_around`)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    items = np.empty((n_items, dim), np.float32)
    step = 100_000
    for lo in range(0, n_items, step):
        hi = min(lo + step, n_items)
        c = rng.integers(0, clusters, hi - lo)
        x = centres[c] + noise * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        items[lo:hi] = x * rng.lognormal(0.0, 0.25, (hi - lo, 1)).astype(np.float32)
    return items, users_around(centres, n_queries, noise, rng), rng, centres


def users_around(centres: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """User vectors: a mix of two of the catalogue's centres plus the items' noise."""
    a, b = rng.integers(0, len(centres), (2, n))
    w = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
    return (w * centres[a] + (1 - w) * centres[b] + noise * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "mean_ms": round(float(a.mean()), 3)}


def exact_torch(items_t, q, k, seen):
    import torch

    s = torch.from_numpy(q) @ items_t
    s.index_fill_(0, torch.from_numpy(seen), -float("inf"))
    return torch.topk(s, k)


def serve_phase(items, centres, seen_sets, args, out: dict) -> None:
    """A run folder with these vectors (an MF model), served with each index; p50/p99 of recommendations."""
    import asyncio

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_serve import free_port, load  # the minimal asyncio HTTP client

    from whyrec.data.dataset import InteractionData
    from whyrec.data.splits import make_split
    from whyrec.models import MF, MFConfig
    from whyrec.run import write_run

    n_users = args.serve_users
    rng = np.random.default_rng(args.seed + 1)
    lists = [seen_sets[u % len(seen_sets)] for u in range(n_users)]
    users = np.repeat(np.arange(n_users), [len(x) for x in lists])
    its = np.concatenate(lists)
    data = InteractionData(name="synthetic", user_ids=np.arange(n_users, dtype=np.int64),
                           item_ids=np.arange(len(items), dtype=np.int64), users=users.astype(np.int64),
                           items=its.astype(np.int64), ratings=np.ones(len(users), np.float32), explicit=False)
    split = make_split(data, "user-holdout", seed=args.seed)
    model = MF(n_users, len(items), MFConfig(dim=items.shape[1]))
    queries = users_around(centres, n_users, args.noise, np.random.default_rng(args.seed + 2))
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.from_numpy(queries))
        model.item_emb.weight.copy_(torch.from_numpy(items))
    run_dir = Path(args.serve_run)
    if not (run_dir / "manifest.json").is_file():
        t = time.perf_counter()
        write_run(run_dir, data=data, split=split, model=model, model_name="mf", model_config={"dim": items.shape[1]},
                  train_config={}, metrics={})
        print(f"wrote {run_dir} in {time.perf_counter() - t:.1f}s", flush=True)
    del model, data
    import subprocess
    import urllib.request

    out["serve"] = {"run": str(run_dir), "n_users": n_users, "n_items": len(items), "requests": args.serve_requests,
                    "concurrency": args.serve_concurrency}
    for kind in args.serve_index:
        port = free_port()
        cmd = [sys.executable, "-m", "whyrec", "serve", str(run_dir), "--port", str(port), "--index", kind]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}/health"
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"whyrec serve --index {kind} exited: {proc.stderr.read()[-2000:]}")
                try:
                    urllib.request.urlopen(url, timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.5)
                if time.perf_counter() - t0 > args.serve_start_timeout:
                    raise RuntimeError(f"whyrec serve --index {kind} did not start in {args.serve_start_timeout}s")
            start_s = time.perf_counter() - t0
            health = json.loads(urllib.request.urlopen(url, timeout=5).read())
            paths = [f"/users/{int(u)}/recommendations?k=10" for u in rng.integers(0, n_users, args.serve_requests)]
            asyncio.run(load("127.0.0.1", port, paths[:200], args.serve_concurrency))  # warm-up
            res = asyncio.run(load("127.0.0.1", port, paths, args.serve_concurrency))
            rss = status_mb("VmRSS", proc.pid)
            out["serve"][kind] = {"startup_s": round(start_s, 1), "server_rss_mb": round(rss),
                                  "index_tuning": health.get("index_tuning"), **res}
            print(kind, json.dumps(out["serve"][kind]), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="std of an item's offset from its centre (centres: N(0, 1))")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--seen", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--serve", action="store_true", help="also measure whyrec serve --index exact|faiss")
    ap.add_argument("--serve-index", nargs="+", default=["exact", "faiss"])
    ap.add_argument("--serve-users", type=int, default=5000)
    ap.add_argument("--serve-requests", type=int, default=3000)
    ap.add_argument("--serve-concurrency", type=int, default=8)
    ap.add_argument("--serve-run", default="/tmp/whyrec_ann_run")
    ap.add_argument("--serve-start-timeout", type=float, default=600)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ann.json"))
    args = ap.parse_args()

    import faiss
    import torch

    from whyrec.serve.index import DEFAULT_NPROBE, FaissIndex, default_nlist, exact_search, recall_at_k

    torch.set_num_threads(1)
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_average_start": os.getloadavg(),
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "faiss": faiss.__version__,
           "items": args.items, "dim": args.dim, "clusters": args.clusters, "noise": args.noise, "queries": args.queries,
           "seen_per_query": args.seen, "k": args.k, "seed": args.seed}
    t = time.perf_counter()
    items, queries, rng, centres = catalogue(args.items, args.queries, args.dim, args.clusters, args.seed, args.noise)
    print(f"catalogue {items.shape} in {time.perf_counter() - t:.1f}s, rss {rss_mb():.0f} MB", flush=True)

    # seen items: half among each user's exact top 100 (the hard case for a filtered search), half random
    seen = []
    for lo in range(0, args.queries, 100):
        top, _ = exact_search(items, queries[lo:lo + 100], 100)
        for row in top:
            near = rng.choice(row, args.seen // 2, replace=False)
            far = rng.integers(0, args.items, args.seen - args.seen // 2)
            seen.append(np.unique(np.concatenate([near, far])))
    t = time.perf_counter()
    truth = np.concatenate([exact_search(items, queries[lo:lo + 100], args.k, seen[lo:lo + 100])[0]
                            for lo in range(0, args.queries, 100)])
    out["exact_batch_s_per_query"] = round((time.perf_counter() - t) / args.queries, 5)

    rss0 = rss_mb()
    t = time.perf_counter()
    index = FaissIndex(items, nlist=args.nlist or default_nlist(args.items))
    build_s = time.perf_counter() - t
    out["index"] = {"type": "IndexIVFFlat(METRIC_INNER_PRODUCT, spherical k-means)", "nlist": index.nlist,
                    "build_s": round(build_s, 2), "build_threads": os.cpu_count(),
                    "memory_mb": round(index.memory_bytes() / 2**20, 1),
                    "rss_growth_mb": round(rss_mb() - rss0, 1),
                    "vectors_mb": round(items.nbytes / 2**20, 1)}
    print("index", json.dumps(out["index"]), flush=True)
    faiss.omp_set_num_threads(1)

    items_t = torch.from_numpy(items).T.contiguous()
    lat = []
    for r in range(args.latency_queries):
        t = time.perf_counter()
        exact_torch(items_t, queries[r], args.k, seen[r])
        lat.append((time.perf_counter() - t) * 1e3)
    out["exact"] = {"what": "torch (d,) x (d, n) product, seen masked, topk: what --index exact does per request",
                    **percentiles(lat)}
    print("exact", json.dumps(out["exact"]), flush=True)
    del items_t

    out["faiss"] = []
    truth_unmasked = np.concatenate([exact_search(items, queries[lo:lo + 100], args.k)[0]
                                     for lo in range(0, args.queries, 100)])
    for nprobe in args.nprobe:
        found = index.search(queries, args.k, seen, nprobe=nprobe)[0]
        leaked = sum(len(set(found[r].tolist()) & set(seen[r].tolist())) for r in range(args.queries))
        unmasked = index.search(queries, args.k, nprobe=nprobe)[0]
        lat = []
        for r in range(args.latency_queries):
            t = time.perf_counter()
            index.search(queries[r:r + 1], args.k, seen[r:r + 1], nprobe=nprobe)
            lat.append((time.perf_counter() - t) * 1e3)
        row = {"nprobe": nprobe, "scanned_share": round(nprobe / index.nlist, 4),
               f"recall@{args.k}": round(recall_at_k(found, truth), 4),
               f"recall@{args.k}_no_seen_mask": round(recall_at_k(unmasked, truth_unmasked), 4),
               "seen_items_returned": int(leaked), **percentiles(lat)}
        out["faiss"].append(row)
        print("faiss", json.dumps(row), flush=True)
    # what the load-time tuner picks: tuned on 256 other users (drawn the same way), measured on the queries
    tune_rng = np.random.default_rng(args.seed + 3)
    tune_q = users_around(centres, 256, args.noise, tune_rng)
    tune_ex = [tune_rng.integers(0, args.items, args.seen) for _ in range(256)]
    tune_truth = np.concatenate([exact_search(items, tune_q[lo:lo + 64], args.k, tune_ex[lo:lo + 64])[0]
                                 for lo in range(0, 256, 64)])
    index.nprobe = DEFAULT_NPROBE
    t = time.perf_counter()
    tuned = index.tune(tune_q, tune_ex, tune_truth)
    tuned["tune_s_after_exact"] = round(time.perf_counter() - t, 2)
    tuned[f"recall@{args.k}_on_queries"] = round(recall_at_k(index.search(queries, args.k, seen)[0], truth), 4)
    out["tuned"] = tuned
    print("tuned", json.dumps(tuned), flush=True)
    out["peak_rss_mb"] = round(peak_rss_mb())
    out["load_average_end"] = os.getloadavg()
    if args.serve:
        del index
        serve_phase(items, centres, seen, args, out)
        out["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
