"""How long to wait before trying a send again, and when to stop.

Google asks for truncated exponential backoff with jitter on 429, rate-limit 403s and
5xx, and for waiting until the time it names when it names one (GOOGLE.md §3.2, §3.3).
A send happens inside an HTTP request, so the total wait has a hard budget: when Google
names a time beyond it (a daily sending limit lasts hours), the send fails at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from app.config import Settings

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 1.0
    budget: float = 20.0
    max_delay: float = 32.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.send_max_attempts,
            base_delay=settings.send_retry_base_seconds,
            budget=settings.send_retry_budget_seconds,
        )

    def delay_before(
        self, attempt: int, *, waited: float, retry_at: datetime | None, now: datetime
    ) -> float | None:
        """Seconds to sleep before attempt number `attempt` (2, 3, ...), or None to give up.

        `waited` is what earlier retries of this send already slept.
        """
        if attempt > self.max_attempts:
            return None
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 2))
        # "Equal jitter": never less than half the backoff, so replicas spread out
        # without ever hammering right away.
        delay = backoff / 2 + random.uniform(0, backoff / 2)
        if retry_at is not None:
            until = (retry_at - now).total_seconds()
            if until > 0:
                # Retrying before the named time pushes the window further out.
                delay = until + random.uniform(0, self.base_delay)
        if waited + delay > self.budget:
            return None
        return delay
