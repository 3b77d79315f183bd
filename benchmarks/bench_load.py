"""Load test of ``whyrec serve`` with a real load tool (wrk), on loopback, bounded in time.

    python benchmarks/bench_load.py --run RUN_DIR [--connections 1,8,32,128,512] [--duration 5]
        [--methods history,concepts] [--out benchmarks/results/serve_load.json] [--serve-arg=--workers=2]
        [--compare-arg=--loop=uvloop]

Starts ``whyrec serve RUN_DIR`` in a subprocess on a free loopback port, then for the
recommendation endpoint and for every explanation method the run offers (``/health``), runs
``wrk`` for ``--duration`` seconds at each connection count, with a Lua script that

* picks a random user of the run for ``GET /users/{u}/recommendations?k=10``, or a random
  (user, item) pair among the top ``--top-items`` recommendations of the first ``--pairs`` users for
  ``GET /users/{u}/explanations/{i}?method=M`` (by default every user's top 5: thousands of pairs,
  far more than the service's 512-entry explanation cache, so most explanations are computed);
* counts every status code (a 503 is a shed request, anything else non-2xx an error).

For each run it records requests/s, p50/p90/p99/max latency (wrk's, over all responses, shed ones
included), socket errors and timeouts (wrk ``--timeout 2s``), the status counts, whether the service
is still up, the load average before and after, and the exact wrk command. Results go to
``benchmarks/results/serve_load.json``.

wrk is not a Python package: ``apt-get install -y wrk`` (Debian/Ubuntu) or build it from
https://github.com/wg/wrk. The tests do not need it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from whyrec.serve.app import stop_process

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"recommendations@32": {"rps": 1000, "p99_ms": 50}, "any@512": {"max_ms": 1000, "other_5xx": 0}}

LUA = r"""
local threads = {}
local paths = {PATHS}
function setup(thread) table.insert(threads, thread) end
function init(args)
  codes = {}
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
  return wrk.format("GET", paths[math.random(1, #paths)])
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do agg[tostring(k)] = (agg[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s": %d', k, v)) end
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "codes": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, table.concat(parts, ", ")))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:  # pragma: no cover - not Linux
        return list(os.getloadavg())


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def up(base: str) -> bool:
    try:
        return get_json(base + "/health", 3).get("status") == "ok"
    except OSError:
        return False


def lua_script(paths: list[str], folder: Path) -> Path:
    table = "{" + ", ".join(json.dumps(p) for p in paths) + "}"
    path = folder / f"paths_{len(paths)}_{random.randrange(1 << 30)}.lua"
    path.write_text(LUA.replace("{PATHS}", table))
    return path


def run_wrk(wrk: str, base: str, script: Path, connections: int, duration: float, threads: int) -> dict:
    threads = max(1, min(threads, connections))
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "2s", "-s", str(script),
           base + "/"]
    before = loadavg()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    after = loadavg()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON "):])
    codes = {int(k): v for k, v in r["codes"].items()}
    seconds = r["duration_us"] / 1e6
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    shed = codes.get(503, 0)
    return {
        "connections": connections, "wrk_threads": threads, "seconds": round(seconds, 2),
        "requests": r["requests"], "rps": round(r["requests"] / seconds, 1), "ok": ok,
        "ok_rps": round(ok / seconds, 1), "shed_503": shed,
        "other_non_2xx": sum(v for k, v in codes.items() if not 200 <= k < 300 and k != 503),
        "other_5xx": sum(v for k, v in codes.items() if 500 <= k < 600 and k != 503),
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000, "socket_errors": r["connect_errors"] + r["read_errors"] + r["write_errors"],
        "timeouts": r["timeouts"], "loadavg_before": before, "loadavg_after": after,
        "command": " ".join(cmd[:-3] + [script.name, cmd[-1]]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run folder written by `whyrec train`")
    ap.add_argument("--connections", default="1,8,32,128,512")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--methods", default=None, help="explanation methods (default: every one the run offers)")
    ap.add_argument("--pairs", type=int, default=None, help="users whose pairs are explained (default: all)")
    ap.add_argument("--top-items", type=int, default=5, help="explained items per user (its top recommendations)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `whyrec serve` argument (repeatable)")
    ap.add_argument("--compare-arg", action="append", default=[],
                    help="start a second server with these extra arguments too (repeatable, e.g. "
                         "--compare-arg=--loop=uvloop) and run every cell on both, interleaved, alternating "
                         "which goes first; the rows of the second go under \"compare\" with ratios")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("error: wrk is not installed (apt-get install -y wrk)")
    connections = [int(c) for c in args.connections.split(",") if c.strip()]

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)}

    def start(extra: list[str]):
        port = free_port()
        cmd = [sys.executable, "-m", "whyrec", "serve", str(args.run), "--port", str(port), *args.serve_arg, *extra]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return f"http://127.0.0.1:{port}", cmd, proc

    base, serve_cmd, server = start([])
    servers = [server]
    results: dict = {"run": str(args.run), "serve_command": " ".join(serve_cmd[1:]), "machine": {
        "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version()}, "loadavg_start": loadavg(), "targets": TARGETS, "runs": {}}
    other = None
    if args.compare_arg:
        other, other_cmd, proc = start(args.compare_arg)
        servers.append(proc)
        results.update(compare_command=" ".join(other_cmd[1:]), compare={})
    try:
        deadline = time.monotonic() + 180
        for url, proc in zip([base, other], servers):
            while not up(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"whyrec serve did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.3)
        health = get_json(base + "/health")
        users = json.loads((args.run / "users.json").read_text())["user_ids"]
        results["health"] = {k: health[k] for k in ("dataset", "model", "n_users", "n_items", "available_methods")}
        methods = args.methods.split(",") if args.methods else health["available_methods"]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            endpoints = {"recommendations": [f"/users/{u}/recommendations?k=10" for u in users]}
            pairs = [(u, r["item_id"]) for u in users[: args.pairs]
                     for r in get_json(f"{base}/users/{u}/recommendations?k={args.top_items}")["recommendations"]]
            results["explanation_pairs"] = len(pairs)
            for m in methods:
                endpoints[f"explanations/{m}"] = [f"/users/{u}/explanations/{i}?method={m}" for u, i in pairs]
            for name, paths in endpoints.items():
                script = lua_script(paths, folder)
                rows, twins = [], []
                for n, c in enumerate(connections):
                    order = [(base, rows, ""), (other, twins, " (compare)")][: 2 if other else 1]
                    for url, into, tag in (order if n % 2 == 0 else order[::-1]):
                        row = run_wrk(wrk, url, script, c, args.duration, args.wrk_threads)
                        row["service_up_after"] = up(url)
                        into.append(row)
                        print(f"{name + tag:<34} c={c:<4} {row['rps']:>8.1f} req/s  ok {row['ok_rps']:>8.1f}/s  "
                              f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  max {row['max_ms']:7.1f} ms  "
                              f"shed {row['shed_503']:>6}  other {row['other_non_2xx']}  sockerr {row['socket_errors']}"
                              f"  timeouts {row['timeouts']}  load {row['loadavg_before'][0]:.2f}"
                              f"{'' if row['service_up_after'] else '  SERVICE DOWN'}", flush=True)
                if other:
                    for a, b in zip(rows, twins):
                        b["ratio_to_main"] = {key: round(b[key] / a[key], 3) if a[key] else None
                                              for key in ("rps", "ok_rps", "p50_ms", "p99_ms", "max_ms")}
                    results["compare"][name] = twins
                results["runs"][name] = rows
    finally:
        for proc in servers:
            stop_process(proc)
    results["loadavg_end"] = loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
