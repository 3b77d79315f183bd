"""``whyrec serve``: the HTTP API and web page for one run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, device_option, friendly, run_dir_argument


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@app.command()
@friendly
def serve(
    run_dir: Path = run_dir_argument("Run folder written by `whyrec train` (read only, never written)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; 0.0.0.0 exposes it and "
                                               "needs --api-key)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    max_body: int = typer.Option(64 * 1024, min=1, help="Largest accepted request body in bytes (413 beyond)."),
    workers: int = typer.Option(1, min=1, max=64, help="Server processes (each loads the run once)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
    api_key: str = typer.Option(None, "--api-key", envvar="WHYREC_API_KEY", show_envvar=True,
                                help="Key every API request must carry (X-API-Key header or Authorization: Bearer); "
                                     "required to bind beyond loopback. /health and the page stay open; open the page "
                                     "as http://HOST:PORT/#key=KEY."),
    max_queue: int = typer.Option(32, "--max-queue", min=0,
                                  help="Explanations waiting or running at most per process; beyond, a fast 503 with "
                                       "Retry-After (0: unbounded)."),
    deadline: float = typer.Option(0.5, "--deadline", min=0.0,
                                   help="Seconds an explanation may wait for a worker before it is answered 503; "
                                        "a new one is refused at once when the queue ahead of it would take "
                                        "longer (0: no deadline)."),
    threads: int = typer.Option(1, "--threads", min=1, max=256,
                                help="torch threads per server process. Requests are small (one user's scores, one "
                                     "explanation): one thread avoids thread spin-up and OpenMP waits on a busy "
                                     "machine; use --workers to use more cores."),
    index: str = typer.Option("exact", "--index",
                              help="exact (score every item) or faiss (an approximate inner-product index over the "
                                   "item vectors, built at start-up, for large catalogues; seen items still excluded; "
                                   "see docs/scale.md)."),
    device: str = device_option(),
    loop: str = typer.Option("asyncio", "--loop",
                             help="Event loop: asyncio (default; fair to every connection under overload) or "
                                  "uvloop (faster per request, but measured to leave connections unaccepted for "
                                  "seconds at 512 connections; see docs/serve.md)."),
) -> None:
    """Serve recommendations and explanations over HTTP, with a web page at /."""
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError(f"whyrec serve needs fastapi and uvicorn ({err}); pip install fastapi uvicorn") from None
    import math
    import os

    from ..serve.index import check_index_kind

    check_index_kind(index)
    if loop not in ("asyncio", "uvloop"):
        raise ValueError(f"--loop must be asyncio or uvloop, got {loop!r}")
    if not math.isfinite(deadline):
        raise ValueError(f"--deadline must be a finite number of seconds, got {deadline}")
    if not _is_loopback(host) and not api_key:
        raise ValueError(f"refusing to serve on {host} without an API key: anyone who can reach the port would "
                         "read every user's history; pass --api-key KEY or set WHYREC_API_KEY (or bind 127.0.0.1)")
    import torch

    from ..run import load_run
    from ..serve.app import API_KEY_ENV, DEADLINE_ENV, DEVICE_ENV, INDEX_ENV, MAX_BODY_ENV, MAX_QUEUE_ENV, RUN_ENV
    from ..serve.protocol import server_options

    torch.set_num_threads(threads)  # worker processes inherit it through the environment below
    os.environ["OMP_NUM_THREADS"] = str(threads)
    run = load_run(run_dir, device=device)  # bad folders (and a device that is not here) fail here, with one line
    from ..serve.index import check_index_fits

    check_index_fits(run, index)  # a model without item vectors fails here, with one line
    typer.echo(f"whyrec serve: {run.config['model']} on {run.config['dataset']} "
               f"({run.n_users:,} users, {run.n_items:,} items) at http://{host}:{port}/"
               + (f" ({workers} workers)" if workers > 1 else "") + (f", --index {index}" if index != "exact" else "")
               + (f", on {run.device}" if run.device.type != "cpu" else ""),
               err=True)
    options = server_options(host=host, port=port, access_log=access_log, loop=loop)
    if workers == 1:
        uvicorn.run(create_app(run, max_body_bytes=max_body, api_key=api_key or None, max_queue=max_queue or None,
                               deadline=deadline or None, index=index), **options)  # the run is on --device
    else:  # worker processes import the app from a factory, which reads the run folder from the environment
        del run
        os.environ[RUN_ENV] = str(Path(run_dir).resolve())
        os.environ[MAX_BODY_ENV] = str(max_body)
        os.environ[MAX_QUEUE_ENV] = str(max_queue)
        os.environ[DEADLINE_ENV] = str(deadline)
        os.environ[INDEX_ENV] = index
        os.environ[DEVICE_ENV] = device
        if api_key:
            os.environ[API_KEY_ENV] = api_key
        uvicorn.run("whyrec.serve.app:app_from_env", factory=True, workers=workers, **options)
