"""Batches as they were validated, handed from the request path to a fold in the same
process, so that the fold neither reads their records back nor decodes them again
(issue #14, item 5).

Only an accelerator: a batch missing here is read from its record, as a fold in another
process reads every batch. An entry is put once its batch's append has committed (a
position is then never given again) and taken at most once. The fold takes the oldest
batches first, so when the hand-off is full a new batch is not put (rather than the
oldest pushed out); entries older than ``max_age_seconds``, which another process folded
or which are folded from their records by now, are dropped. A batch that was split for
the quarantine holds fewer events at the same position than its entry: an entry is used
only while the event counts agree.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldSource
from eventfold.domain.upserts import AcceptedUpsert

# A batch's events (or profile upserts, read from their record), and what the fold
# reads of each (None: decode its document).
Decoded = tuple[Sequence[AcceptedEvent] | Sequence[AcceptedUpsert], Sequence[FoldSource | None]]

# A validated realistic event (bench/batches.py) with its stored form keeps about 3.7 KB
# of Python objects: 10,000 events, five fold steps, are at most about 37 MB.
DEFAULT_MAX_EVENTS = 10_000
# The freshness bound's default: a batch not folded by then is read from its record.
DEFAULT_MAX_AGE_SECONDS = 10.0


class DecodedBatches:
    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        self._max_events = max_events
        self._max_age_seconds = max_age_seconds
        self._held: OrderedDict[int, tuple[float, Decoded]] = OrderedDict()
        self._events = 0
        self._lock = threading.Lock()

    def put(self, seq: int, decoded: Decoded) -> None:
        now = time.monotonic()
        with self._lock:
            while self._held:
                oldest = next(iter(self._held.values()))
                if now - oldest[0] <= self._max_age_seconds:
                    break
                self._drop_oldest()
            if self._events + len(decoded[0]) <= self._max_events:
                self._held[seq] = (now, decoded)
                self._events += len(decoded[0])

    def take(self, seq: int, event_count: int) -> Decoded | None:
        """The batch at this position, if held here with this many events; forgets it."""
        with self._lock:
            held = self._held.pop(seq, None)
            if held is None:
                return None
            decoded = held[1]
            self._events -= len(decoded[0])
        return decoded if len(decoded[0]) == event_count else None

    def _drop_oldest(self) -> None:
        _, (_, (events, _)) = self._held.popitem(last=False)
        self._events -= len(events)

    def __len__(self) -> int:
        return self._events
