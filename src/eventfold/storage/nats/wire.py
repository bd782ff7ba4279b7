"""How a batch travels through the stream: a MessagePack record and two headers.

A batch of profile upserts has its upserts in the record's last field and no events.
Records are arrays whose later fields have defaults, so a record published before
upserts existed still decodes (as a batch of events). A worker older than upserts would
read a batch of upserts as an empty batch: upgrade workers before API nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.storage.base import IdempotencyClaim, LogEntries, LoggedBatch
from eventfold.storage.batch_records import are_upserts

BODY_HASH = "Eventfold-Body-Hash"
EVENTS = "Eventfold-Events"  # how many events (or upserts) the batch holds
# What JetStream's file store counts for a message besides its subject, headers and
# payload (its record's length fields and hash; checked against stream_info on 2.15).
_STORED_OVERHEAD_BYTES = 34


class _WireBatch(msgspec.Struct, array_like=True):
    """A batch as it travels through the stream (MessagePack)."""

    account_id: int
    received_at_ms: int
    events: list[AcceptedEvent]
    idempotency_key: str | None = None
    body_hash: bytes | None = None
    claim_not_before_ms: int = 0
    upserts: list[AcceptedUpsert] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_WireBatch)


def encode_batch(
    account_id: int,
    received_at_ms: int,
    events: LogEntries,
    claim: IdempotencyClaim | None,
) -> bytes:
    wire = _WireBatch(account_id, received_at_ms, [])
    if are_upserts(events):
        wire.upserts = list(events)
    else:
        wire.events = list(cast(Sequence[AcceptedEvent], events))
    if claim is not None:
        wire.idempotency_key = claim.key
        wire.body_hash = claim.body_hash
        wire.claim_not_before_ms = claim.not_before_ms
    return _encoder.encode(wire)


def decode_batch(position: int, payload: bytes) -> LoggedBatch:
    """Raises ``msgspec.DecodeError`` for a message that is not an eventfold batch."""
    wire = _decoder.decode(payload)
    claim = None
    if wire.idempotency_key is not None and wire.body_hash is not None:
        claim = IdempotencyClaim(wire.idempotency_key, wire.body_hash, wire.claim_not_before_ms)
    entries: LogEntries = wire.upserts or wire.events
    return LoggedBatch(position, wire.account_id, wire.received_at_ms, entries, claim)


def stored_size(subject: str, headers: Mapping[str, str], payload_bytes: int) -> int:
    """The bytes JetStream's file store counts for a message (NATS/1.0 header block)."""
    header_bytes = 12 + sum(len(key) + len(value) + 4 for key, value in headers.items())
    return _STORED_OVERHEAD_BYTES + len(subject) + header_bytes + payload_bytes


def event_count(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers[EVENTS])
    except (KeyError, ValueError):
        return None  # published before the header existed
