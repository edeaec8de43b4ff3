"""The ASGI app: ``create_app(manager, settings)`` wires routes, errors, limits and metrics.

One pure-ASGI edge wraps every request: it gives the request an id (``X-Request-Id``,
echoed back; a well-formed one from the caller is kept), binds that id and the peer address
to every audit row the request writes, refuses bodies over the limit with 413 before the
app sees them, counts the request by route template and status, and writes one access log
line without the query string (uvicorn's own access log is off: it prints query strings).
An unexpected exception becomes a bare 500 problem; its type is logged, never a traceback.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credman.manager import CredentialManager
from credman.server import callback, problems
from credman.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from credman.server.routes import router
from credman.server.settings import ServerSettings

__all__ = ["create_app", "openapi_document"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def create_app(manager: CredentialManager, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP API over ``manager``."""
    settings = settings or ServerSettings()
    app = _build(settings)
    app.state.manager = manager
    app.state.settings = settings
    app.add_middleware(Edge, manager=manager, limit=settings.max_body_bytes)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API (``docs/openapi.json`` is a copy of it)."""
    return _build(ServerSettings()).openapi()


def _build(settings: ServerSettings) -> FastAPI:
    app = FastAPI(
        title="credman",
        version="1",
        summary="Credentials for integration components: request material, never the keys.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = ServerMetrics()
    problems.register(app)
    app.include_router(router)
    app.include_router(callback.router)
    _health_routes(app)
    return app


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", summary="The process is up", include_in_schema=True)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The database answers and the keyring is loaded")
    async def readyz(request: Request) -> Response:
        manager: CredentialManager = request.app.state.manager
        try:
            await run_in_threadpool(manager.reload_keys)
            await run_in_threadpool(manager.audit_head)
        except Exception as exc:
            logger.warning("not ready: {}", type(exc).__name__)
            return problems.problem(503, f"not ready ({type(exc).__name__})")
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    def metrics(request: Request) -> Response:
        registry: ServerMetrics = request.app.state.metrics
        return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


class Edge:
    """Request id, audit context, body limit, metrics and the access log, for every request."""

    def __init__(self, app: ASGIApp, *, manager: CredentialManager, limit: int) -> None:
        self.app, self.manager, self.limit = app, manager, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "unix"
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        body = await _bounded_body(receive, self.limit)
        with self.manager.request_context(request_id=request_id, peer=peer):
            if body is None:
                await _problem(413, f"request bodies are limited to {self.limit} bytes")(
                    scope, receive, send_with_id
                )
            else:
                await self._call(scope, _replay(body, receive), send_with_id, status)
        self._record(scope, status[0] if status else 500, started, request_id, peer)

    async def _call(self, scope: Scope, receive: Receive, send: Send, status: list[int]) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            logger.error("unexpected error in {}: {}", scope.get("path", "?"), type(exc).__name__)
            if not status:
                await _problem(500, "internal error")(scope, receive, send)

    def _record(
        self, scope: Scope, status: int, started: float, request_id: str, peer: str
    ) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "?")
        metrics: ServerMetrics | None = scope["app"].state.metrics if "app" in scope else None
        if metrics is not None:
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.duration.labels(method, route).observe(elapsed)
        principal = str(scope.get("state", {}).get("principal", "-"))
        logger.info(
            "{} {} {} {} {:.1f}ms principal={} request_id={}",
            peer,
            method,
            scope.get("path", "?"),
            status,
            elapsed * 1000,
            principal,
            request_id,
        )


def _problem(status: int, detail: str) -> Any:
    return problems.problem(status, detail)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


async def _bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
