"""How an accepted batch is kept in the log table ``batches`` until the fold takes it:
its validated events in one MessagePack record, decoded once, by the fold.

Event positions come from the batch's: the events of the batch at position ``p`` are
``p``, ``p + 1``, ... (``SEQ_STRIDE`` apart, so a batch never runs into the next). A
batch that cannot be folded whole is split into batches of one event at those same
positions, so every event keeps its position (and its place in listings) whatever
happens to its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.limits import EVENTS_PER_BATCH_CEILING

# Positions a batch takes: as many as a batch may hold events.
SEQ_STRIDE = EVENTS_PER_BATCH_CEILING

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[AcceptedEvent])


def encode_events(events: Sequence[AcceptedEvent]) -> bytes:
    return _encoder.encode(events)


def decode_events(body: bytes) -> list[AcceptedEvent]:
    return _decoder.decode(body)
