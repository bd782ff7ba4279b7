"""SQL for batches that come from an external log (JetStream): which positions were
applied already, and which people were erased while their batches were still in the log.

Both run in the applying worker's transaction, under the fold's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.storage.base import LoggedBatch
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_profiles import load_by_identifier, select_in

Identifier = tuple[str, str]
LogEntry = AcceptedEvent | AcceptedUpsert


class Erasures:
    """The erasure marks that touch some batches: (account, kind, value) → the last log
    position accepted before the erasure."""

    def __init__(self, marks: dict[tuple[int, str, str], int]) -> None:
        self._marks = marks
        self.learnt: dict[tuple[int, str, str], int] = {}  # marks to save

    def covers(self, account_id: int, event: LogEntry, position: int) -> bool:
        """Whether the event (or upsert) names a person erased after its batch was
        logged. Its other identifiers were that person's too, so they become erased up
        to the same bound (a later batch naming only the phone number of an erased
        email is dropped)."""
        named = [(account_id, kind, value) for kind, value in identifiers_of_accepted(event)]
        bound = max((self._marks.get(key, -1) for key in named), default=-1)
        if bound < position:
            return False
        for key in named:
            if self._marks.get(key, -1) < bound:
                self._marks[key] = self.learnt[key] = bound
        return True


def identifiers_of_accepted(event: LogEntry) -> list[Identifier]:
    """The identifiers a stored event or upsert names, as the identities table spells
    their kinds."""
    named = (("email", event.email), ("phoneNumber", event.phone), ("profileId", event.profile_ref))
    return [(kind, value) for kind, value in named if value is not None]


def unapplied(connection: SqlConnection, batches: Sequence[LoggedBatch]) -> list[LoggedBatch]:
    """The batches whose positions were not applied before (a redelivery is skipped)."""
    rows = select_in(
        connection,
        "SELECT position FROM applied_log_positions WHERE position IN ({})",
        (),
        sorted({batch.position for batch in batches}),
    )
    done = {row[0] for row in rows}
    fresh: dict[int, LoggedBatch] = {}
    for batch in batches:
        if batch.position not in done:
            fresh.setdefault(batch.position, batch)
    return list(fresh.values())


def record_applied(
    connection: SqlConnection, batches: Iterable[LoggedBatch], forget_below: int
) -> None:
    """Records the positions as applied; forgets those no delivery can bring back."""
    connection.executemany(
        "INSERT INTO applied_log_positions (position) VALUES (?) ON CONFLICT DO NOTHING",
        [(position,) for position in sorted({batch.position for batch in batches})],
    )
    connection.execute("DELETE FROM applied_log_positions WHERE position < ?", (forget_below,))
    connection.execute("DELETE FROM erasures WHERE up_to_position < ?", (forget_below,))


def erasures_for(connection: SqlConnection, batches: Sequence[LoggedBatch]) -> Erasures:
    """The erasure marks of every identifier the batches name."""
    named = {
        (batch.account_id, kind, value)
        for batch in batches
        for event in batch.events
        for kind, value in identifiers_of_accepted(event)
    }
    return Erasures(load_by_identifier(connection, "up_to_position", "erasures", named))


def mark_erased(
    connection: SqlConnection, account_id: int, identifiers: Iterable[Identifier], position: int
) -> None:
    """Remembers that batches up to ``position`` naming these identifiers are erased."""
    save_marks(connection, {(account_id, kind, value): position for kind, value in identifiers})


def save_marks(connection: SqlConnection, marks: dict[tuple[int, str, str], int]) -> None:
    """Stores erasure marks, keeping the higher bound where one exists."""
    connection.executemany(
        "INSERT INTO erasures (account_id, kind, value, up_to_position) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account_id, kind, value) DO UPDATE SET up_to_position ="
        " CASE WHEN excluded.up_to_position > erasures.up_to_position"
        " THEN excluded.up_to_position ELSE erasures.up_to_position END",
        [
            (account, kind, indexed_value(value), position)
            for (account, kind, value), position in marks.items()
        ],
    )
