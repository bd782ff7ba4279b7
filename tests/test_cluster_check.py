"""The judgement bench.cluster makes after every scenario, on fabricated read-backs: it
must be able to fail, so an event answered 202 and not read back, read back twice, or
left out of (or counted twice in) its profile fails the run; and an API node that
answered 202, or nothing, while cut off from NATS fails it too."""

from __future__ import annotations

from typing import Any

from bench.cluster.check import Verdict, judge
from bench.cluster.ledger import Attempt, Ledger, Probe
from bench.cluster.report import Outcome, judge_cut_off_node, probe_freshness, table


def acknowledged_ledger(*batches: tuple[str, int]) -> Ledger:
    """A ledger in which each (batch, events) was answered 202."""
    ledger = Ledger("s1", "efsk_test")
    for batch, size in batches:
        ledger.add_batch(batch, size)
        assert ledger.begin()
        ledger.end(Attempt(batch, 0, 1, 1.0, 1.1, 202))
    return ledger


def read_back(*ids: str, profile: int | None = 7) -> list[dict[str, Any]]:
    """Events as GET /api/v0/events lists them: one person, folded into ``profile``."""
    return [{"n": n, "email": "p1@s1.cluster.test", "foldedIntoProfile": profile} for n in ids]


def outcome(verdict: Verdict) -> Outcome:
    return Outcome("nats-kill", "a fault", 10.0, verdict, None, 0, 0)


def test_everything_read_back_once_and_counted_once_passes() -> None:
    ledger = acknowledged_ledger(("b1", 2), ("b2", 1))
    verdict = judge(ledger, read_back("b1.0", "b1.1", "b2.0"), {"p1@s1.cluster.test": 3})
    assert (verdict.acknowledged, verdict.lost, verdict.duplicated) == (3, 0, 0)
    assert not outcome(verdict).failed


def test_an_acknowledged_event_not_read_back_is_lost_and_fails_the_run() -> None:
    ledger = acknowledged_ledger(("b1", 2), ("b2", 1))
    verdict = judge(ledger, read_back("b1.0", "b2.0"), {"p1@s1.cluster.test": 2})
    assert (verdict.lost, verdict.missing, verdict.duplicated) == (1, 1, 0)
    assert verdict.half_stored_batches == 1
    assert outcome(verdict).failed
    assert "| nats-kill | 3 | 1 | 0 |" in table([outcome(verdict)])


def test_an_event_read_back_twice_is_duplicated_and_fails_the_run() -> None:
    ledger = acknowledged_ledger(("b1", 2))
    verdict = judge(ledger, read_back("b1.0", "b1.1", "b1.1"), {"p1@s1.cluster.test": 3})
    assert (verdict.lost, verdict.duplicated) == (0, 1)
    assert outcome(verdict).failed


def test_a_stored_event_its_profile_does_not_count_is_lost() -> None:
    ledger = acknowledged_ledger(("b1", 2))
    verdict = judge(ledger, read_back("b1.0", "b1.1"), {"p1@s1.cluster.test": 1})
    assert (verdict.lost, verdict.profile_shortfall, verdict.missing) == (1, 1, 0)
    assert outcome(verdict).failed


def test_a_profile_that_counts_an_event_twice_is_a_duplicate() -> None:
    ledger = acknowledged_ledger(("b1", 2))
    verdict = judge(ledger, read_back("b1.0", "b1.1"), {"p1@s1.cluster.test": 3})
    assert (verdict.lost, verdict.duplicated) == (0, 1)
    assert outcome(verdict).failed


def test_a_batch_stored_without_a_202_is_allowed() -> None:
    ledger = acknowledged_ledger(("b1", 1))
    ledger.add_batch("b2", 1)  # answered 503 "may or may not have been stored"
    verdict = judge(ledger, read_back("b1.0", "b2.0"), {"p1@s1.cluster.test": 2})
    assert (verdict.lost, verdict.duplicated, verdict.stored_unacknowledged) == (0, 0, 1)
    assert not outcome(verdict).failed


def test_an_unfolded_event_is_reported() -> None:
    ledger = acknowledged_ledger(("b1", 1))
    verdict = judge(ledger, read_back("b1.0", profile=None), {"p1@s1.cluster.test": 0})
    assert verdict.unfolded == 1
    assert verdict.lost == 1  # its profile does not count it
    assert outcome(verdict).failed


def cut_off_ledger(*answers: tuple[float, float, int]) -> Ledger:
    """Requests to api-1 (node 0): (sent, answered, status); cut off from 10 to 25."""
    ledger = Ledger("s3", "efsk_test")
    for number, (sent, done, status) in enumerate(answers):
        ledger.add_batch(f"b{number}", 100)
        assert ledger.begin()
        ledger.end(Attempt(f"b{number}", 0, 1, sent, done, status))
    return ledger


def test_a_cut_off_node_that_answers_503_and_recovers_passes() -> None:
    ledger = cut_off_ledger((11, 21, 503), (20, 30, 202), (26, 26.1, 202))
    problems, notes = judge_cut_off_node(ledger, 0, "api-1", 10, 25)
    assert problems == []
    assert "api-1 answered {503: 1} while cut off" in notes


def test_a_cut_off_node_that_answers_202_fails() -> None:
    ledger = cut_off_ledger((11, 21, 503), (12, 13, 202), (26, 26.1, 202))
    problems, _ = judge_cut_off_node(ledger, 0, "api-1", 10, 25)
    assert any("answered 202 to 1 requests" in problem for problem in problems)


def test_a_cut_off_node_that_answers_nothing_or_never_recovers_fails() -> None:
    ledger = cut_off_ledger((11, 40, 0), (30, 70, 503))
    problems, _ = judge_cut_off_node(ledger, 0, "api-1", 10, 25)
    assert any("no request with 503" in problem for problem in problems)
    assert any("did not answer 202" in problem for problem in problems)


def test_the_probe_freshness_counts_probes_never_seen() -> None:
    ledger = Ledger("s1", "efsk_test")
    ledger.probes += [Probe("a", 10.0, 10.5), Probe("b", 11.0, 13.0), Probe("c", 12.0)]
    said = probe_freshness(ledger)
    assert "p50 2.00 s" in said
    assert "max 2.00 s" in said
    assert "(2 probes, 1 not seen)" in said
