"""Google's Pub/Sub emulator, run for real on a free loopback port for the tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from app.pubsub.emulator import EmulatorUnavailable, start_emulator, stop_emulator
from tests.support import free_port

__all__ = ["EmulatorUnavailable", "run_emulator"]


@contextmanager
def run_emulator() -> Iterator[str]:
    """Start an emulator, yield its ``127.0.0.1:PORT``, stop its process group."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        try:
            process = start_emulator(port, log)
        except RuntimeError as exc:
            log.seek(0)
            raise RuntimeError(f"{exc}: {log.read().decode(errors='replace')[-2000:]}") from exc
        try:
            yield f"127.0.0.1:{port}"
        finally:
            stop_emulator(process)
