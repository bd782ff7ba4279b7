"""``/api/v0/profiles``: read back and erase one person's profile."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from eventfold.bootstrap import Services
from eventfold.domain.identity import parse_person
from eventfold.http.principal import authenticate
from eventfold.http.responses import json_response


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
