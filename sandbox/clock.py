"""The sandbox clock: real time, sped up and shifted, so week-long behaviour runs in moments."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """`now()` is wall time at start + elapsed monotonic time * speed + manual offset."""

    def __init__(self, speed: float = 1.0) -> None:
        self._origin_wall = time.time()
        self._origin_mono = time.monotonic()
        self._speed = speed
        self._offset = 0.0

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        elapsed = time.monotonic() - self._origin_mono
        return self._origin_wall + elapsed * self._speed + self._offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def reset(self, speed: float) -> None:
        """Back to wall time (used when all state is forgotten, so nothing can go backwards)."""
        self._origin_wall = time.time()
        self._origin_mono = time.monotonic()
        self._offset = 0.0
        self._speed = speed

    def set_speed(self, speed: float) -> None:
        # Re-anchor so that changing the speed never makes the clock jump.
        current = self.now()
        self._origin_wall = current
        self._origin_mono = time.monotonic()
        self._offset = 0.0
        self._speed = speed


def rfc3339(timestamp: float) -> str:
    """Google's RFC 3339 form with milliseconds and a Z, e.g. 2026-09-16T03:57:19.386Z."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
