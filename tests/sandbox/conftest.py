"""One real sandbox per test session (reset before each test) and a real push receiver."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.oauth2.credentials import Credentials

from sandbox.testing import RunningSandbox

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[RunningSandbox]:
    running = RunningSandbox(seed=7).start()
    yield running
    running.stop()


@pytest.fixture
def google(sandbox_server: RunningSandbox) -> RunningSandbox:
    sandbox_server.reset()
    return sandbox_server


def unique_email(prefix: str) -> str:
    return f"{prefix}{next(_counter)}@example.com"


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PushReceiver:
    """A real HTTP server that records what the sandbox pushes and answers with `statuses`."""

    url: str = ""
    requests: list[Captured] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 204
    delay: float = 0.0
    condition: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Captured]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} pushes, got {len(self.requests)}")
                self.condition.wait(remaining)
            return list(self.requests)

    def settle(self, quiet: float = 0.25) -> list[Captured]:
        """Wait until no push has arrived for `quiet` seconds; return everything received."""
        last = -1
        while last != len(self.requests):
            last = len(self.requests)
            time.sleep(quiet)
        return list(self.requests)


@pytest.fixture
def push_receiver() -> Iterator[PushReceiver]:
    receiver = PushReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if receiver.delay:
                time.sleep(receiver.delay)
            with receiver.condition:
                receiver.requests.append(Captured(self.path, dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                receiver.condition.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/v1/webhooks/gmail"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


def credentials(google: RunningSandbox, tokens: dict[str, Any]) -> Credentials:
    return Credentials(
        token=tokens["access_token"],
        refresh_token=tokens.get("refresh_token"),
        token_uri=google.token_uri,
        client_id=google.client_id,
        client_secret=google.client_secret,
    )
