"""The growth dashboard: pages served by the worker's web server on the API's port, at ``/``.

A single page (``streams/data/dashboard/``: ``index.html``, ``app.js``, ``app.css``) that reads
the same JSON API (:mod:`streams.api.routes`) and renders it: Overview (events per minute, totals,
the pipeline's health), Growth, Candidates, an Account, an event's journey, Crawls. It refreshes
the page shown every few seconds without reloading. Every asset is this product's own file: no
CDN, no third-party script (the charts are SVG drawn by ``app.js``).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

__all__ = ["ASSETS", "install_dashboard"]

ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
"""The files of the dashboard, with their content types."""


def _asset(name: str) -> bytes:
    return resources.files("streams").joinpath("data", "dashboard", name).read_bytes()


def install_dashboard(web_app: web.Application) -> None:
    """Serve the dashboard at ``/`` and its assets at ``/dashboard/<file>`` on ``web_app``."""
    bodies = {name: _asset(name) for name in ASSETS}

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=bodies["index.html"], content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=bodies[name], content_type=ASSETS[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    web_app.router.add_get("/", page)
    web_app.router.add_get("/dashboard/{name}", asset)
