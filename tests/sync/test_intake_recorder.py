"""NotificationRecorder (group commit): every caller gets an answer, even when batches fail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from app.db import create_engine
from app.sync.intake import NotificationRecorder, RecordFailed
from tests.conftest import run_alembic


async def test_pushes_queued_behind_a_failed_batch_are_still_answered(tmp_path: Path) -> None:
    # A database without the schema, slow to fail: every batch fails while the next
    # push is already waiting behind it.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def slow(*_: Any) -> None:
        time.sleep(0.1)  # in aiosqlite's worker thread, not the event loop

    recorder = NotificationRecorder(engine, max_in_flight=1, gather_seconds=0.0)

    async def push(index: int) -> BaseException | None:
        await asyncio.sleep(index * 0.02)
        try:
            await recorder.record(f"rep{index}@example.com", 100 + index)
        except RecordFailed as exc:
            return exc
        return None

    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(push(index) for index in range(3))), timeout=10
        )
    finally:
        await engine.dispose()
    # Nobody was left waiting for a flusher that had already given up, and nobody was
    # told "recorded" for a notification that was not.
    assert all(isinstance(outcome, RecordFailed) for outcome in outcomes)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_failed_recorder_keeps_working_once_the_database_is_back(
    tmp_path: Path, in_flight: int
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'late.db'}"
    engine = create_engine(url)
    recorder = NotificationRecorder(engine, max_in_flight=in_flight)
    try:
        with pytest.raises(RecordFailed):
            await asyncio.wait_for(recorder.record("nobody@example.com", 5), timeout=10)
        await asyncio.to_thread(run_alembic, url, "upgrade", "head")
        result = await asyncio.wait_for(recorder.record("nobody@example.com", 6), timeout=10)
        assert result.outcome == "unknown_mailbox"
    finally:
        await engine.dispose()
