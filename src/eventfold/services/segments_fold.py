"""The fold's hook: segments are judged in the fold step's transaction, for the people
the step touched, so a membership change commits with the profile change that caused
it (never before it, never lost)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eventfold.domain.profile import FoldSource
from eventfold.domain.profile_book import ProfileBook
from eventfold.services.segment_evaluation import Evaluation, compile_accounts
from eventfold.storage.base import PendingEvent
from eventfold.storage.segment_contract import SegmentRecords


class SegmentTransaction(Protocol):
    """The part of a fold step's transaction (``FoldTransaction``) this hook uses."""

    def segment_records(self) -> SegmentRecords:
        """The segments' records in the transaction."""


def fold_segments(
    tx: SegmentTransaction, book: ProfileBook, folded: Sequence[tuple[int, PendingEvent]]
) -> None:
    """Judges the step's people (``book`` settled and saved; ``folded``: each event with
    the profile it ended in) and the people merged away in it."""
    accounts = {book.accounts[pid] for pid in book.touched}
    if not accounts:
        return
    records = tx.segment_records()
    compiled = compile_accounts(records.definitions(accounts))
    if not compiled:
        return  # no segments in these accounts: one small query a step
    step_events: dict[int, list[tuple[FoldSource, int]]] = {}
    for profile_id, pending in folded:
        step_events.setdefault(profile_id, []).append(
            (pending.event, pending.accepted.occurred_at_ms)
        )
    people = {pid: (book.accounts[pid], book.states[pid]) for pid in book.touched}
    # A profile holding only this step's events was made by it: its leaf states start
    # empty, with nothing to read back.
    brand_new = {
        pid
        for pid, (_, state) in people.items()
        if state.event_count == len(step_events.get(pid, ()))
    }
    merged = {dead: book.final_id(dead) for dead in book.merged_into}
    Evaluation(records, compiled, step_events, brand_new, merged).run(people)
