"""CloudEvents 1.0 over HTTP in: POST /cloudevents[/{bus}] (being written)."""
from __future__ import annotations

from aiohttp import web


async def post_cloudevents(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()
