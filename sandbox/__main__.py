"""`python -m sandbox`: serve the local Google on one HTTP port (and SMTP) until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import uvicorn

from sandbox.app import bind, create_app
from sandbox.config import parse_config
from sandbox.state import Sandbox


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    http_socket = bind(config.host, config.port)
    smtp_socket = bind(config.host, config.smtp_port) if config.smtp_port >= 0 else None
    sandbox = Sandbox(config)
    port = http_socket.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    sandbox.base_url = f"http://{host}:{port}"
    app = create_app(sandbox, smtp_socket)
    base = sandbox.base_url
    lines = [
        f"sandbox Google on {base}",
        f"  GOOGLE_AUTH_URI={base}/o/oauth2/v2/auth",
        f"  GOOGLE_TOKEN_URI={base}/token",
        f"  GOOGLE_REVOKE_URI={base}/revoke",
        f"  GOOGLE_CERTS_URI={base}/oauth2/v1/certs",
        f"  GMAIL_API_BASE_URL={base}",
        f"  GOOGLE_CLIENT_ID={config.client_id}",
        f"  PUBSUB_TOPIC=projects/{config.project}/topics/gmail",
    ]
    if smtp_socket is not None:
        lines.append(f"  SMTP on {config.host}:{smtp_socket.getsockname()[1]} (any credentials)")
    print("\n".join(lines), flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=config.log_level, lifespan="on", access_log=False)
    )
    # uvicorn re-raises the signal after its graceful shutdown; Ctrl-C is a normal exit.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[http_socket]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
