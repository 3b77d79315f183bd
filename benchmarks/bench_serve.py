"""Bounded load test of ``whyrec serve`` on loopback.

Starts ``whyrec serve RUN_DIR`` in a subprocess on a free loopback port, then sends a fixed number
of requests over ``--concurrency`` keep-alive connections (a minimal asyncio HTTP/1.1 client, so the
load generator costs the shared CPU as little as possible) and stops by itself.  Two phases:

* ``recommendations``: ``GET /users/{u}/recommendations?k=10`` for random users;
* ``explanations``: for each method the run offers (or ``--method``), ``GET
  /users/{u}/explanations/{i}?method=M`` for distinct users, each with its top recommendation
  (``cold``: every pair computed), then the same pairs again (``warm``: served from the service's
  explanation cache).

Every response must be a 200 whose body has the declared length, otherwise it counts as an error.
Writes requests/s, p50/p90/p99/max latency and error counts to ``benchmarks/results/serve.json``.

    whyrec train --dataset ml-1m --data-dir ../shared/datasets/ml-1m-sample --model lightgcn-features \
        --features user,item --epochs 20 --eval-every 10 --lr 5e-3 --out /tmp/f_ml1m
    python benchmarks/bench_serve.py --run /tmp/f_ml1m
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from whyrec.serve.app import stop_process

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"recommendations": {"p99_ms": 50, "rps": 500, "errors": 0}, "explanations": {"p99_ms": 300}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fetch(reader, writer, host: str, path: str) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


async def load(host: str, port: int, paths: list[str], concurrency: int) -> dict:
    """Send every path once over ``concurrency`` keep-alive connections; latency per request."""
    queue = list(reversed(paths))
    latencies: list[float] = []
    errors: list[str] = []

    async def worker():
        reader = writer = None
        while queue:
            path = queue.pop()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                t0 = time.perf_counter()
                status, body = await fetch(reader, writer, host, path)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{status} {path}: {body[:200]!r}")
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                errors.append(f"{type(err).__name__} {path}: {err}")
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def q(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else float("nan")

    return {"requests": len(paths), "concurrency": concurrency, "seconds": round(wall, 3),
            "rps": round(len(paths) / wall, 1), "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99),
            "max_ms": round(1000 * lat[-1], 2) if lat else float("nan"), "errors": len(errors),
            "error_examples": errors[:5]}


def get_json(host: str, port: int, path: str):
    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            status, body = await fetch(reader, writer, host, path)
        finally:
            writer.close()
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder (the ML-1M LightGCN run)")
    ap.add_argument("--requests", type=int, default=5000, help="recommendation requests")
    ap.add_argument("--explain-requests", type=int, default=256,
                    help="explanation requests per method (distinct users, each with its top item)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--method", default=None,
                    help="explanation method(s), comma-separated (default: every method the run offers)")
    ap.add_argument("--workers", type=int, default=1, help="whyrec serve --workers")
    ap.add_argument("--threads", type=int, default=1, help="whyrec serve --threads")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = ap.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        ap.error("--requests and --concurrency must be positive")

    host, port = "127.0.0.1", free_port()
    cmd = [sys.executable, "-c", "from whyrec.cli import main; main()", "serve", str(args.run),
           "--host", host, "--port", str(port), "--workers", str(args.workers),
           "--threads", str(args.threads)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                health = get_json(host, port, "/health")
                break
            except OSError:
                if time.perf_counter() - t0 > 300:
                    raise SystemExit("server did not answer /health within 300 s")
                time.sleep(0.2)
        startup = time.perf_counter() - t0
        rng = random.Random(args.seed)
        users = [int(u) for u in json.loads((Path(args.run) / "users.json").read_text())["user_ids"]]  # ids may have gaps
        rec_paths = [f"/users/{rng.choice(users)}/recommendations?k=10" for _ in range(args.requests)]
        warm = [f"/users/{rng.choice(users)}/recommendations?k=10" for _ in range(args.warmup)]
        asyncio.run(load(host, port, warm, args.concurrency))
        load_before = os.getloadavg()
        recs = asyncio.run(load(host, port, rec_paths, args.concurrency))
        print(f"recommendations: {recs['rps']} req/s, p50 {recs['p50_ms']} ms, p99 {recs['p99_ms']} ms, "
              f"errors {recs['errors']}", flush=True)

        methods = args.method.split(",") if args.method else list(health["available_methods"])
        explanations = {}
        if args.explain_requests <= 0:
            print("explanations: skipped (--explain-requests 0)", flush=True)
        elif not methods:
            print("explanations: no explanation method available for this run", flush=True)
        else:
            tops = []
            for u in rng.sample(users, min(args.explain_requests, len(users))):
                top = get_json(host, port, f"/users/{u}/recommendations?k=1")["recommendations"]
                if top:
                    tops.append((u, top[0]["item_id"]))
            for method in methods:
                pairs = [f"/users/{u}/explanations/{i}?method={method}" for u, i in tops]
                cold = asyncio.run(load(host, port, pairs, args.concurrency))
                warm_res = asyncio.run(load(host, port, pairs, args.concurrency))
                explanations[method] = {"cold": cold, "warm": warm_res}
                print(f"explanations ({method}), cold: {cold['rps']} req/s, p50 {cold['p50_ms']} ms, "
                      f"p99 {cold['p99_ms']} ms, errors {cold['errors']}; warm (cached): {warm_res['rps']} req/s, "
                      f"p99 {warm_res['p99_ms']} ms", flush=True)
        load_after = os.getloadavg()
    finally:
        stop_process(server, 10)

    try:
        import httptools  # noqa: F401

        parser = "httptools"
    except ImportError:
        parser = "h11"
    result = {
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after],
                    "note": "load generator and server share the same CPUs (loopback)"},
        "server": {"cmd": f"whyrec serve RUN_DIR --workers {args.workers} --threads {args.threads} (uvicorn)", "http_parser": parser,
                   "startup_s": round(startup, 2)},
        "run": {"path": str(args.run), "dataset": health["dataset"], "model": health["model"],
                "n_users": health["n_users"], "n_items": health["n_items"]},
        "recommendations": recs,
        "explanations": explanations,
        "targets": TARGETS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
