"""uvicorn HTTP protocols whose "invalid request" answer is JSON like every other error.

A request uvicorn's parser rejects before the application sees it (a request line or headers beyond
the parser's limit, about 80 KiB with httptools; malformed HTTP) is answered by the protocol itself
with a plain-text 400. These subclasses answer the same 400 with ``{"detail": ...}`` instead; the
service passes one to ``uvicorn.Config(http=...)``. URLs over the application's own limit
(:data:`whyrec.serve.app.MAX_URL_BYTES`) never get this far: the application answers them with a
JSON 414.
"""

from __future__ import annotations

import json

DETAIL = ("invalid HTTP request: malformed, or its request line or headers are longer than this server "
          "accepts")


def _body(msg: str) -> bytes:
    return json.dumps({"detail": f"{DETAIL} ({msg.rstrip('.')})" if msg else DETAIL}).encode()


try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without httptools
    HttpToolsProtocol = None
else:
    class JsonHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = _body(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"content-type: application/json\r\n",
                            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                            b"connection: close\r\n", b"\r\n", body])
            self.transport.write(b"".join(content))
            self.transport.close()

try:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # pragma: no cover
    H11Protocol = None
else:
    class JsonH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = _body(msg)
            event = h11.Response(status_code=400, reason=b"Bad Request",
                                 headers=[(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")])
            self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.transport.close()


def json_http_protocol() -> str:
    """The import string of the JSON-400 protocol for uvicorn's ``http=`` (httptools when installed)."""
    if HttpToolsProtocol is not None:
        return "whyrec.serve.protocol:JsonHttpToolsProtocol"
    if H11Protocol is not None:  # pragma: no cover
        return "whyrec.serve.protocol:JsonH11Protocol"
    return "auto"  # pragma: no cover


def server_options(**extra) -> dict:
    """uvicorn settings every whyrec server uses: the JSON-400 protocol, warnings only, and asyncio's
    own event loop rather than uvloop.

    Measured on the 2-core machine (wrk, 512 connections, ``GET /users/{u}/recommendations``, load
    1.4-2.4): with uvloop ~190 connections stayed unaccepted in the listen queue for seconds (``ss
    -ltn`` Recv-Q 189) while the accepted ones were served, so wrk counted 79-195 requests over its 2 s
    timeout although no request took more than 13 ms inside the application; with the asyncio loop the
    same run had no timeout and a 345 ms maximum at the same throughput (4,060 vs 3,970 req/s).
    """
    return {"http": json_http_protocol(), "loop": "asyncio", "log_level": "warning", **extra}
