"""Segments as the API offers them: define, change, delete, list members, read the
change feed; everything scoped to the key's account.

Saving a definition checks it whole (language, limits, references, cycles) inside the
transaction that stores it, so two requests at once cannot pass the per-account limit or
make a cycle together. The evaluation of existing profiles is left to the backfill loop
(``status: preparing`` until it is done).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable

import msgspec

from eventfold.domain.moments import iso_from_ms
from eventfold.domain.segments.language import (
    KEY_PATTERN,
    MAX_DEFINITION_BYTES,
    MAX_SEGMENTS_PER_ACCOUNT,
    Condition,
    DefinitionError,
    parse_condition,
    segment_references,
)
from eventfold.domain.views import public_profile_id
from eventfold.errors import Conflict, FieldError, InvalidRequest, NotFound
from eventfold.storage.base import Principal
from eventfold.storage.segment_contract import SegmentRecord, SegmentRecords, SegmentStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
MAX_NAME_LENGTH = 200


class SegmentBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST`` and ``PUT /api/v0/segments``."""

    key: str
    name: str
    match: msgspec.Raw


class SegmentView(msgspec.Struct, omit_defaults=True):
    key: str
    name: str
    match: msgspec.Raw
    version: int
    status: str
    createdAt: str
    updatedAt: str
    memberCount: int | None = None


class MemberView(msgspec.Struct):
    profile: str
    emails: list[str]
    phoneNumbers: list[str]
    since: str


class MembersPage(msgspec.Struct):
    members: list[MemberView]
    nextCursor: str | None


class ChangeView(msgspec.Struct):
    seq: int
    profile: str
    change: str
    at: str
    version: int


class ChangesPage(msgspec.Struct):
    changes: list[ChangeView]
    nextCursor: str


class SegmentList(msgspec.Struct):
    segments: list[SegmentView]


_body_decoder = msgspec.json.Decoder(SegmentBody)


class SegmentService:
    def __init__(self, store: SegmentStore, on_change: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._on_change = on_change  # wakes the backfill loop

    def create(self, principal: Principal, body: bytes) -> SegmentView:
        """Stores a new segment (``preparing``); Conflict if the key exists."""
        wanted = _decode_body(body)
        condition = _check_definition(wanted)
        account = principal.account_id

        def job(records: SegmentRecords) -> SegmentRecord:
            existing = records.definitions([account])
            if any(record.key == wanted.key for record in existing):
                raise Conflict(
                    f"key: a segment {wanted.key!r} exists already; change it with "
                    f"PUT /api/v0/segments/{wanted.key}"
                )
            if len(existing) >= MAX_SEGMENTS_PER_ACCOUNT:
                raise InvalidRequest(
                    f"an account holds at most {MAX_SEGMENTS_PER_ACCOUNT} segments; "
                    "delete one first",
                    [FieldError("key", f"limit of {MAX_SEGMENTS_PER_ACCOUNT} segments reached")],
                )
            _check_references(wanted.key, condition, existing)
            now = records.now_ms
            record = SegmentRecord(
                0, account, wanted.key, wanted.name, bytes(wanted.match), 1, "preparing", now, now
            )
            return dataclasses.replace(record, id=records.insert_segment(record))

        try:
            created = self._store.segments_transaction(job)
        except Conflict:
            raise
        except Exception:
            # Two requests for one new key at once: the second meets the unique key.
            if any(r.key == wanted.key for r, _ in self._store.list_segments(account)):
                raise Conflict(f"key: a segment {wanted.key!r} exists already") from None
            raise
        self._on_change()
        return segment_view(created)

    def replace(self, principal: Principal, key: str, body: bytes) -> SegmentView:
        """A new definition: version + 1, evaluated again (with the segments naming it)."""
        wanted = _decode_body(body)
        if wanted.key != key:
            raise InvalidRequest(
                f"key: {wanted.key!r} differs from the path's {key!r}; keys cannot be renamed",
                [FieldError("key", "must equal the key in the path")],
            )
        condition = _check_definition(wanted)
        account = principal.account_id

        def job(records: SegmentRecords) -> SegmentRecord:
            current = records.segment_for_update(account, key)
            if current is None:
                raise _unknown(key)
            existing = records.definitions([account])
            _check_references(key, condition, existing)
            now = records.now_ms
            updated = SegmentRecord(
                current.id,
                account,
                key,
                wanted.name,
                bytes(wanted.match),
                current.version + 1,
                "preparing",
                current.created_at_ms,
                now,
            )
            records.update_segment(updated)
            for dependent in _dependents(key, existing):
                records.update_segment(
                    SegmentRecord(
                        dependent.id,
                        account,
                        dependent.key,
                        dependent.name,
                        dependent.definition,
                        dependent.version,
                        "preparing",
                        dependent.created_at_ms,
                        now,
                    )
                )
            return updated

        updated = self._store.segments_transaction(job)
        self._on_change()
        return segment_view(updated)

    def delete(self, principal: Principal, key: str) -> None:
        account = principal.account_id

        def job(records: SegmentRecords) -> None:
            current = records.segment_for_update(account, key)
            if current is None:
                raise _unknown(key)
            users = sorted(r.key for r in _dependents(key, records.definitions([account])))
            if users:
                raise Conflict(
                    f"segment {key!r} is named by {', '.join(map(repr, users))}; change or "
                    "delete those first"
                )
            records.delete_segment(current.id)

        self._store.segments_transaction(job)

    def list_all(self, principal: Principal) -> SegmentList:
        return SegmentList(
            [segment_view(r, count) for r, count in self._store.list_segments(principal.account_id)]
        )

    def get(self, principal: Principal, key: str) -> SegmentView:
        record, count = self._find(principal, key)
        return segment_view(record, count)

    def members(
        self, principal: Principal, key: str, limit: str | None, cursor: str | None
    ) -> MembersPage:
        record, _ = self._find(principal, key)
        size = _parse_limit(limit)
        after = _decode_cursor(cursor, "m")
        found = self._store.segment_members(record.id, after, size + 1)
        page = [
            MemberView(
                public_profile_id(m.profile_id),
                m.state.emails,
                m.state.phone_numbers,
                iso_from_ms(m.since_ms),
            )
            for m in found[:size]
        ]
        more = len(found) > size
        return MembersPage(page, _encode_cursor("m", found[size - 1].profile_id) if more else None)

    def changes(
        self, principal: Principal, key: str, cursor: str | None, limit: str | None
    ) -> ChangesPage:
        record, _ = self._find(principal, key)
        size = _parse_limit(limit)
        after = _decode_cursor(cursor, "c")
        entries = self._store.segment_changes(record.id, after, size)
        last = entries[-1].position if entries else after
        return ChangesPage(
            [
                ChangeView(
                    e.position,
                    public_profile_id(e.profile_id),
                    e.change,
                    iso_from_ms(e.at_ms),
                    e.version,
                )
                for e in entries
            ],
            _encode_cursor("c", last),
        )

    def _find(self, principal: Principal, key: str) -> tuple[SegmentRecord, int]:
        for record, count in self._store.list_segments(principal.account_id):
            if record.key == key:
                return record, count
        raise _unknown(key)


def segment_view(record: SegmentRecord, member_count: int | None = None) -> SegmentView:
    return SegmentView(
        record.key,
        record.name,
        msgspec.Raw(record.definition),
        record.version,
        record.status,
        iso_from_ms(record.created_at_ms),
        iso_from_ms(record.updated_at_ms),
        member_count,
    )


def _unknown(key: str) -> NotFound:
    return NotFound(f"no segment {key[:64]!r} in this account (GET /api/v0/segments lists them)")


def _decode_body(body: bytes) -> SegmentBody:
    if len(body) > MAX_DEFINITION_BYTES + 1024:
        raise InvalidRequest(
            f"match: a definition is at most {MAX_DEFINITION_BYTES // 1024} KiB",
            [FieldError("match", f"at most {MAX_DEFINITION_BYTES} bytes")],
        )
    try:
        wanted = _body_decoder.decode(body)
    except msgspec.ValidationError as error:
        text = str(error)
        path = text.rpartition("at `$.")[2].rstrip("`") if "at `$." in text else ""
        message = text.partition(" - at `")[0]
        raise InvalidRequest(
            f"{path or 'body'}: {message}", [FieldError(path or "body", message)]
        ) from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(
            f"body: not valid JSON ({error})", [FieldError("body", str(error))]
        ) from None
    errors: list[FieldError] = []
    if KEY_PATTERN.match(wanted.key) is None:
        errors.append(FieldError("key", "must be 1-64 characters of a-z, 0-9, _ and -"))
    if not 1 <= len(wanted.name) <= MAX_NAME_LENGTH:
        errors.append(FieldError("name", f"must be 1-{MAX_NAME_LENGTH} characters"))
    if len(wanted.match) > MAX_DEFINITION_BYTES:
        errors.append(FieldError("match", f"at most {MAX_DEFINITION_BYTES // 1024} KiB"))
    if errors:
        raise InvalidRequest(_summary(errors), errors)
    return wanted


def _check_definition(wanted: SegmentBody) -> Condition:
    try:
        return parse_condition(msgspec.json.decode(wanted.match))
    except DefinitionError as error:
        raise InvalidRequest(_summary(error.errors), error.errors) from None


def _check_references(key: str, condition: Condition, existing: list[SegmentRecord]) -> None:
    """Every named segment exists, and none leads back to ``key``."""
    graph: dict[str, set[str]] = {
        r.key: segment_references(parse_condition(msgspec.json.decode(r.definition)))
        for r in existing
        if r.key != key
    }
    graph[key] = segment_references(condition)
    errors = [
        FieldError("match", f"names segment {name!r}, which does not exist in this account")
        for name in sorted(graph[key] - graph.keys())
    ]
    if errors:
        raise InvalidRequest(_summary(errors), errors)
    path = _cycle_from(key, graph)
    if path:
        error = FieldError("match", f"segments name each other in a circle: {' -> '.join(path)}")
        raise InvalidRequest(_summary([error]), [error])


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str]:
    def walk(node: str, trail: list[str]) -> list[str]:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*trail, nxt]
            if nxt not in trail:
                found = walk(nxt, [*trail, nxt])
                if found:
                    return found
        return []

    return walk(start, [start])


def _dependents(key: str, existing: list[SegmentRecord]) -> list[SegmentRecord]:
    """The segments that name ``key``, directly or through others."""
    refs = {
        r.key: segment_references(parse_condition(msgspec.json.decode(r.definition)))
        for r in existing
    }
    found: set[str] = set()
    frontier = {key}
    while frontier:
        frontier = {name for name, named in refs.items() if named & frontier} - found - {key}
        found |= frontier
    return [r for r in existing if r.key in found]


def _summary(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.path}: {e.message}" for e in errors)


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"limit: must be a whole number from 1 to {MAX_PAGE_SIZE}",
            [FieldError("limit", f"a whole number from 1 to {MAX_PAGE_SIZE}")],
        )
    return int(raw)


def _encode_cursor(kind: str, number: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}1:{number}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, kind: str) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == f"{kind}1" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidRequest(
        "cursor: not a cursor this listing gave out; pass nextCursor as it came",
        [FieldError("cursor", "pass nextCursor as it came")],
    )
