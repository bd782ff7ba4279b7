"""A log record says whether it holds events or profile upserts, and records written
before upserts existed still decode: in the database's log table and in the stream."""

from __future__ import annotations

import sqlite3

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.limits import Limits
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.domain.validation import BatchValidator
from eventfold.storage.base import IdempotencyClaim
from eventfold.storage.batch_records import decode_entries, encode_entries
from eventfold.storage.migrations import migrate_sqlite
from eventfold.storage.nats.wire import decode_batch, encode_batch
from eventfold.storage.sql_log import split_batch

_events = BatchValidator(Limits())
_upserts = UpsertValidator(Limits(), _events.types)
EVENT = _events.validate(b'{"events": [{"action": "view", "email": "a@b.co"}]}', 1_000)[0]
UPSERT = _upserts.validate(b'{"profiles": [{"email": "a@b.co", "addTags": ["vip"]}]}', 1_000)[0]


def test_a_record_of_events_is_written_as_before_upserts_existed() -> None:
    before = msgspec.msgpack.encode([EVENT, EVENT])  # the record's format until now
    assert encode_entries([EVENT, EVENT]) == before
    assert decode_entries(before) == [EVENT, EVENT]


def test_a_record_of_upserts_decodes_as_upserts() -> None:
    decoded = decode_entries(encode_entries([UPSERT, UPSERT]))
    assert decoded == [UPSERT, UPSERT]
    assert all(isinstance(entry, AcceptedUpsert) for entry in decoded)


def test_a_stream_message_published_before_upserts_still_decodes_as_events() -> None:
    # The stream's record then: six fields, without the upserts.
    old = msgspec.msgpack.encode([1, 1_000, [EVENT], "key", b"hash", 5])
    batch = decode_batch(7, old)
    assert (batch.position, batch.account_id, list(batch.events)) == (7, 1, [EVENT])
    assert batch.claim == IdempotencyClaim("key", b"hash", 5)
    upserts = decode_batch(8, encode_batch(1, 1_000, [UPSERT], None))
    assert list(upserts.events) == [UPSERT]
    assert list(decode_batch(9, encode_batch(1, 1_000, [EVENT], None)).events) == [EVENT]


def test_splitting_a_batch_of_upserts_keeps_them_upserts() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    migrate_sqlite(connection)
    connection.execute("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', 0)")
    connection.execute(
        "INSERT INTO batches (seq, account_id, received_at, event_count, body)"
        " VALUES (10, 1, 0, 2, ?)",
        (encode_entries([UPSERT, UPSERT]),),
    )
    assert split_batch(connection, 10, "") == [10, 11]
    rows = connection.execute("SELECT body FROM batches ORDER BY seq").fetchall()
    split = [decode_entries(bytes(body)) for (body,) in rows]
    assert split == [[UPSERT], [UPSERT]]
    assert all(isinstance(entries[0], AcceptedUpsert) for entries in split)


def test_a_record_of_events_decodes_as_events() -> None:
    [event] = decode_entries(encode_entries([EVENT]))
    assert isinstance(event, AcceptedEvent)
