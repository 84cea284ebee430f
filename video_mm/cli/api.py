"""`vmm serve`: the HTTP API and the web page, with an embedded worker when no broker is set."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer
from rich.console import Console

from video_mm.errors import ConfigError
from video_mm.settings import get_settings

console = Console(stderr=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: api.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Listen beyond loopback with no API token: anyone "
                           "who can reach the port can upload and delete.")
    ] = False,
) -> None:
    """Serve the API (/v1, /docs, /metrics, /healthz) and the web page at http://HOST:PORT/.

    With no broker configured (broker.url), jobs run in this process, one at a time: one command
    serves a working system. With a broker, jobs go to `vmm worker` processes. Beyond loopback it
    needs an API token (VMM_API_TOKEN) unless told --insecure.
    """
    import uvicorn

    from video_mm.api.app import create_app
    from video_mm.pipeline.dispatch import uses_workers

    settings = get_settings()
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    if not settings.api_tokens and not _loopback(host):
        if not insecure:
            raise ConfigError(
                f"refusing to listen on {host} with no API token: anyone who can reach it could "
                "upload and delete. Set VMM_API_TOKEN (or api.tokens), listen on 127.0.0.1, or "
                "pass --insecure"
            )
        console.print(
            f"[yellow]warning:[/yellow] listening on {host} with no API token (--insecure): "
            "anyone who can reach it can upload and delete."
        )
    mode = "broker (jobs go to `vmm worker`)" if uses_workers(settings) else "embedded worker"
    console.print(f"video-mm on http://{host}:{port}/ · {mode} · data in {settings.data_dir}")
    from video_mm.pipeline.stages import gap_messages

    for message in gap_messages(settings):
        console.print(f"[yellow]note:[/yellow] {message}", highlight=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command()(serve)
