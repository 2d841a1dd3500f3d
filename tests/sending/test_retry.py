"""The send retry policy: jittered exponential backoff, Google's retry time, a hard budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.sending.retry import RetryPolicy

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_backoff_doubles_with_jitter_between_half_and_full() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, budget=1000)
    for attempt, full in ((2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)):
        delays = [
            policy.delay_before(attempt, waited=0, retry_at=None, now=NOW) for _ in range(200)
        ]
        assert all(d is not None and full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered, not fixed


def test_backoff_is_capped_per_wait() -> None:
    policy = RetryPolicy(max_attempts=20, base_delay=1.0, budget=10_000, max_delay=32)
    delay = policy.delay_before(15, waited=0, retry_at=None, now=NOW)
    assert delay is not None and 16 <= delay <= 32


def test_no_retry_past_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, budget=100)
    assert policy.delay_before(3, waited=0, retry_at=None, now=NOW) is not None
    assert policy.delay_before(4, waited=0, retry_at=None, now=NOW) is None


def test_waits_until_the_time_google_names() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, budget=30)
    delay = policy.delay_before(2, waited=0, retry_at=NOW + timedelta(seconds=7), now=NOW)
    assert delay is not None and 7 <= delay <= 7.5


def test_a_retry_time_in_the_past_falls_back_to_backoff() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, budget=30)
    delay = policy.delay_before(2, waited=0, retry_at=NOW - timedelta(seconds=5), now=NOW)
    assert delay is not None and 0.25 <= delay <= 0.5


def test_gives_up_when_the_wait_would_exceed_the_budget() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, budget=20)
    # A daily sending limit: Google names a time hours away.
    assert policy.delay_before(2, waited=0, retry_at=NOW + timedelta(hours=3), now=NOW) is None
    # Already waited most of the budget.
    assert policy.delay_before(3, waited=19.5, retry_at=None, now=NOW) is None
    assert policy.delay_before(3, waited=10, retry_at=None, now=NOW) is not None
