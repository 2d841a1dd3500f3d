"""Small helpers shared by the tests: tokens, ids, a real uvicorn server in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import uvicorn

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"

# The contract's Message fields, plus `match_reason` (the README's addition).
MESSAGE_FIELDS = frozenset(
    {
        "id",
        "thread_id",
        "lead_id",
        "direction",
        "status",
        "sent_via",
        "from_address",
        "to",
        "cc",
        "subject",
        "body_text",
        "body_html",
        "reply_text",
        "created_at",
        "sent_at",
        "received_at",
        "gmail_message_id",
        "gmail_thread_id",
        "rfc822_message_id",
        "attachments",
        "error",
        "match_reason",
    }
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bearer(
    user_id: str, org_id: str, *, secret: str = JWT_SECRET, ttl: int = 3600, **claims: Any
) -> dict[str, str]:
    payload = {"sub": user_id, "org": org_id, "exp": int(time.time()) + ttl, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server on loopback, in its own thread and loop."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
