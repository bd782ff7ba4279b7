"""Webhooks as the API sees them: which changes an endpoint asks for, and the checks a
subscription's fields must pass. Pure: no I/O (the address check resolves nothing, it
classifies addresses it is given)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from eventfold.errors import FieldError, InvalidRequest

SEGMENT_ENTERED = "segment.entered"
SEGMENT_EXITED = "segment.exited"
EVENT_MATCHED = "event.matched"
MESSAGE_TYPES = (SEGMENT_ENTERED, SEGMENT_EXITED, EVENT_MATCHED)
STATUSES = ("enabled", "disabled")
MAX_URL_LENGTH = 2_000
MAX_FILTER_ITEMS = 100


@dataclass(frozen=True, slots=True)
class Subscription:
    """What an endpoint receives: message types, and the segments and actions they are
    narrowed to (None: all)."""

    types: tuple[str, ...]
    segments: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None

    def wants_event(self, action: str) -> bool:
        """Whether an event with this action makes an ``event.matched`` message."""
        return EVENT_MATCHED in self.types and (self.actions is None or action in self.actions)

    def wants_segment_change(self, segment: str, change: str) -> bool:
        """Whether entering or exiting (``change``) this segment makes a message."""
        return change in self.types and (self.segments is None or segment in self.segments)


def check_url(url: str) -> str:
    """The URL as given when it is an absolute http(s) URL with a host; else InvalidRequest."""
    problem = _url_problem(url)
    if problem is not None:
        raise InvalidRequest(
            f"url: {url[:80]!r} {problem}", [FieldError("url", f"the URL {problem}")]
        )
    return url


def _url_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(character.isspace() or character < " " or character == "\x7f" for character in url):
        return "must not hold spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
    except ValueError as error:  # a bracketed host that is no IP address: "[::1", "[x]"
        return f"is not a URL ({error})"
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if parts.scheme not in ("https", "http"):
        return "must start with https:// (or http://)"
    if not parts.hostname:
        return "names no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user or password (the message is signed instead)"
    return None


def check_types(types: Sequence[str]) -> tuple[str, ...]:
    unknown = [kind for kind in types if kind not in MESSAGE_TYPES]
    if not types or unknown:
        text = f"use one or more of {', '.join(MESSAGE_TYPES)}"
        detail = f"unknown type {unknown[0]!r}; {text}" if unknown else f"is empty; {text}"
        raise InvalidRequest(f"types: {detail}", [FieldError("types", detail)])
    return tuple(dict.fromkeys(types))


def check_filter(name: str, values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if len(values) > MAX_FILTER_ITEMS or any(not value for value in values):
        detail = f"give 1 to {MAX_FILTER_ITEMS} non-empty names, or leave it out for all"
        raise InvalidRequest(f"{name}: {detail}", [FieldError(name, detail)])
    return tuple(dict.fromkeys(values))


def check_status(status: str) -> str:
    if status not in STATUSES:
        detail = f"{status[:20]!r} is not 'enabled' or 'disabled'"
        raise InvalidRequest(f"status: {detail}", [FieldError("status", detail)])
    return status


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback,
    link-local, multicast, reserved or unspecified); IPv4 mapped into IPv6 as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
