"""The pure rules of webhooks: signatures (checked against the standardwebhooks
package), message ids, the retry schedule, what an answer means, addresses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from eventfold.domain.webhook_retries import (
    DEFAULT_SCHEDULE_SECONDS,
    Outcome,
    RetrySchedule,
    outcome_of,
    parse_retry_after,
    parse_schedule,
)
from eventfold.domain.webhook_signing import generate_secret, message_id, signature
from eventfold.domain.webhooks import is_public_address


def test_signature_is_the_one_standardwebhooks_makes() -> None:
    secret = generate_secret()
    at = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    body = '{"type":"event.matched","data":{"é":1}}'
    expected = Webhook(secret).sign("msg_abc", at, body)
    assert signature(secret, "msg_abc", int(at.timestamp()), body.encode()) == expected


def test_message_ids_are_stable_and_apart_per_endpoint() -> None:
    assert message_id("wh_1", "event", 42) == message_id("wh_1", "event", 42)
    assert message_id("wh_1", "event", 42) != message_id("wh_2", "event", 42)
    assert message_id("wh_1", "event", 42) != message_id("wh_1", "event", 43)
    assert message_id("wh_1", "event", 42).startswith("msg_")


def test_the_default_schedule_is_the_specifications() -> None:
    assert [int(d) for d in DEFAULT_SCHEDULE_SECONDS] == [
        0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    ]  # fmt: skip


def test_delays_get_up_to_ten_percent_of_jitter_and_run_out() -> None:
    schedule = RetrySchedule()
    assert schedule.next_delay(1, draw=lambda: 0.0) == 5
    assert schedule.next_delay(1, draw=lambda: 1.0) == pytest.approx(5.5)
    assert schedule.next_delay(9, draw=lambda: 0.5) == pytest.approx(86400 * 1.05)
    assert schedule.next_delay(10) is None


def test_retry_after_is_a_floor_capped_at_a_day() -> None:
    schedule = RetrySchedule((0, 1, 1))
    assert schedule.next_delay(1, retry_after=30, draw=lambda: 0.0) == 30
    assert schedule.next_delay(1, retry_after=0.5, draw=lambda: 0.0) == 1
    assert schedule.next_delay(1, retry_after=10**9, draw=lambda: 0.0) == 86400


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Sun, 29 Nov 2026 10:01:00 GMT", now) == 60
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (None, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (302, Outcome.RETRY),
        (400, Outcome.REFUSED),
        (404, Outcome.REFUSED),
        (410, Outcome.GONE),
    ],
)
def test_what_an_answer_means(status: int | None, outcome: Outcome) -> None:
    assert outcome_of(status) is outcome


def test_schedules_from_settings() -> None:
    assert parse_schedule("0,1,2").delays == (0, 1, 2)
    assert parse_schedule("").delays == DEFAULT_SCHEDULE_SECONDS
    with pytest.raises(ValueError, match="seconds"):
        parse_schedule("0,soon")
    with pytest.raises(ValueError, match="negative"):
        parse_schedule("0,-1")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),  # noqa: S104 (an address checked, not bound)
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public
