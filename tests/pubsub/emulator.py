"""Google's Pub/Sub emulator (part of google-cloud-cli), run for real on a free loopback port.

The emulator is a Java program behind a shell script, and the script forks java: it
runs in a process group of its own, and stopping it stops the whole group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tests.support import free_port

__all__ = ["EmulatorUnavailable", "emulator_command", "run_emulator"]

_RELATIVE_BINARY = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


class EmulatorUnavailable(Exception):
    """Why the emulator cannot run on this machine (a test skip reason)."""


def emulator_command() -> Path:
    """The emulator's launcher, found through ``gcloud`` on PATH."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable(
            "the Pub/Sub emulator needs gcloud on PATH (google-cloud-cli with the "
            "pubsub-emulator component and a Java runtime)"
        )
    # gcloud lives in <sdk_root>/bin; asking `gcloud info` costs a second, so only
    # when the layout is unusual.
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


@contextmanager
def run_emulator(startup_timeout: float = 60.0) -> Iterator[str]:
    """Start an emulator, yield its ``127.0.0.1:PORT``, stop its process group."""
    command = emulator_command()
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    # A file, not a pipe: nobody reads the emulator's chatter, and a full pipe would
    # stall it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(command), "--host=127.0.0.1", f"--port={port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            _wait_until_listening(process, port, startup_timeout, log)
            yield host
        finally:
            _stop_group(process)


def _wait_until_listening(
    process: subprocess.Popen[bytes], port: int, timeout: float, log: IO[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the Pub/Sub emulator exited with {process.returncode}: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Pub/Sub emulator did not listen on port {port} in {timeout:.0f}s")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
