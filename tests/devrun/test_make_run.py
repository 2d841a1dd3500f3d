"""`make run`'s program (`python -m app.devrun`): sandbox and service come up with demo
data, the printed token works, and a Ctrl-C stops both cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS = (8000, 8025, 8026)


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_serves_the_demo_and_stops_cleanly_on_ctrl_c() -> None:
    busy = [port for port in PORTS if _taken(port)]
    if busy:
        pytest.skip(f"ports {busy} are taken (is `make run` running?)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_", "DATABASE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.devrun"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("export TOKEN=" in line for line in lines):
            assert process.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        output = "".join(lines)
        token = re.search(r"export TOKEN=(\S+)", output).group(1)  # type: ignore[union-attr]
        assert re.search(r"API_JWT_SECRET=\S+", output)
        headers = {"Authorization": f"Bearer {token}"}
        mailboxes = httpx.get("http://127.0.0.1:8000/v1/mailboxes", headers=headers, timeout=10)
        assert mailboxes.status_code == 200, mailboxes.text
        assert httpx.get("http://127.0.0.1:8000/readyz", timeout=10).status_code == 200
        demo = httpx.get("http://127.0.0.1:8025/_sandbox/accounts/rep@acme.example", timeout=10)
        assert demo.status_code == 200
    finally:
        # Ctrl-C: the terminal sends SIGINT to the whole process group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            reader.join(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, output[-3000:]
    # The service ran its lifespan shutdown rather than being cut off (a second SIGINT
    # would have made uvicorn exit at once).
    assert "Application shutdown complete." in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not any(_taken(port) for port in PORTS)
