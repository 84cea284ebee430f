"""The FastAPI application: routes, error bodies, metrics, the web page, and the embedded worker.

``create_app(settings)`` builds one app for one settings object; ``vmm serve`` runs it with uvicorn.
Every error is JSON ``{"error": {"code", "message"}}``; library errors keep their ``code`` and get
the HTTP status that fits it, and messages never show server paths.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from video_mm.api import routes, schemas
from video_mm.api.auth import require_read, require_write
from video_mm.api.limits import Gate, RateLimiter
from video_mm.api.metrics import Metrics, MetricsMiddleware, StageWatcher
from video_mm.api.worker import EmbeddedWorker
from video_mm.errors import VideoError, VideoMMError
from video_mm.pipeline.dispatch import uses_workers
from video_mm.settings import Settings, get_settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

# HTTP status per error code; codes not listed are 500 (a bug or a misconfiguration).
STATUS = {
    "invalid_request": 400,
    "bad_query": 400,
    "forbidden_source": 400,
    "unauthorized": 401,
    "not_found": 404,
    "idempotency_conflict": 409,
    "not_ready": 409,
    "video_too_large": 413,
    "too_large": 413,
    "not_a_video": 415,
    "unsupported_codec": 415,
    "bad_video": 422,
    "corrupt_video": 422,
    "decode_timeout": 422,
    "window_past_end": 422,
    "rate_limited": 429,
    "busy": 503,
    "insufficient_storage": 507,
    "model_error": 503,
    "weights_not_found": 503,
    "storage_error": 503,
    "index_error": 503,
}


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    body = schemas.ErrorOut(error=schemas.ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VideoMMError)
    status = STATUS.get(exc.code, 500)
    # A video error's message would start with the server-side spool path: give only the reason.
    message = exc.reason if isinstance(exc, VideoError) else str(exc)
    if status == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if (retry := getattr(exc, "retry_after_s", None)) is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    return error_response(status, exc.code, message, **headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), **(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    ]
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal error ({type(exc).__name__})")


def _version() -> str:
    try:
        return version("video-mm")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class Limits:
    """The app's per-client rates and its bound on preview conversions (``api.*``)."""

    uploads: RateLimiter
    searches: RateLimiter
    previews: Gate


class Runtime:
    """What the app runs beside its routes: the embedded worker and the stage watcher."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        from video_mm.pipeline.dispatch import enqueue

        self.settings = settings
        self.queue = uses_workers(settings) or not settings.api.embedded_worker
        self.worker = None if self.queue else EmbeddedWorker(lambda j: enqueue(j, settings))
        self.watcher = StageWatcher(self.catalog, metrics.stage_seconds)
        self.reaper: Any = None
        self._stop = threading.Event()
        self._watch_thread: threading.Thread | None = None

    def catalog(self) -> Any:
        from video_mm.pipeline.runner import context

        return context(self.settings).catalog

    def waiting(self) -> int:
        return self.worker.pending() if self.worker else 0

    async def start_job(self, job_id: str) -> None:
        """Embedded: hand the job to this process's worker. Else: send it to the broker."""
        if self.worker is not None:
            self.worker.submit(job_id)
            return
        from video_mm.pipeline.dispatch import enqueue

        await run_in_threadpool(enqueue, job_id, self.settings, queue=True)

    def start(self) -> None:
        catalog = self.catalog()  # opens the catalog and migrates it before the first request
        if self.queue and uses_workers(self.settings):
            from video_mm.pipeline.dispatch import check_broker_settings, send_step
            from video_mm.pipeline.lifecycle import Reaper

            check_broker_settings(self.settings)
            # Jobs whose worker died, and jobs the broker did not take, are ended or sent again.
            self.reaper = Reaper(self.settings, catalog,
                                 lambda job_id, step: send_step(job_id, self.settings, step))
            self.reaper.start()
        if self.worker is not None:
            self.worker.start()
            # Jobs a previous run of this server left behind (it runs them alone: no broker).
            stale = catalog.list_jobs(state="running", limit=100_000)
            stale += catalog.list_jobs(state="queued", limit=100_000)
            for job in sorted(stale, key=lambda j: j.created_at):
                self.worker.submit(job.id)
        if self.settings.api.metrics_poll_s > 0:
            self._watch_thread = threading.Thread(target=self._watch, name="vmm-stage-watch",
                                                  daemon=True)
            self._watch_thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.api.metrics_poll_s):
            try:
                self.watcher.tick()
            except Exception:  # metrics must never take the server down
                log.debug("stage watcher tick failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self.reaper is not None:
            self.reaper.stop()
        if self.worker is not None:
            self.worker.stop(timeout=self.settings.api.shutdown_timeout_s)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)


class SecurityHeaders:
    """Browsers must not guess content types (an upload is never rendered as HTML) and must not
    leak URLs to other sites. Plain ASGI, so streamed bodies pass through untouched."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, add_headers if scope["type"] == "http" else send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for these settings (default: the process's, from config file and environment)."""
    settings = settings or get_settings()
    metrics: Metrics | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime: Runtime = app.state.runtime
        await run_in_threadpool(runtime.start)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="video-mm",
        version=_version(),
        description="Caption videos and search video archives by text. Writes need a bearer "
        "token when tokens are configured (api.tokens, VMM_API_TOKEN); reads too when "
        "api.public_reads is off. Errors are JSON: {\"error\": {\"code\", \"message\"}}.",
        lifespan=lifespan,
    )
    metrics = Metrics(lambda: app.state.runtime.catalog(), lambda: app.state.runtime.waiting())
    app.state.settings = settings
    app.state.metrics = metrics
    a = settings.api
    app.state.limits = Limits(
        uploads=RateLimiter("uploads", "api.upload_per_minute", a.upload_per_minute, a.rate_burst),
        searches=RateLimiter("searches", "api.search_per_minute", a.search_per_minute,
                             a.rate_burst),
        previews=Gate("preview conversions", a.preview_max_concurrent, a.preview_wait_s),
    )
    app.state.runtime = Runtime(settings, metrics)
    app.state.start_job = app.state.runtime.start_job
    app.state.ready = False

    app.add_exception_handler(VideoMMError, _library_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    app.add_middleware(SecurityHeaders)

    if settings.api_tokens:
        app.include_router(routes.writes, dependencies=[Depends(require_write)])
    else:
        app.include_router(routes.writes)
    if (settings.api_tokens or settings.api.read_tokens) and not settings.api.public_reads:
        app.include_router(routes.reads, dependencies=[Depends(require_read)])
    else:
        app.include_router(routes.reads)

    @app.get("/healthz", response_model=schemas.Health, tags=["health"])
    def healthz(request: Request) -> Any:
        """Liveness and readiness in one: 200 once the catalog is open and the worker started."""
        if not request.app.state.ready:
            return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
        return schemas.Health(status="ok")

    @app.get("/readyz", response_model=schemas.Health, tags=["health"],
             responses={503: {"model": schemas.Health}})
    def readyz(request: Request) -> Any:
        """Readiness with its dependencies checked: the catalog answers, blob storage is there."""
        from video_mm.pipeline.runner import context

        checks: dict[str, str] = {}
        ok = request.app.state.ready
        checks["startup"] = "ok" if ok else "starting"
        ctx = context(request.app.state.settings)
        for name, probe in (("catalog", ctx.catalog.job_counts),
                            ("storage", lambda: ctx.blobs.fs.exists(ctx.blobs.root))):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:
                ok = False
                checks[name] = f"error: {type(exc).__name__}"
        checks["worker"] = "embedded" if request.app.state.runtime.worker else "broker"
        body = schemas.Health(status="ok" if ok else "unavailable", checks=checks)
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
