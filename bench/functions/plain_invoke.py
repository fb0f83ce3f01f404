"""bench/e2e.py's baseline for synchronous Invoke: a plain aiohttp server that runs the same no-op
handler in its own process (no queue, no worker, no sandbox) and answers its return value as JSON.

    python bench/functions/plain_invoke.py PORT
"""
from __future__ import annotations

import json
import sys

from aiohttp import web

import noop


async def invoke(request: web.Request) -> web.Response:
    body = await request.read()
    result = noop.handler(json.loads(body or b"{}"), None)
    return web.Response(body=json.dumps(result).encode(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
