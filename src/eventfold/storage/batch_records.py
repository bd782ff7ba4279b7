"""How an accepted batch is kept in the log table ``batches`` until the fold takes it:
its validated events in one MessagePack record, decoded once, by the fold.

A batch holds events or profile upserts, never both. Events are a MessagePack array
(of ``AcceptedEvent`` arrays), as every record before upserts existed; upserts are a
map ``{"upserts": [...]}``, which no reader can take for a batch of events: a record
says its kind by its shape, and records written before upserts still decode.

Event positions come from the batch's: the events of the batch at position ``p`` are
``p``, ``p + 1``, ... (``SEQ_STRIDE`` apart, so a batch never runs into the next). A
batch that cannot be folded whole is split into batches of one event at those same
positions, so every event keeps its position (and its place in listings) whatever
happens to its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldUpsert
from eventfold.domain.limits import EVENTS_PER_BATCH_CEILING
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.storage.base import LogEntries, PendingUpsert

# Positions a batch takes: as many as a batch may hold events.
SEQ_STRIDE = EVENTS_PER_BATCH_CEILING


class _UpsertRecord(msgspec.Struct):
    """A batch of profile upserts (a map, where a batch of events is an array)."""

    upserts: list[AcceptedUpsert]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AcceptedEvent] | _UpsertRecord)
_fold_upsert = msgspec.json.Decoder(FoldUpsert)


def are_upserts(entries: LogEntries) -> TypeGuard[Sequence[AcceptedUpsert]]:
    """Whether a batch's entries are profile upserts (a batch holds one kind)."""
    return bool(entries) and isinstance(entries[0], AcceptedUpsert)


def encode_events(events: Sequence[AcceptedEvent]) -> bytes:
    return _encoder.encode(events)


def encode_entries(entries: LogEntries) -> bytes:
    """A batch's record: its events, or its profile upserts."""
    if are_upserts(entries):
        return _encoder.encode(_UpsertRecord(list(entries)))
    return _encoder.encode(entries)


def decode_entries(body: bytes) -> LogEntries:
    """The events, or the profile upserts, of a batch's record."""
    record = _decoder.decode(body)
    return record.upserts if isinstance(record, _UpsertRecord) else record


def pending_upserts(
    seq: int, account_id: int, received_at_ms: int, upserts: Sequence[AcceptedUpsert]
) -> list[PendingUpsert]:
    """The upserts of the batch at position ``seq``, at their positions, as the fold
    takes them."""
    return [
        PendingUpsert(
            seq + index, account_id, received_at_ms, upsert, _fold_upsert.decode(upsert.document)
        )
        for index, upsert in enumerate(upserts)
    ]
