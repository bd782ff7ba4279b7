"""A short crash run (three SIGKILLs) of bench/crash.py; the full run kills twenty times."""

from __future__ import annotations

import pytest
from bench.crash import run


@pytest.mark.slow
def test_no_accepted_event_is_lost_duplicated_or_half_stored_across_kills(
    database_url: str,
) -> None:
    report = run(kills=3, database_url=database_url)
    print(report)
    assert report.kills == 3
    assert report.requests_202 > 0
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.half_stored_batches == 0
    assert report.stored == report.folded == report.profile_event_count
    # Every stored event was either answered 202 or in a whole batch whose 202 a kill lost.
    assert report.stored == report.events_202 + report.unanswered_events_stored
