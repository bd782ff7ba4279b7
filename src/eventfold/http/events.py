"""``/api/v0/events``: the ingestion endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.http.body import check_json_content_type, read_body

ACCEPTED_BODY = b"{}"


async def post_events(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = services.authenticator.authenticate(request.headers.get("authorization"))
    gzipped = check_json_content_type(request)
    body = await read_body(request, services.settings.limits.max_body_bytes, gzipped)
    await services.ingest.accept_batch(principal, body)
    return Response(ACCEPTED_BODY, status_code=202, media_type="application/json")
