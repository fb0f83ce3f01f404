"""The dead-letter routes, the same operations as `bus dlq`: GET /dlq, GET /dlq/{id},
POST /dlq/redrive and POST /dlq/purge."""
from __future__ import annotations

from aiohttp import web

from bus.store import deadletters


async def _letters(request: web.Request, body: dict | None = None) -> list[deadletters.Letter]:
    body = body or {}
    target = body.get("target") or request.query.get("target")
    ids = body.get("ids") or (request.query["ids"].split(",") if request.query.get("ids") else None)
    return await deadletters.list_letters(request.app["broker"].redis, target=target, ids=ids)


async def get_dlq(request: web.Request) -> web.Response:
    return web.json_response({"dead_letters": [item.as_dict() for item in await _letters(request)]})


async def get_dead_letter(request: web.Request) -> web.Response:
    found = await deadletters.find_letters(request.app["broker"].redis, request.match_info["id"])
    if not found:
        return web.json_response({"__type": "ResourceNotFoundException",
                                  "message": f"Dead letter {request.match_info['id']} does not exist."}, status=404)
    return web.json_response(found[0].as_dict())


async def post_dlq_action(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    letters = await _letters(request, body if isinstance(body, dict) else {})
    action = deadletters.redrive if request.match_info["action"] == "redrive" else deadletters.purge
    count = await action(request.app["broker"].redis, letters)
    return web.json_response({request.match_info["action"] + "d": count})
