"""``/api/v0/profiles``: upsert people's fields and tags, read back and erase one
person's profile; export them all."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from eventfold.bootstrap import Services
from eventfold.domain.identity import parse_person
from eventfold.errors import EventfoldError
from eventfold.http.body import check_json_content_type, read_body
from eventfold.http.principal import authenticate
from eventfold.http.responses import json_response
from eventfold.observability import metrics
from eventfold.services.profile_export import parse_since


def person_in_query(request: Request) -> tuple[str, str]:
    query = request.query_params
    return parse_person(query.get("email"), query.get("phoneNumber"), query.get("profileId"))


async def get_profile(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    # Reads run on the thread pool: a database server's round trip must not stall the loop.
    profile = await run_in_threadpool(
        services.profiles.get_profile, principal, person_in_query(request)
    )
    return json_response(profile)


async def post_profiles(request: Request) -> Response:
    """Profile upserts: read and answered as ``POST /api/v0/events`` is (202 once they
    are on disk), folded like events."""
    services: Services = request.app.state.services
    settings = services.settings
    principal = None
    try:
        principal = await authenticate(request)
        gzipped = check_json_content_type(request)
        await services.ingest.refuse_if_fold_is_behind()
        body = await read_body(
            request, settings.limits.max_body_bytes, gzipped, settings.body_timeout_seconds
        )
        upserts = await services.ingest.accept_profiles(
            principal, body, request.headers.get("idempotency-key")
        )
    except EventfoldError as error:
        if principal is not None:
            services.rejections.record(principal, error)
        raise
    metrics.observe_upserts_accepted(principal.account_name, upserts)
    return json_response({}, status_code=202)


async def delete_profile(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    await services.profiles.erase(principal, person_in_query(request))
    return json_response({}, status_code=202)


async def get_profile_by_id(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    profile = await run_in_threadpool(
        services.profiles.get_profile_by_id, principal, request.path_params["profile_id"]
    )
    return json_response(profile)


async def export_profiles(request: Request) -> Response:
    """Every profile of the key's account, one JSON object a line, by profile id. The
    first page is read before the 200, so that a bad request or an unreachable database
    is an ordinary error answer; a failure later cuts the stream short (the chunked
    body then lacks its end, which HTTP clients report)."""
    services: Services = request.app.state.services
    principal = await authenticate(request)
    since = parse_since(request.query_params.get("since"))
    export = services.profile_export
    first = await run_in_threadpool(export.page, principal, 0, since)

    async def lines() -> AsyncIterator[bytes]:
        page = first
        while True:
            if page.lines:
                yield page.lines
            if page.after_id is None:
                return
            page = await run_in_threadpool(export.page, principal, page.after_id, since)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
