"""What storage keeps for segments, and the records the segment services ask it for.

The use cases (evaluation in the fold, backfill, the timer, the API) are in
``services/segments*.py``; storage only loads, locks and saves, in the transaction the
caller runs (``SegmentRecords``), or reads on its own (``SegmentStore``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from eventfold.domain.fold_input import FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.program import PersonLeaves

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    id: int
    account_id: int
    key: str
    name: str
    definition: bytes  # the "match" JSON as the client sent it
    version: int
    status: str  # "preparing" or "ready"
    created_at_ms: int
    updated_at_ms: int
    backfill_after: int = 0  # profiles up to this id are evaluated (while preparing)


class MembershipChange(NamedTuple):
    """An entry or exit; a tuple in the order of the feed's columns (a fold step with 50
    segments makes about 6 for each event)."""

    account_id: int
    segment_id: int
    profile_id: int
    change: str  # "entered" or "exited"
    at_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class FeedEntry:
    position: int
    profile_id: int
    change: str
    at_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class Member:
    profile_id: int
    since_ms: int
    state: ProfileState


@dataclass(frozen=True, slots=True)
class PersonVerdict:
    """What one evaluation of a person leaves behind."""

    profile_id: int
    account_id: int
    leaves: PersonLeaves
    next_change_ms: int | None


class SegmentRecords(Protocol):
    """Segment records inside one transaction (a fold step's, or one of their own)."""

    now_ms: int

    def definitions(self, account_ids: Iterable[int]) -> list[SegmentRecord]:
        """Every segment of these accounts."""

    def segment_for_update(self, account_id: int, key: str) -> SegmentRecord | None:
        """The account's segment with this key, locked until the transaction ends."""

    def insert_segment(self, record: SegmentRecord) -> int:
        """Stores a new segment (its ``id`` is ignored); returns its id."""

    def update_segment(self, record: SegmentRecord) -> None:
        """Replaces the segment with ``record.id``'s name, definition, version, status."""

    def delete_segment(self, segment_id: int) -> None:
        """Deletes the segment, its members and its change feed."""

    def preparing_segment(self) -> SegmentRecord | None:
        """A segment whose backfill is not finished (locked; others' skipped), or None."""

    def profiles_after(self, account_id: int, after: int, limit: int) -> dict[int, ProfileState]:
        """The account's next profiles by id after ``after``, locked against folds."""

    def profile_ids_after(self, account_id: int, after: int, limit: int) -> list[int]:
        """The ids ``profiles_after`` would give, reading no profile's state."""

    def lock_profiles(self, profile_ids: Sequence[int]) -> dict[int, tuple[int, ProfileState]]:
        """These profiles' (account, state), locked against folds (erased ones absent)."""

    def events_of(
        self, profile_ids: Sequence[int]
    ) -> Mapping[int, Sequence[tuple[FoldSource, int]]]:
        """Each profile's folded events as (event, timestamp)."""

    def segment_people(
        self, profile_ids: Sequence[int]
    ) -> dict[int, tuple[PersonLeaves, int | None]]:
        """Each profile's event-leaf states and next change moment (absent: none stored)."""

    def memberships(self, profile_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        """Each profile's segments (segment id -> since)."""

    def due_people(self, now_ms: int, limit: int) -> list[int]:
        """Profiles whose next change moment has come, earliest first."""

    def postpone(self, profile_id: int, until_ms: int) -> None:
        """Moves the profile's next change moment to ``until_ms`` if it has come by
        ``now_ms`` (a fold that judged the person meanwhile set a later one: it stays),
        reading nothing of the person."""

    def save(
        self,
        verdicts: Sequence[PersonVerdict],
        forget: Sequence[int],
        changes: Sequence[MembershipChange],
    ) -> None:
        """Stores the verdicts' leaves and next change moments, drops the segment state of
        ``forget`` (merged away or erased), and applies and records the changes."""


class SegmentStore(Protocol):
    def segments_transaction(
        self, job: Callable[[SegmentRecords], T], now_ms: int | None = None
    ) -> T:
        """Runs ``job`` in a transaction of its own (alongside folds) and commits; its
        records' ``now_ms`` is ``now_ms`` or the wall clock."""

    def list_segments(self, account_id: int) -> list[tuple[SegmentRecord, int]]:
        """The account's segments with their member counts, by key."""

    def segment_members(self, segment_id: int, after: int, limit: int) -> list[Member]:
        """Members by profile id after ``after``."""

    def segment_changes(self, segment_id: int, after: int, limit: int) -> list[FeedEntry]:
        """The segment's changes after feed position ``after``, oldest first (changes
        committed since the last call are given positions first, in commit order)."""

    def account_changes(
        self, account_id: int, after: int, limit: int
    ) -> list[tuple[int, str, int, str, int]]:
        """The account's changes with a feed position after ``after``, oldest first, as
        (position, segment key, profile id, change, at) (for the debugger)."""

    def last_segment_change(self) -> int:
        """The last feed position given out."""

    def profile_segments(self, profile_id: int) -> list[str]:
        """The keys of the segments a profile is in."""

    def segment_timer_lag(self, now_ms: int) -> float:
        """Seconds since the earliest due re-evaluation that has not run yet (0: none)."""

    def sequence_segment_changes(self, forget_before_ms: int) -> None:
        """Gives new changes their feed positions and forgets those older than the bound."""
