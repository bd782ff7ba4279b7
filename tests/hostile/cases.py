"""A corpus of hostile and malformed requests, each with the status it must get.

Every case is sent over a raw TCP connection to a real `eventfold serve`, so the HTTP
parser, the limits and the application are all exercised. ``KEY`` in a request is
replaced by a valid secret key before sending.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY = b"@@KEY@@"
EVENTS = "/api/v0/events"
GOOD_EVENT: dict[str, Any] = {"action": "view", "email": "a@b.co"}


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    status: int
    # Where two refusals are both right and which one comes depends on how TCP splits
    # the request (the head-size bound counts what the parser has taken).
    or_status: int | None = None


def http(method: str, path: str, headers: Mapping[str, str | bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost"]
    for name, value in headers.items():
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if body and "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post(
    body: bytes,
    extra: dict[str, str | bytes] | None = None,
    *,
    content_type: str | None = "application/json",
    auth: bytes | None = None,
) -> bytes:
    headers: dict[str, str | bytes] = {"Authorization": b"Bearer " + (auth or KEY)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers.update(extra or {})
    return http("POST", EVENTS, headers, body)


def with_event(**fields: Any) -> bytes:
    return json.dumps({"events": [{**GOOD_EVENT, **fields}]}).encode()


def get(path: str, *, auth: bool = True) -> bytes:
    return http("GET", path, {"Authorization": b"Bearer " + KEY} if auth else {})


def _malformed_json() -> list[Case]:
    bodies = [
        b"",
        b"{",
        b"}",
        b"[",
        b"nul",
        b"tru",
        b'{"events": [',
        b'{"events": [{]}',
        b'{"events": [],}',
        b"{'events': []}",
        b"{events: []}",
        b'{"events": [] /* c */}',
        b'{"events": [NaN]}',
        b'{"events": [Infinity]}',
        b'{"events": [-Infinity]}',
        b'{"events": []} trailing',
        b'{"events": ["\x01"]}',
        b'\xef\xbb\xbf{"events": []}',
        '{"events": []}'.encode("utf-16"),
        b'{"events": ["\xff"]}',
        b'{"events": ["\xc0\xaf"]}',
        b'{"events": ["\xe2\x82"]}',
        b'{"events": [1e400]}',
        b'{"events": [-1e400]}',
        b'{"events": [01]}',
        b'{"events": [.5]}',
        b'{"events": [0x10]}',
        b'{"events": ["\\x41"]}',
        b'{"events": ["\\u12"]}',
        b'{"events": [undefined]}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ]
    return [Case(f"malformed JSON #{i}", post(body), 400) for i, body in enumerate(bodies)]


def _wrong_shapes() -> list[Case]:
    bodies = [
        b"[]",
        b'"events"',
        b"42",
        b"null",
        b"true",
        b'{"events": null}',
        b'{"events": {}}',
        b'{"events": "x"}',
        b'{"events": 1}',
        b'{"event": []}',
        b'{"Events": []}',
        b'{"events": [null]}',
        b'{"events": [1]}',
        b'{"events": [[]]}',
        b'{"events": ["x"]}',
        b'{"events": [true]}',
        b"{}",
    ]
    return [Case(f"wrong shape {body[:30]!r}", post(body), 400) for body in bodies]


def _wrong_types() -> list[Case]:
    wrong: dict[str, list[Any]] = {
        "action": [None, 1, 1.5, True, [], {}, ""],
        "email": [1, True, [], {}, "", "no-at-sign", "a@", "@b.co", "a b@c.co", "a@b"],
        "phoneNumber": [1, True, [], {}, "", "359123", "+12", "+1234567890123456", "+12a45"],
        "profileId": [1, True, [], {}, ""],
        "locale": [1, True, [], "bgr", "b", "e1", "en-US", ""],
        "products": [
            1,
            "x",
            {},
            True,
            [1],
            ["x"],
            [{}],
            [{"id": None}],
            [{"id": True}],
            [{"id": 1.5}],
            [{"id": ""}],
            [{"id": []}],
            [{"id": "1", "quantity": -1}],
            [{"id": "1", "quantity": "2"}],
            [{"id": "1", "custom": []}],
        ],
        "custom": [
            1,
            "x",
            [],
            True,
            {"boolean": []},
            {"string": {}},
            {"string": [1]},
            {"string": [{"key": "k"}]},
            {"string": [{"values": []}]},
            {"string": [{"key": "", "values": []}]},
            {"string": [{"key": "k", "values": [1]}]},
            {"numeric": [{"key": "k", "values": ["1"]}]},
            {"numeric": [{"key": "k", "values": [True]}]},
            {"date": [{"key": "k", "values": ["tomorrow"]}]},
            {"date": [{"key": "k", "values": [1700000000]}]},
            {"string": [{"key": "k", "values": ["v"], "extra": 1}]},
        ],
        "tags": [1, "x", {}, [1], [None], [[]], [""], ["t" * 257]],
        "timestamp": [
            1,
            True,
            [],
            {},
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01",
            "3000-01-01T00:00:00Z",
            "2024-01-01T25:00:00Z",
        ],
    }
    return [
        Case(f"{field} = {json.dumps(value)[:40]}", post(with_event(**{field: value})), 400)
        for field, values in wrong.items()
        for value in values
    ]


def _missing_and_limits() -> list[Case]:
    ten_mb = "x" * 10_000_000
    return [
        Case("no identifier", post(json.dumps({"events": [{"action": "a"}]}).encode()), 400),
        Case("only profileId", post(with_event(email=None, profileId="p")), 400),
        Case("no action", post(json.dumps({"events": [{"email": "a@b.co"}]}).encode()), 400),
        Case("null action", post(with_event(action=None)), 400),
        Case("NUL in action", post(with_event(action="a\u0000b")), 400),
        Case("NUL in profileId", post(with_event(profileId="p\u0000")), 400),
        Case("action of 257 characters", post(with_event(action="a" * 257)), 400),
        Case("10 MB action", post(with_event(action=ten_mb)), 400),
        Case(
            "10 MB custom string",
            post(with_event(custom={"string": [{"key": "k", "values": [ten_mb]}]})),
            400,
        ),
        Case("11 MB body", post(with_event(action="a" * 11_000_000)), 413),
        Case("5,001 events", post(json.dumps({"events": [GOOD_EVENT] * 5_001}).encode()), 413),
        Case("huge integer id", post(with_event(products=[{"id": 10**400}])), 400),
        Case(
            "huge integer quantity",
            post(with_event(products=[{"id": "1", "quantity": 10**400}])),
            400,
        ),
        Case(
            "duplicate key, invalid last",
            post(b'{"events": [{"action": "a", "email": "a@b.co", "email": "nope"}]}'),
            400,
        ),
        Case("duplicate events key, invalid last", post(b'{"events": [], "events": 5}'), 400),
    ]


def _content_types_and_encodings() -> list[Case]:
    body = json.dumps({"events": [GOOD_EVENT]}).encode()
    types = [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "application/jsonx",
        "json",
        "*/*",
        "",
    ]
    cases = [Case(f"Content-Type {t!r}", post(body, content_type=t), 415) for t in types]
    cases.append(Case("no Content-Type", post(body, content_type=None), 415))
    for encoding in ["br", "deflate", "compress", "gzip, gzip", "x-gzip", "zstd"]:
        cases.append(
            Case(f"Content-Encoding {encoding}", post(body, {"Content-Encoding": encoding}), 415)
        )
    bomb = gzip.compress(b'{"events": [' + b" " * 60_000_000 + b"]}")
    cases += [
        Case("gzip bomb", post(bomb, {"Content-Encoding": "gzip"}), 413),
        Case(
            "gzip inside gzip",
            post(gzip.compress(gzip.compress(body)), {"Content-Encoding": "gzip"}),
            400,
        ),
        Case("not gzip", post(body, {"Content-Encoding": "gzip"}), 400),
        Case("truncated gzip", post(gzip.compress(body)[:-8], {"Content-Encoding": "gzip"}), 400),
        Case(
            "gzip with trailing junk",
            post(gzip.compress(body) + b"junk", {"Content-Encoding": "gzip"}),
            400,
        ),
        Case("gzip of invalid JSON", post(gzip.compress(b"{"), {"Content-Encoding": "gzip"}), 400),
    ]
    return cases


def _authorization() -> list[Case]:
    body = json.dumps({"events": [GOOD_EVENT]}).encode()
    values: list[bytes] = [
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"Token abc",
        b"Bearer a b",
        b"Bearer " + b"x" * 5_000,
        b"Bearer \xff\xfe",
        b"Bearer efsk_" + b"A" * 43,
        b"Bearer " + KEY + b"x",
        b"Bearer " + KEY[:-1],
        b"BearerX " + KEY,
        b"Bearer\t" + KEY,
    ]
    cases = [
        Case(
            f"Authorization {v[:30]!r}",
            http("POST", EVENTS, {"Authorization": v, "Content-Type": "application/json"}, body),
            401,
        )
        for v in values
    ]
    cases.append(
        Case(
            "no Authorization",
            http("POST", EVENTS, {"Content-Type": "application/json"}, body),
            401,
        )
    )
    for path in ["/api/v0/events", "/api/v0/profiles?email=a@b.co"]:
        cases.append(Case(f"GET {path} without a key", get(path, auth=False), 401))
    return cases


def _protocol() -> list[Case]:
    head = b"POST /api/v0/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY
    return [
        Case("header of 200 KB", http("GET", "/healthz", {"X-Big": "a" * 200_000}), 431),
        Case(
            "200 headers of 1 KB",
            http("GET", "/healthz", {f"X-H{i}": "a" * 1_000 for i in range(200)}),
            431,
        ),
        # The HTTP parser refuses these itself, with its plain-text 400.
        Case("URL of 100 KB", http("GET", "/api/v0/events?x=" + "a" * 100_000, {}), 400, 431),
        Case("NUL in a header", http("GET", "/healthz", {"X-A": b"a\x00b"}), 400),
        Case("Content-Length not a number", head + b"\r\nContent-Length: abc\r\n\r\n{}", 400),
        Case("negative Content-Length", head + b"\r\nContent-Length: -1\r\n\r\n{}", 400),
        Case(
            "Content-Length and chunked",
            head + b"\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            400,
        ),
        Case(
            "two Content-Lengths",
            head + b"\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
        ),
        Case(
            "Content-Length over the limit",
            head + b"\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}",
            413,
        ),
        Case("garbage request line", b"GARBAGE\r\n\r\n", 400),
        Case("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        Case(
            "bad chunked body",
            head + b"\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        Case(
            "space in header name",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
            400,
        ),
    ]


def _read_endpoints() -> list[Case]:
    queries = [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1001",
        "limit=1.5",
        "cursor=garbage",
        "cursor=",
        "cursor=djE6eA",
        "startDateTime=yesterday",
        "endDateTime=2024-13-01",
        "startDateTime=",
        "email=nope",
        "phoneNumber=12",
        "profileId=",
        "email=a@b.co&phoneNumber=%2B35988",
        "email=%ff",
        "email=a@b.co&profileId=p",
    ]
    cases = [Case(f"GET events?{q}", get(f"/api/v0/events?{q}"), 400) for q in queries]
    profile_queries = [
        "",
        "email=",
        "email=nope",
        "phoneNumber=abc",
        "profileId=",
        "email=a@b.co&phoneNumber=%2B35988",
        "email=%ff%fe",
        "unknown=1",
    ]
    for q in profile_queries:
        cases.append(Case(f"GET profiles?{q}", get(f"/api/v0/profiles?{q}"), 400))
        cases.append(
            Case(
                f"DELETE profiles?{q}",
                http("DELETE", f"/api/v0/profiles?{q}", {"Authorization": b"Bearer " + KEY}),
                400,
            )
        )
    return cases


def _paths_and_methods() -> list[Case]:
    auth = {"Authorization": b"Bearer " + KEY}
    return [
        Case("PUT events", http("PUT", EVENTS, auth, b"{}"), 405),
        Case("PATCH events", http("PATCH", EVENTS, auth, b"{}"), 405),
        Case("DELETE events", http("DELETE", EVENTS, auth), 405),
        Case("PUT profiles", http("PUT", "/api/v0/profiles", auth, b"{}"), 405),
        # Profile upserts are read as event batches are: JSON only.
        Case("POST profiles without JSON", http("POST", "/api/v0/profiles", auth, b"{}"), 415),
        Case("POST healthz", http("POST", "/healthz", {}, b"{}"), 405),
        Case(
            "trailing slash",
            post(b'{"events": []}').replace(EVENTS.encode() + b" ", EVENTS.encode() + b"/ ", 1),
            404,
        ),
        Case("unknown path", get("/api/v1/events"), 404),
        Case("path traversal", get("/api/v0/../../etc/passwd"), 404),
        Case("encoded path", get("/api/v0/%65vents%00"), 404),
        Case("root", get("/"), 404),
    ]


def all_cases() -> list[Case]:
    return [
        *_malformed_json(),
        *_wrong_shapes(),
        *_wrong_types(),
        *_missing_and_limits(),
        *_content_types_and_encodings(),
        *_authorization(),
        *_protocol(),
        *_read_endpoints(),
        *_paths_and_methods(),
    ]
