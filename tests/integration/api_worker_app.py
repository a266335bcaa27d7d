"""A Faust app for the API tests: the product's worker app serving the API on ``DB_SCHEMA`` as
``streams.app`` does (``serve_api`` keeps the API ``create_app`` already serves, if it does).
Start it with ``faust -A tests.integration.api_worker_app worker``."""

from __future__ import annotations

from streams.api import serve_api
from streams.app import create_app
from streams.config import load_settings

settings = load_settings()
app = create_app(settings)
serve_api(app, settings, breakers=[app.projector.breaker])
