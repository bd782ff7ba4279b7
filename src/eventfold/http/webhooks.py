"""``/api/v0/webhooks``: endpoints of the key's account, their deliveries and replays.
Thin: decode, authenticate, call ``WebhookService`` on the thread pool (it reads the
database and resolves host names), answer."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.http.body import check_json_content_type, read_body
from eventfold.http.principal import authenticate
from eventfold.http.responses import json_response

MAX_BODY_BYTES = 64 * 1024


async def _body(request: Request) -> bytes:
    services: Services = request.app.state.services
    gzipped = check_json_content_type(request)
    return await read_body(request, MAX_BODY_BYTES, gzipped, services.settings.body_timeout_seconds)


class WebhooksEndpoint(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request)
        return json_response(await run_in_threadpool(services.webhooks.list, principal))

    async def post(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request)
        body = await _body(request)
        created = await run_in_threadpool(services.webhooks.create, principal, body)
        return json_response(created, status_code=201)


class WebhookEndpoint(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request)
        webhook_id = request.path_params["webhook_id"]
        return json_response(await run_in_threadpool(services.webhooks.get, principal, webhook_id))

    async def patch(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request)
        body = await _body(request)
        changed = await run_in_threadpool(
            services.webhooks.update, principal, request.path_params["webhook_id"], body
        )
        return json_response(changed)

    async def delete(self, request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await authenticate(request)
        await run_in_threadpool(
            services.webhooks.delete, principal, request.path_params["webhook_id"]
        )
        return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    rotated = await run_in_threadpool(
        services.webhooks.rotate_secret, principal, request.path_params["webhook_id"]
    )
    return json_response(rotated)


async def list_deliveries(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    query = request.query_params
    page = await run_in_threadpool(
        services.webhooks.deliveries,
        principal,
        request.path_params["webhook_id"],
        query.get("cursor"),
        query.get("status"),
        query.get("limit"),
    )
    return json_response(page)


async def replay(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    body = await _body(request)
    answer = await run_in_threadpool(
        services.webhooks.replay, principal, request.path_params["webhook_id"], body
    )
    return json_response(answer, status_code=202)
