"""Google's Pub/Sub emulator (part of google-cloud-cli) as a child process, for development
(`make run`) and tests. Not used by the service itself, which only needs
``PUBSUB_EMULATOR_HOST``.

The emulator is a Java program behind a shell script that forks java: it runs in a process
group of its own, and stopping it stops the whole group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

__all__ = ["EmulatorUnavailable", "emulator_command", "start_emulator", "stop_emulator"]

_RELATIVE_BINARY = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


class EmulatorUnavailable(Exception):
    """Why the emulator cannot run on this machine."""


def emulator_command() -> Path:
    """The emulator's launcher, found through ``gcloud`` on PATH."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable(
            "the Pub/Sub emulator needs gcloud on PATH (google-cloud-cli with the "
            "pubsub-emulator component and a Java runtime)"
        )
    # gcloud lives in <sdk_root>/bin; asking `gcloud info` costs a second, so only when the
    # layout is unusual.
    candidates = [Path(gcloud).resolve().parent.parent / _RELATIVE_BINARY]
    if not candidates[0].exists():
        info = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        candidates.append(Path(info.stdout.strip()) / _RELATIVE_BINARY)
    for candidate in candidates:
        if candidate.exists():
            if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
                raise EmulatorUnavailable("the Pub/Sub emulator needs a Java runtime on PATH")
            return candidate
    raise EmulatorUnavailable(
        "gcloud has no Pub/Sub emulator: `gcloud components install pubsub-emulator` "
        "(or the google-cloud-cli-pubsub-emulator package)"
    )


def start_emulator(
    port: int, log: IO[bytes], *, host: str = "127.0.0.1", startup_timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start an emulator on ``host:port`` and return once it listens.

    Its output goes to ``log`` (a file: nobody reads it, and a full pipe would stall it).
    Raises :class:`EmulatorUnavailable`, or ``RuntimeError`` if it does not come up.
    """
    command = emulator_command()
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    process = subprocess.Popen(
        [str(command), f"--host={host}", f"--port={port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_until_listening(process, host, port, startup_timeout)
    except BaseException:
        stop_emulator(process)
        raise
    return process


def stop_emulator(process: subprocess.Popen[bytes]) -> None:
    """Stop the emulator's whole process group (SIGTERM, then SIGKILL)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_until_listening(
    process: subprocess.Popen[bytes], host: str, port: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Pub/Sub emulator exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Pub/Sub emulator did not listen on {host}:{port} in {timeout:.0f}s")
