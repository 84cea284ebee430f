"""The HTTP API and the web page: ``create_app(settings)``; ``vmm serve`` runs it."""

from video_mm.api.app import create_app

__all__ = ["create_app"]
