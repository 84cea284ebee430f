"""Bearer-token auth. Writes need a token whenever tokens are configured (``api.tokens`` and
``VMM_API_TOKEN``); reads need one only when ``api.public_reads`` is off. With no tokens configured
the API is open, which is what a single-user ``vmm serve`` on localhost wants. The app attaches
these dependencies only where the settings ask for them, so its OpenAPI schema says the same.
Read tokens (``api.read_tokens``) open reads of a private archive, never writes.

Reads also accept the token from the ``vmm_token`` cookie, because ``<video>`` and ``<img>``
elements cannot send headers; writes never do, so a cookie cannot forge an upload or a delete.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from video_mm.errors import VideoMMError

COOKIE = "vmm_token"
bearer = HTTPBearer(auto_error=False, description="A token from api.tokens or VMM_API_TOKEN")


class Unauthorized(VideoMMError):
    code = "unauthorized"


def _valid(token: str | None, tokens: list[str]) -> bool:
    """Constant-time comparison against every configured token."""
    if not token:
        return False
    found = False
    for known in tokens:
        found |= hmac.compare_digest(token.encode(), known.encode())
    return found


def require_write(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Writes: the bearer header only (never the cookie, so no cross-site request can write)."""
    token = credentials.credentials if credentials else None
    if not _valid(token, request.app.state.settings.api_tokens):
        raise Unauthorized("a valid bearer token is required for this request")


def require_read(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Reads, when ``api.public_reads`` is off: the bearer header, else the cookie; a write token
    or a read token (``api.read_tokens``: a private archive's readers, who cannot write)."""
    token = credentials.credentials if credentials else request.cookies.get(COOKIE)
    settings = request.app.state.settings
    if not _valid(token, [*settings.api_tokens, *settings.api.read_tokens]):
        raise Unauthorized("a valid bearer token is required to read (api.public_reads is off)")
