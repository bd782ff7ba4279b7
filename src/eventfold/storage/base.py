"""The storage contract every backend implements, and the records it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldSource, FoldUpsert
from eventfold.domain.profile import ProfileState
from eventfold.domain.profile_book import IdentityKey, ProfileBook
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.storage.segment_contract import SegmentRecords, SegmentStore
from eventfold.storage.webhook_records import WebhookStore


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a secret key speaks for."""

    key_id: str
    account_id: int
    account_name: str
    rate_limit: float | None = None  # events per second; None means unlimited


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as listed to operators; never holds the secret."""

    id: str
    account_name: str
    created_at_ms: int
    last_used_at_ms: int | None
    revoked_at_ms: int | None
    rate_limit: float | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A batch's idempotency key: a repeat within the window is stored only once."""

    key: str
    body_hash: bytes
    not_before_ms: int  # rows older than this are expired


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    received_at_ms: int
    document: bytes
    profile_id: int | None


class ProfileRow(NamedTuple):
    id: int
    state: ProfileState
    segments: list[str]


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of one account's events, newest first (``before_seq`` continues a listing),
    or oldest first (``ascending``; ``after_seq`` continues it)."""

    account_id: int
    limit: int
    before_seq: int | None = None
    after_seq: int | None = None
    actions: tuple[str, ...] = ()
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive
    person: tuple[str, str] | None = None  # (kind, normalised value)
    ascending: bool = False  # oldest first


@dataclass(frozen=True, slots=True)
class FoldLag:
    events: int
    seconds: float
    quarantined: int = 0  # events set aside because they failed to fold
    # Events folded so far by every fold loop on the database, ever (None: not known).
    folded: int | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """An event the fold set aside, and why."""

    seq: int
    account_id: int
    error: str
    quarantined_at_ms: int


# What one request appends to the log: its events, or its profile upserts (never both).
# The log's counts (backlog, backpressure, positions) count an upsert as an event.
LogEntries = Sequence[AcceptedEvent] | Sequence[AcceptedUpsert]


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    """An accepted batch read back from an external log, with its position there."""

    position: int
    account_id: int
    received_at_ms: int
    events: LogEntries  # or profile upserts
    claim: IdempotencyClaim | None = None


class PendingEvent(NamedTuple):
    """An accepted event taken from the log to be folded: its position, its record, and
    what the fold reads of it."""

    seq: int
    account_id: int
    received_at_ms: int
    accepted: AcceptedEvent
    event: FoldSource


class PendingUpsert(NamedTuple):
    """A profile upsert taken from the log to be folded, as ``PendingEvent``."""

    seq: int
    account_id: int
    received_at_ms: int
    accepted: AcceptedUpsert
    upsert: FoldUpsert


PendingItem = PendingEvent | PendingUpsert


class FoldTransaction(Protocol):
    """One fold step's transaction: what the fold service asks storage for. Everything
    it does commits together, or not at all."""

    def claim(self, max_events: int, seqs: Sequence[int] | None = None) -> list[PendingItem]:
        """Takes the oldest batches of the log holding up to ``max_events`` events (at
        least one batch), or the batches at these positions (those still there), off the
        log for this transaction, and returns their events and profile upserts; batches
        another fold holds are skipped."""

    def load_people(
        self, keys: Iterable[IdentityKey]
    ) -> tuple[dict[IdentityKey, int], dict[int, tuple[int, ProfileState]]]:
        """The profile id of each known identifier, and those profiles' (account, state),
        locked against other folds until the transaction ends."""

    def allocate_profile_id(self) -> int:
        """A new profile id, never given out before."""

    def save(self, book: ProfileBook, folded: Sequence[tuple[PendingItem, int]]) -> None:
        """Stores the book's merges, identifiers and touched profiles, and each folded
        event's row with its final profile id (upserts have no row; they are counted as
        folded)."""

    def segment_records(self) -> SegmentRecords:
        """The segments' records in this transaction (``services/segments_fold.py``)."""

    def queue_webhooks(self, book: ProfileBook, folded: Sequence[tuple[PendingEvent, int]]) -> None:
        """Writes the messages of the webhooks the folded events (with the profile each
        joined) match into the outbox
        (``storage/sql_webhooks.py``), in this transaction."""


FoldStep = Callable[[FoldTransaction], int]
# Folds the given events and upserts in the transaction (batches that did not come from
# the log table: ``apply_logged``).
FoldEvents = Callable[[FoldTransaction, Sequence[PendingItem]], int]


class KeyStore(Protocol):
    def create_key(
        self, account_name: str, now_ms: int, rate_limit: float | None = None
    ) -> tuple[KeyRecord, str]:
        """Creates the account if new and a key for it; returns the record and the secret."""

    def set_rate_limit(self, key_id: str, rate_limit: float | None) -> bool:
        """Changes a key's events-per-second limit (None: unlimited); False if no such key."""

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        """Revokes a key; False when no such key exists."""

    def find_key(self, secret_hash: bytes) -> Principal | None:
        """The active key with this hash, or None (unknown or revoked)."""

    def touch_key(self, key_id: str, now_ms: int) -> None:
        """Records that the key was used; may be deferred and never fails the caller."""

    def has_keys(self) -> bool:
        """Whether any key was ever created."""


class EventLog(Protocol):
    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: LogEntries,
        claim: IdempotencyClaim | None = None,
        fold_sources: Sequence[FoldSource | None] | None = None,
    ) -> bool:
        """Stores the whole batch (of events, or of profile upserts) durably, or nothing;
        returns once it is on disk.

        With a claim whose key was already used with the same body inside the window,
        stores nothing and returns False; with a different body, raises
        IdempotencyConflict. Otherwise returns True. ``fold_sources`` (the validated
        events, ``ValidatedBatch``) may be handed to a fold in this process.
        """

    def forget_idempotency_keys(self, before_ms: int) -> None:
        """Drops idempotency keys created before ``before_ms``; may be deferred."""

    async def backlog(self, now_ms: int) -> FoldLag:
        """How many accepted events are not yet in profiles, and the oldest one's wait."""

    async def erasure_bound(self) -> int | None:
        """The log position up to which batches count as accepted before an erasure
        starting now (None: the log is the database, erasure reaches it directly)."""

    async def connect(self) -> None:
        """Opens connections that need the running event loop."""

    async def disconnect(self) -> None:
        """Closes what ``connect`` opened."""


class EventRecords(Protocol):
    def count_events(self, account_id: int) -> int:
        """How many events the account has stored, folded or still in the log (profile
        upserts still in the log count too: the log counts entries, not kinds)."""

    def stored_documents(self, account_id: int) -> list[bytes]:
        """The account's stored event documents, folded or still in the log, by position
        (for tests; profile upserts are not events and are left out)."""


class ProfileStore(Protocol):
    def fold(self, step: FoldStep, rows: int = 1) -> int:
        """Runs ``step`` in one fold transaction (alongside other folds where the
        database allows) and commits; returns what the step returns."""

    def pending_batches(self, max_events: int) -> list[int]:
        """The positions of the oldest batches in the log, as many as hold ``max_events``
        events (at least one)."""

    def split_batch(self, seq: int) -> list[int]:
        """Splits the log's batch at ``seq`` into batches of one event at their events'
        positions; returns those positions (``[seq]`` for a batch of one event, ``[]``
        when no batch is there any more)."""

    def quarantine(self, seq: int, error: str) -> None:
        """Sets the batch of one event at ``seq`` aside with its error, off the log."""

    def quarantined(self, limit: int) -> list[QuarantinedEvent]:
        """The events set aside, oldest first."""

    def release_quarantined(self, seqs: Sequence[int] | None = None) -> int:
        """Puts quarantined events (all, or these) back into the log."""

    def database_answers(self) -> bool:
        """Whether the database answers a trivial query now (to tell a poison event from
        an outage)."""

    def wait_for_events(self, timeout: float) -> None:
        """Blocks until new events may have been stored, or ``timeout`` seconds pass."""

    def wake_waiters(self) -> None:
        """Ends the waits of ``wait_for_events`` now (new events, or shutting down)."""

    def find_profile(
        self, account_id: int, kind: str, value: str
    ) -> tuple[int, ProfileState] | None:
        """The profile holding this identifier, with its id."""

    def profile_by_id(self, account_id: int, profile_id: int) -> ProfileState | int | None:
        """The account's profile with this eventfold id; or, for a profile merged into
        another, the id of the one it lives on in; or None."""

    def profiles_after(self, account_id: int, after_id: int, limit: int) -> list[ProfileRow]:
        """Up to ``limit`` of the account's profiles with ids above ``after_id``, by id,
        each with the keys of the segments it is in (one read; the export's page)."""

    async def erase_person(
        self,
        account_id: int,
        kind: str,
        value: str,
        fold_everything: FoldStep,
        log_position: int | None = None,
    ) -> None:
        """Erases the profile with this identifier, its identifiers and all its events,
        folded or not yet folded (``fold_everything`` folds what is pending first, with
        no other fold running); with ``log_position``, also the person's batches up to
        that position of an external log that are not applied yet (``apply_logged``)."""

    def apply_logged(
        self,
        batches: Sequence[LoggedBatch],
        forget_below: int,
        fold: FoldEvents | None = None,
    ) -> int:
        """Folds batches read from an external log (with ``fold``, as they were
        decoded), in one transaction that also records their positions, so a batch
        delivered again is skipped; positions below ``forget_below`` can no longer come
        back and are forgotten. Returns how many events it folded. Without ``fold``, the
        batches join the database's log table and wait for its fold."""

    def idempotency_hash(self, account_id: int, key: str) -> bytes | None:
        """The body hash stored under an idempotency key, if the key is known."""

    def list_events(self, query: EventQuery) -> list[StoredEvent]:
        """Up to ``query.limit`` events matching the query, newest first."""

    def fold_lag(self, now_ms: int) -> FoldLag:
        """How far the fold is behind the log."""

    def event_profiles(self, account_id: int, seqs: Sequence[int]) -> dict[int, int | None]:
        """The profile each of the account's events was folded into (None: not yet)."""


class Storage(KeyStore, EventLog, EventRecords, ProfileStore, SegmentStore, WebhookStore, Protocol):
    def close(self) -> None:
        """Finishes queued writes and releases the database."""
