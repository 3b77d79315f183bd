"""The FastAPI application of ``whyrec serve``.

:func:`create_app` loads a run folder once (or takes a loaded :class:`~whyrec.run.Run`) and answers
every request from memory; nothing is ever written into the run folder.

Speed: the final user and item embeddings are computed once at start-up (``U``: ``(n_users, d)``,
``I^T``: ``(d, n_items)``, both contiguous), so a known user's recommendation is one ``(d,) x
(d, n_items)`` product, the user's seen items set to ``-inf`` and a ``topk``; the response is
serialized with orjson when it is installed.  Models without embeddings (``pop``) are scored through
their own ``score_users``.  Explanations run in worker threads, at most ``min(2, CPUs)`` at once
(explainers take gradients only with ``torch.autograd.grad`` w.r.t. their own inputs, never into the
shared model's ``.grad``; per-run caches are replaced atomically), each explainer's per-run work is
done once at start-up (``prepare``), and their results are kept in a small LRU cache (a trained model is
frozen, so an explanation of the same pair with the same options never changes).

Errors: an unknown user or item is a 404 with a message; ``k`` outside 1..500 (and any other
malformed parameter) a 422; a request body over ``max_body_bytes`` a 413 — checked on the
``Content-Length`` header and again on the bytes actually streamed, so a chunked body cannot get
round it; an explanation method the run's model does not support a 400 naming the supported ones;
a supported method whose module is not part of this version of whyrec a 501.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from ..recommend import PRECOMPUTED_SCORES_LIMIT, recommend_for_user, supports_new_users
from . import MethodUnavailable, UnsupportedMethod, available_methods, explainer_for, supported_methods

try:  # orjson is optional: several times faster than json for the response bodies
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

    def _default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=_default, separators=(",", ":")).encode()


STATIC = Path(__file__).parent / "static"
MAX_K = 500
DEFAULT_MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def json_response(obj: Any, status_code: int = 200) -> Response:
    return Response(dumps(obj), status_code=status_code, media_type="application/json")


# ----------------------------------------------------------------------------------------------- #
# request body limit
# ----------------------------------------------------------------------------------------------- #
class BodySizeLimit:
    """ASGI middleware: refuse a request body larger than ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before the application runs; a body
    without one (chunked) or one that lies is counted while it streams, and the application's read
    fails with a 413 as soon as the count passes the limit.
    """

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_bytes:,} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                if declared > self.max_bytes:
                    return await _send_json(send, 413, {"detail": self._too_large()})
                break
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)


async def _send_json(send, status: int, body: dict, headers: list | None = None, close: bool = True) -> None:
    data = dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *([(b"connection", b"close")] if close else []), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


#: longest accepted URL (path and query string, in bytes): a longer one is a JSON 414
MAX_URL_BYTES = 8192
#: paths answered without the API key: liveness and the page itself (which holds no data; its script
#: sends the key with every API request)
OPEN_PATHS = frozenset({"/health", "/", "/static/app.js", "/static/style.css"})
API_KEY_ENV = "WHYREC_API_KEY"


class Guard:
    """The outermost ASGI layer: a URL over :data:`MAX_URL_BYTES` is a 414, and with an ``api_key``
    every path but :data:`OPEN_PATHS` needs it (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``,
    compared in constant time), else 401. Every answer is JSON ``{"detail": ...}``."""

    def __init__(self, app, api_key: Optional[str] = None, explain_queue: Optional["ExplainQueue"] = None):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.queue = explain_queue

    def _authorized(self, scope) -> bool:
        given = b""
        for name, value in scope.get("headers") or ():
            if name == b"x-api-key":
                given = value.strip()
                break
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"") \
                    > MAX_URL_BYTES:
                return await _send_json(send, 414, {"detail": f"URL too long: the limit is {MAX_URL_BYTES:,} bytes"})
            if self.key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                return await _send_json(send, 401, {"detail": "missing or wrong API key: send it as the X-API-Key "
                                                              "header (or Authorization: Bearer KEY)"},
                                        [(b"www-authenticate", b"Bearer")])
            q = self.queue
            if q is not None and q.full() and _EXPLANATIONS.match(scope["path"]):
                # shed here, before routing and validation: under overload a refusal must cost next to
                # nothing, or refusing alone starves the workers of the CPU they need to catch up
                q.shed += 1
                return await _send_json(send, 503, {"detail": q.busy_message()}, [(b"retry-after", b"1")],
                                        close=False)
        await self.app(scope, receive, send)


_EXPLANATIONS = re.compile(r"^/users/[^/]+/explanations/")
_USER_RECS = re.compile(r"^/users/([0-9]{1,18})/recommendations$")


def _plain_k(query: bytes) -> Optional[int]:
    """``k`` from a query string that is empty or exactly ``k=N`` with 1 <= N <= 500; else ``None``."""
    if not query:
        return 10
    if query.startswith(b"k=") and 2 < len(query) <= 5 and query[2:].isdigit():
        k = int(query[2:])
        if 1 <= k <= MAX_K:
            return k
    return None


class FastRecommendations:
    """ASGI fast path for the hottest endpoint, ``GET /users/{id}/recommendations[?k=N]``.

    A well-formed request for a known user is answered here, without FastAPI's routing and
    validation (a few hundred microseconds per request on this machine); anything else (an unknown
    user, a malformed or out-of-range ``k``, extra parameters) goes on to the FastAPI route, which
    computes the same body or answers the error.
    """

    def __init__(self, app, service: "Service"):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            m = _USER_RECS.match(scope["path"])
            if m is not None:
                k = _plain_k(scope["query_string"])
                if k is not None:
                    try:
                        body = dumps(self.service.recommend_user(m.group(1), k))
                    except KeyError:
                        body = None  # the route answers the 404
                    if body is not None:
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                        await send({"type": "http.response.body", "body": body})
                        return
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------------------------- #
# schemas (for the OpenAPI document; responses are serialized directly)
# ----------------------------------------------------------------------------------------------- #
class Recommendation(BaseModel):
    rank: int
    item_id: int
    title: str
    genres: list[str]
    score: float
    because: Optional[list[dict]] = Field(
        None, description="new users only: each liked item's exact share of the score (fold-in decomposition)")


class GenreCount(BaseModel):
    genre: str
    count: int
    share: float


class UserRecommendations(BaseModel):
    user: int
    k: int
    n_seen: int = Field(description="items the user has interacted with (excluded from the list)")
    profile: list[GenreCount] = Field(description="genres of the user's seen items")
    recommendations: list[Recommendation]


class NewUserRequest(BaseModel):
    liked: list[Union[int, str]] = Field(..., min_length=1, max_length=500,
                                         description="raw item ids or titles (forgivingly matched)")
    k: int = Field(10, ge=1, le=MAX_K)


class NewUserRecommendations(BaseModel):
    notes: list[str] = Field(default_factory=list, description="e.g. liked entries that name the same movie")
    liked: list[str]
    liked_ids: list[int]
    k: int
    profile: list[GenreCount]
    recommendations: list[Recommendation]


class Item(BaseModel):
    item_id: int
    title: str
    genres: list[str]
    n_interactions: int


class Items(BaseModel):
    query: str
    items: list[Item]


class Health(BaseModel):
    status: str
    dataset: str
    model: str
    n_users: int
    n_items: int
    user_id_range: list[int]
    example_users: list[int]
    explain_methods: list[str] = Field(description="methods the run's model supports")
    available_methods: list[str] = Field(description="supported methods whose module is installed")
    new_users: bool = Field(description="whether POST /recommendations (fold-in) works for this model")
    index: str = Field("exact", description="how recommendations are searched: exact, or faiss (approximate)")
    index_tuning: Optional[dict] = Field(None, description="--index faiss: nprobe chosen at load and the recall@10 "
                                                           "against exact search it reached on a sample of users")


class Error(BaseModel):
    detail: str


def _errors(*codes: int) -> dict:
    return {c: {"model": Error} for c in codes}


# ----------------------------------------------------------------------------------------------- #
# the service: everything precomputed once
# ----------------------------------------------------------------------------------------------- #
class Service:
    """A loaded run plus what the endpoints need precomputed."""

    def __init__(self, run, explain_cache: int = 512, explain_concurrency: Optional[int] = None,
                 max_queue: Optional[int] = 32, deadline: Optional[float] = 0.5, index: str = "exact"):
        from .index import check_index_kind, item_index

        self.index_kind = check_index_kind(index)

        self.run = run
        # every user's ranking tables, titles and genres and the explainers' per-run work, once, before
        # any request (Run.prepare): a request is a masked topk; a model too large to precompute is run
        run.prepare(scores_limit=PRECOMPUTED_SCORES_LIMIT)
        #: ``--index faiss``: an approximate inner-product index over the item vectors (None: exact)
        self.ann = item_index(run, index) if index != "exact" else None
        self.new_users = supports_new_users(run.model)

        #: explanations are computed by this many worker threads, in arrival order (FIFO)
        self.explain_workers = int(explain_concurrency or min(2, os.cpu_count() or 1))
        self.explain_queue = ExplainQueue(self._compute, self.explain_workers, max_pending=max_queue,
                                          deadline=deadline)
        self.cache_lock = threading.Lock()
        self.explain_cache: OrderedDict = OrderedDict()
        self.explain_cache_size = int(explain_cache)

    # -- recommendations: the library's, as they are ------------------------------------------ #
    def recommend_user(self, raw_user: str, k: int) -> dict:
        """:func:`whyrec.recommend.recommend_for_user` (what ``Run.recommend(user=…)`` and ``whyrec
        recommend --json`` give), from the run's precomputed tables."""
        return recommend_for_user(self.run, raw_user, k, index=self.ann)

    def recommend_new(self, liked: list, k: int) -> dict:
        """:meth:`whyrec.run.Run.recommend` for a new user (with ``because`` where the model decomposes
        the score, notes on liked items that resolved to the same item and their genre profile)."""
        return self.run.recommend(liked=[str(x) for x in liked], k=k, index=self.ann).to_dict()

    # -- items -------------------------------------------------------------------------------- #
    def search(self, q: str, limit: int) -> list[dict]:
        return self.run.search(q, limit)

    # -- explanations ------------------------------------------------------------------------- #
    def explain_key(self, method: str, raw_user: str, raw_item: str, options: dict) -> tuple:
        """``(method, user index, item index, options)``; the method, user and item are checked here
        (:class:`UnsupportedMethod`, ``KeyError``), before anything is queued."""
        explainer_for(self.run, method, option="method").check_options(options, flag=str)
        return (method, self.run.user_index(raw_user), self.run.titles().resolve(raw_item),
                tuple(sorted(options.items())))

    async def explain(self, method: str, raw_user: str, raw_item: str, options: dict) -> bytes:
        """The JSON body of an explanation: from the cache, or computed by a worker thread in arrival
        order (so under load every request waits for the ones before it, never behind later ones)."""
        key = self.explain_key(method, raw_user, raw_item, options)
        body = self._cached(key)
        if body is None:
            body = await self.explain_queue.submit(key)
        return body

    def _compute(self, key: tuple) -> bytes:
        body = self._cached(key)  # a twin queued earlier may have computed it meanwhile
        if body is not None:
            return body
        method, u, i, options = key
        explainer = explainer_for(self.run, method, option="method")
        body = dumps(explainer.explain(self.run, u, i, **dict(options)).to_dict())
        if self.explain_cache_size > 0:
            with self.cache_lock:
                self.explain_cache[key] = body
                while len(self.explain_cache) > self.explain_cache_size:
                    self.explain_cache.popitem(last=False)
        return body

    def _cached(self, key) -> Optional[bytes]:
        with self.cache_lock:
            body = self.explain_cache.get(key)
            if body is not None:
                self.explain_cache.move_to_end(key)
            return body


class Overloaded(Exception):
    """An explanation was shed: the queue is full, or the request's deadline passed while it waited."""


class ExplainQueue:
    """A bounded FIFO queue of jobs served by ``workers`` daemon threads (started on the first job).

    ``await submit(job)`` returns ``fn(job)`` or raises its exception. Unlike a thread pool behind a
    lock or semaphore, which wakes waiters in no particular order, jobs start in the order they
    arrived, so with ``n`` requests in flight none waits for more than the ``n - 1`` before it.

    Overload: a new job is refused at once (:class:`Overloaded`, answered 503 with ``Retry-After``)
    when ``max_pending`` jobs are already waiting or running, or when the jobs ahead of it would take
    longer than the ``deadline`` by the recent service time (``pending / workers × t̄``, ``t̄`` an
    exponential average of the seconds per job), so under overload a request is refused at once
    rather than after waiting out its deadline; a job that no worker has started when its ``deadline``
    (seconds after it was submitted) passes is dropped unstarted and its request answered 503, so no
    request waits for a worker longer than the deadline and no thread computes an answer nobody awaits;
    a job started in time is awaited to its end.
    """

    def __init__(self, fn, workers: int = 1, max_pending: Optional[int] = None, deadline: Optional[float] = None):
        self.fn = fn
        self.workers = max(1, int(workers))
        self.max_pending = None if max_pending is None else max(1, int(max_pending))
        self.deadline = deadline if deadline and deadline > 0 else None
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.pending = 0  # submitted, not yet settled (changed on the event loop thread only)
        self.shed = 0
        self.expired = 0
        self.service_time = 0.0  # seconds per job, exponentially averaged (written by the workers)

    def full(self) -> bool:
        """Whether a new job would be refused: ``max_pending`` reached, or the jobs ahead of it would
        take longer than the deadline at the recent service time."""
        if self.max_pending is not None and self.pending >= self.max_pending:
            return True
        return self.deadline is not None and self.pending * self.service_time > self.deadline * self.workers

    def busy_message(self) -> str:
        return f"server busy: {self.pending} explanations already queued; retry shortly"

    async def submit(self, job):
        if not self._threads:
            self._start()
        if self.full():
            self.shed += 1
            raise Overloaded(self.busy_message())
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        ticket = [job, loop, future, "waiting"]  # a worker moves it to "started"; the deadline to "expired"
        self.pending += 1
        try:
            self.jobs.put(ticket)
            if self.deadline is None:
                return await future
            try:
                return await asyncio.wait_for(asyncio.shield(future), self.deadline)
            except asyncio.TimeoutError:
                with self._state_lock:
                    expired = ticket[3] == "waiting"
                    if expired:
                        ticket[3] = "expired"  # a worker that has not started it skips it
                if not expired:  # a worker has started it within the deadline: its answer is worth waiting for
                    return await future
                self.expired += 1
                raise Overloaded(f"server busy: no worker free within the {self.deadline:g} s deadline; "
                                 "retry shortly") from None
        finally:
            self.pending -= 1

    def _start(self) -> None:
        with self._start_lock:
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"whyrec-explain-{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _work(self) -> None:
        while True:
            ticket = self.jobs.get()
            job, loop, future = ticket[:3]
            with self._state_lock:
                if ticket[3] != "waiting" or future.cancelled():
                    continue  # its request has been answered 503 already (or the client went away)
                ticket[3] = "started"
            started = time.perf_counter()
            try:
                result, error = self.fn(job), None
            except BaseException as err:  # handed to the awaiting request, which maps it to a status
                result, error = None, err
            took = time.perf_counter() - started
            self.service_time = took if not self.service_time else 0.8 * self.service_time + 0.2 * took
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the event loop is gone (server shut down): nobody is waiting
                pass


def _settle(future, result, error) -> None:
    if future.cancelled():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _message(err: Exception) -> str:
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


# ----------------------------------------------------------------------------------------------- #
# the application
# ----------------------------------------------------------------------------------------------- #
def create_app(run, *, max_body_bytes: int = DEFAULT_MAX_BODY, explain_cache: int = 512,
               fast_path: bool = True, api_key: Optional[str] = None, max_queue: Optional[int] = 32,
               deadline: Optional[float] = 0.5, index: str = "exact", device: Optional[str] = None) -> FastAPI:
    """The ASGI app serving ``run`` (a run folder path or a loaded :class:`~whyrec.run.Run`).

    ``max_body_bytes``: the largest accepted request body (413 beyond); ``explain_cache``: how many
    explanation results are kept in memory (0: none); ``fast_path``: answer well-formed
    ``GET /users/{id}/recommendations`` requests in an ASGI layer in front of FastAPI (same bodies);
    ``api_key``: required on every path but ``/health`` and the page (401 without it);
    ``max_queue``: explanations waiting or running at most (a fast 503 with ``Retry-After`` beyond);
    ``deadline``: seconds an explanation may wait before it is answered 503 instead;
    ``index``: ``exact`` (score every item) or ``faiss`` (an approximate inner-product index over the
    item vectors, :mod:`whyrec.serve.index`) for the recommendations; ``device``: where the model
    computes (``auto``, ``cpu``, ``cuda``, ``cuda:N``; :meth:`whyrec.run.Run.to`; default: a folder
    loads on the CPU, a loaded run stays where it is).
    """
    from .index import check_index_kind

    check_index_kind(index)
    if isinstance(run, (str, Path)):
        from ..run import load_run

        run = load_run(run, device=device or "cpu")
    elif device is not None:
        run.to(device)
    service = Service(run, explain_cache=explain_cache, max_queue=max_queue, deadline=deadline, index=index)
    app = FastAPI(
        title="whyrec",
        version="0.1.0",
        summary=f"Recommendations and explanations from one {run.config['model']} run on {run.config['dataset']}",
        docs_url=None, redoc_url=None,  # Swagger UI / ReDoc load from a CDN; the page must work offline
    )
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if fast_path:
        app.add_middleware(FastRecommendations, service=service)
    app.add_middleware(Guard, api_key=api_key, explain_queue=service.explain_queue)  # outermost: nothing runs for a request without the key
    page = {name: (STATIC / name).read_bytes() for name in ("index.html", "app.js", "style.css")}
    page_types = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                  "style.css": "text/css; charset=utf-8"}

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):  # a bug answers JSON, not a dropped socket
        return json_response({"detail": f"internal error: {type(err).__name__}: {err}"}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        # FastAPI's own handler cannot encode an input such as NaN or Infinity (Python's json reads them
        # in a body) and fails with a 500; here every non-finite number is reported by its name
        return json_response({"detail": _finite(jsonable_encoder(err.errors(), custom_encoder={
            Exception: lambda e: str(e)}))}, 422)

    @app.get("/health", response_model=Health, tags=["service"])
    async def health():
        """Liveness, and what this run can do."""
        ids = run.user_ids
        return json_response({
            "status": "ok", "dataset": run.config["dataset"], "model": run.config["model"],
            "n_users": run.n_users, "n_items": run.n_items,
            "user_id_range": [int(ids.min()), int(ids.max())], "example_users": [int(x) for x in ids[:5]],
            "explain_methods": list(supported_methods(run)), "available_methods": list(available_methods(run)),
            "new_users": service.new_users, "index": service.index_kind,
            **({"index_tuning": service.ann.tuned} if service.ann is not None and service.ann.tuned else {}),
            "load": {"explanations_queued": service.explain_queue.pending, "shed": service.explain_queue.shed,
                     "deadline_expired": service.explain_queue.expired,
                     "max_queue": service.explain_queue.max_pending, "deadline_s": service.explain_queue.deadline},
        })

    @app.get("/users/{raw_id}/recommendations", response_model=UserRecommendations,
             responses=_errors(404), tags=["recommend"])
    async def user_recommendations(raw_id: str, k: int = Query(10, ge=1, le=MAX_K)):
        """Top-k items a known user has not interacted with (any rating), with titles, genres and scores."""
        try:
            return json_response(service.recommend_user(raw_id, k))
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None

    @app.post("/recommendations", response_model=NewUserRecommendations,
              responses=_errors(400, 404, 413), tags=["recommend"])
    async def new_user_recommendations(body: NewUserRequest):
        """A new user folded into the trained model from the items they like (no retraining)."""
        try:
            return json_response(service.recommend_new(body.liked, body.k))
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        except ValueError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/users/{raw_id}/explanations/{raw_item_id}", responses=_errors(400, 404, 501),
             tags=["explain"])
    async def explanation(
        raw_id: str, raw_item_id: str,
        method: str = Query(..., description="history, features, concepts or intrinsic (see /health)"),
        steps: Optional[int] = Query(None, ge=1, le=1000,
                                     description="Integrated-gradients steps (default: the method's exact minimum)"),
        baseline: Optional[Literal["mean", "zero"]] = Query(None, description="features: Integrated-gradients "
                                                                                "baseline (default mean)"),
        top: int = Query(10, ge=1, le=100, description="how many attributions to list"),
        genre: Optional[str] = Query(None, max_length=500, description="genres to restrict to (comma-separated)"),
        k: Optional[int] = Query(None, ge=1, le=MAX_K, description="counterfactual: take the item out of the top k "
                                                               "(default 1)"),
        max_size: Optional[int] = Query(None, ge=1, le=100, description="counterfactual: largest set searched"),
        beam: Optional[int] = Query(None, ge=1, le=16, description="counterfactual: beam width (1: greedy)"),
        samples: Optional[int] = Query(None, ge=1, le=256, description="shapley: random orders averaged (default 16)"),
    ) -> Response:
        """Why the run's model recommends ``raw_item_id`` to ``raw_id``, as JSON ready to draw (the method
        module's own result)."""
        options = {"steps": steps, "baseline": baseline, "top": top, "genre": genre}
        options.update({name: v for name, v in (("k", k), ("max_size", max_size), ("beam", beam),
                                                           ("samples", samples)) if v is not None})
        try:
            body = await service.explain(method, raw_id, raw_item_id, options)
        except Overloaded as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        except UnsupportedMethod as err:
            raise HTTPException(400, str(err)) from None
        except MethodUnavailable as err:
            raise HTTPException(501, str(err)) from None
        except KeyError as err:
            raise HTTPException(404, _message(err)) from None
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return Response(body, media_type="application/json")

    @app.get("/items", response_model=Items, tags=["items"])
    async def items(q: str = Query(..., min_length=1, max_length=200, description="part of a title, or an id"),
                    limit: int = Query(10, ge=1, le=50)):
        """Title search for the page's autocomplete: prefix matches first, then word matches, most
        interacted-with first."""
        return json_response({"query": q, "items": service.search(q, limit)})

    def static(name: str):
        async def serve_file():
            return Response(page[name], media_type=page_types[name], headers=SECURITY_HEADERS)

        return serve_file

    app.get("/", include_in_schema=False, response_class=HTMLResponse)(static("index.html"))
    app.get("/static/app.js", include_in_schema=False)(static("app.js"))
    app.get("/static/style.css", include_in_schema=False)(static("style.css"))
    return app


RUN_ENV = "WHYREC_SERVE_RUN"
MAX_BODY_ENV = "WHYREC_SERVE_MAX_BODY"
MAX_QUEUE_ENV = "WHYREC_SERVE_MAX_QUEUE"
DEADLINE_ENV = "WHYREC_SERVE_DEADLINE"
INDEX_ENV = "WHYREC_SERVE_INDEX"
DEVICE_ENV = "WHYREC_SERVE_DEVICE"


def _finite(obj):
    """``obj`` with every non-finite float replaced by its name (``"NaN"``, ``"Infinity"``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes (``whyrec serve --workers N``): the run folder and the
    body limit come from ``$WHYREC_SERVE_RUN`` and ``$WHYREC_SERVE_MAX_BODY``."""
    if not os.environ.get(RUN_ENV):
        raise RuntimeError(f"${RUN_ENV} is not set")
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # whyrec serve --threads
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    queue_env, deadline_env = os.environ.get(MAX_QUEUE_ENV, "32"), os.environ.get(DEADLINE_ENV, "0.5")
    return create_app(os.environ[RUN_ENV], max_body_bytes=int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY)),
                      api_key=os.environ.get(API_KEY_ENV) or None,
                      max_queue=int(queue_env) if int(queue_env) > 0 else None,
                      deadline=float(deadline_env) if float(deadline_env) > 0 else None,
                      index=os.environ.get(INDEX_ENV, "exact"), device=os.environ.get(DEVICE_ENV) or None)


def stop_process(proc, timeout: float = 20.0) -> None:
    """Stop a server started as a subprocess (``subprocess.Popen``): SIGTERM, then SIGKILL after
    ``timeout`` seconds; reaps it either way (tests and benchmarks)."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0, **uvicorn_options):
    """Run ``app`` with uvicorn in a background thread; yields its base URL (``port=0``: a free port).

    For tests and benchmarks: the server stops (and the thread ends) when the ``with`` block exits.
    """

    import uvicorn

    from .protocol import server_options

    options = server_options(access_log=False, lifespan="off", **uvicorn_options)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    thread = threading.Thread(target=server.run, name="whyrec-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)


__all__ = ["BodySizeLimit", "ExplainQueue", "FastRecommendations", "Guard", "Overloaded", "Service", "app_from_env",
           "create_app", "running_server"]
