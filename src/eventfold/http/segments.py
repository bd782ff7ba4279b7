"""``/api/v0/segments``: define segments, list their members, read their change feed."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.http.body import check_json_content_type, read_body
from eventfold.http.principal import authenticate
from eventfold.http.responses import json_response

# A definition is at most 64 KiB (a 400 says so); past this the body is not even read.
_MAX_BODY_BYTES = 1024 * 1024


async def _body(request: Request) -> bytes:
    services: Services = request.app.state.services
    gzipped = check_json_content_type(request)
    return await read_body(
        request, _MAX_BODY_BYTES, gzipped, services.settings.body_timeout_seconds
    )


async def create_segment(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    body = await _body(request)
    segment = await run_in_threadpool(services.segments.create, principal, body)
    return json_response(segment, status_code=201)


async def list_segments(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    return json_response(await run_in_threadpool(services.segments.list_all, principal))


async def get_segment(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    key = request.path_params["key"]
    return json_response(await run_in_threadpool(services.segments.get, principal, key))


async def replace_segment(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    body = await _body(request)
    key = request.path_params["key"]
    segment = await run_in_threadpool(services.segments.replace, principal, key, body)
    return json_response(segment)


async def delete_segment(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    await run_in_threadpool(services.segments.delete, principal, request.path_params["key"])
    return Response(status_code=204)


async def segment_members(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    query = request.query_params
    page = await run_in_threadpool(
        services.segments.members,
        principal,
        request.path_params["key"],
        query.get("limit"),
        query.get("cursor"),
    )
    return json_response(page)


async def segment_changes(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    query = request.query_params
    page = await run_in_threadpool(
        services.segments.changes,
        principal,
        request.path_params["key"],
        query.get("cursor"),
        query.get("limit"),
    )
    return json_response(page)
