"""The dead-letter routes, the same operations as `bus dlq`: GET /dlq, GET /dlq/{id},
POST /dlq/redrive and POST /dlq/purge."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from bus.broker.awsapi import decode_request
from bus.broker.envelope import RequestError
from bus.store import deadletters


async def _letters(request: web.Request, body: dict | None = None) -> list[deadletters.Letter]:
    body = body or {}
    target = body.get("target") or request.query.get("target")
    ids = body.get("ids")  # [] names no letter: it must not fall through to "every letter"
    if ids is None and request.query.get("ids"):
        ids = request.query["ids"].split(",")
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
    try:
        body = _action_body(await request.read())
    except RequestError as err:
        return web.json_response({"__type": err.type, "message": err.message}, status=err.status)
    letters = await _letters(request, body)
    action = deadletters.redrive if request.match_info["action"] == "redrive" else deadletters.purge
    count = await action(request.app["broker"].redis, letters)
    return web.json_response({request.match_info["action"] + "d": count})


def _action_body(raw: bytes) -> dict[str, Any]:
    """`{"target": T}` and/or `{"ids": [...]}`, or nothing (every letter); anything else is a 400."""
    body = decode_request(raw) if raw.strip() else {}
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise RequestError("SerializationException", 'Send {"target": T} and/or {"ids": [...]}.')
    target, ids = body.get("target"), body.get("ids")
    if target is not None and not isinstance(target, str):
        raise RequestError("SerializationException", "target must be a target key (text).")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise RequestError("SerializationException", "ids must be a list of dead-letter ids (text).")
    return body
