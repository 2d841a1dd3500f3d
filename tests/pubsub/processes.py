"""The service as a real process (``uvicorn app.main:app``), as a replica runs in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ServiceProcess", "run_services"]

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(self, port: int, env: dict[str, str], log: IO[bytes]) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no answer on {self.base_url}: {self.output()[-4000:]}")

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=5).text

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would: uvicorn runs the lifespan's shutdown, then
        re-raises the signal (exit status -15)."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
        return self._process.returncode


@contextmanager
def run_services(envs: list[tuple[int, dict[str, str]]]) -> Iterator[list[ServiceProcess]]:
    """Start every service at once (imports take a while), wait for all, stop all."""
    with ExitStack() as stack:
        services = []
        for port, env in envs:
            service = ServiceProcess(port, env, stack.enter_context(tempfile.TemporaryFile()))
            stack.callback(service.stop)
            services.append(service)
        for service in services:
            service.wait_ready()
        yield services
