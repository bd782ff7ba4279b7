"""``/api/v0/events``: the ingestion endpoint."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.domain.identity import PERSON_KINDS, parse_person
from eventfold.errors import EventfoldError
from eventfold.http.body import check_json_content_type, read_body
from eventfold.http.principal import authenticate
from eventfold.http.responses import json_response
from eventfold.observability import metrics
from eventfold.services.profiles import EventListing

ACCEPTED_BODY = b"{}"


async def post_events(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    principal = None
    try:
        principal = await authenticate(request)
        gzipped = check_json_content_type(request)
        # Before the body is read: under overload a refused request costs no upload.
        await services.ingest.refuse_if_fold_is_behind()
        body = await read_body(
            request, settings.limits.max_body_bytes, gzipped, settings.body_timeout_seconds
        )
        events = await services.ingest.accept_batch(
            principal, body, request.headers.get("idempotency-key")
        )
    except EventfoldError as error:
        metrics.observe_rejected(error.reason, error.event_count)
        request.state.events = error.event_count
        if principal is not None:
            services.rejections.record(principal, error)
        raise
    request.state.events = events
    metrics.observe_accepted(principal.account_name, events)
    return Response(ACCEPTED_BODY, status_code=202, media_type="application/json")


async def get_events(request: Request) -> Response:
    services: Services = request.app.state.services
    principal = await authenticate(request)
    query = request.query_params
    person = None
    if any(kind in query for kind in PERSON_KINDS):
        person = parse_person(query.get("email"), query.get("phoneNumber"), query.get("profileId"))
    listing = EventListing(
        cursor=query.get("cursor"),
        event_types=tuple(query.getlist("eventTypes[]") + query.getlist("eventTypes")),
        start=query.get("startDateTime"),
        end=query.get("endDateTime"),
        person=person,
        limit=query.get("limit"),
        order=query.get("order"),
    )
    page = await run_in_threadpool(services.profiles.list_events, principal, listing)
    return json_response(page)
