"""Batches as they were validated, handed from the request path to a fold in the same
process, so that the fold neither reads their records back nor decodes them again
(issue #14, item 5).

Only an accelerator: a batch missing here is read from its record, as a fold in another
process reads every batch. An entry is put once its batch's append has committed (a
position is then never given again) and taken at most once; one whose batch another
process folded is pushed out by newer ones (the hand-off holds at most ``max_events``
events). A batch that was split for the quarantine holds fewer events at the same
position than its entry: an entry is used only while the event counts agree.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.profile import FoldSource

# A batch's events, and what the fold reads of each (None: decode its document).
Decoded = tuple[Sequence[AcceptedEvent], Sequence[FoldSource | None]]

# Enough for the fold's backlog at the freshness bound on this kind of machine (about
# 3 s of 15,000 events/s): a validated event keeps about 2 KB of Python objects.
DEFAULT_MAX_EVENTS = 50_000


class DecodedBatches:
    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self._max_events = max_events
        self._held: OrderedDict[int, Decoded] = OrderedDict()
        self._events = 0
        self._lock = threading.Lock()

    def put(self, seq: int, decoded: Decoded) -> None:
        with self._lock:
            self._held[seq] = decoded
            self._events += len(decoded[0])
            while self._events > self._max_events:
                _, (dropped, _) = self._held.popitem(last=False)
                self._events -= len(dropped)

    def take(self, seq: int, event_count: int) -> Decoded | None:
        """The batch at this position, if held here with this many events; forgets it."""
        with self._lock:
            decoded = self._held.pop(seq, None)
            if decoded is None:
                return None
            self._events -= len(decoded[0])
        return decoded if len(decoded[0]) == event_count else None

    def __len__(self) -> int:
        return self._events
