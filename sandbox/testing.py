"""Run a real sandbox for tests: HTTP and SMTP on free loopback ports, in a thread of its own.

    with run_sandbox(access_token_ttl=60) as google:
        google.create_account("rep@example.com", "Rita Rep")
        tokens = google.grant("rep@example.com", ["gmail.send", "gmail.readonly"])
        ...

The server runs its own event loop in a background thread, so it never needs the caller's loop:
sync and async tests can share one instance for a whole session (call `reset()` between tests, or
use unique addresses). Helper methods are blocking httpx calls to the control API; none of them
waits for a push delivery, so an async test whose own server receives pushes cannot deadlock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from sandbox.app import bind, create_app
from sandbox.config import SandboxConfig
from sandbox.state import Sandbox

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
GMAIL_METADATA = "https://www.googleapis.com/auth/gmail.metadata"


class SandboxControlError(RuntimeError):
    """A control API call failed; `status` and `body` say how."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"sandbox control call failed with {status}: {body}")
        self.status = status
        self.body = body


class RunningSandbox:
    """A started sandbox. Build it with `run_sandbox()` or call `start()` and `stop()` yourself."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        base = config or SandboxConfig(port=0, smtp_port=0)
        self.config = base.with_overrides(**overrides)
        self.sandbox: Sandbox | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self.base_url = ""
        self.smtp_port = 0
        self.host = self.config.host

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> RunningSandbox:
        http_socket = bind(self.config.host, self.config.port)
        smtp_socket = (
            bind(self.config.host, self.config.smtp_port) if self.config.smtp_port >= 0 else None
        )
        port = http_socket.getsockname()[1]
        self.base_url = f"http://{self.config.host}:{port}"
        self.smtp_port = smtp_socket.getsockname()[1] if smtp_socket is not None else 0
        sandbox = Sandbox(self.config)
        sandbox.base_url = self.base_url
        self.sandbox = sandbox
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(sandbox, smtp_socket),
                log_level=self.config.log_level,
                lifespan="on",
                access_log=False,
            )
        )
        self._server = server
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[http_socket]))
            except BaseException as exc:
                failure.append(exc)

        self._thread = threading.Thread(target=run, name="sandbox-google", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if failure or not self._thread.is_alive():
                raise RuntimeError(f"sandbox failed to start: {failure!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("sandbox did not start in time")
            time.sleep(0.01)
        self._client = httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False)
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15.0)
            self._thread = None
        self._server = None

    def __enter__(self) -> RunningSandbox:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.config.client_id

    @property
    def client_secret(self) -> str:
        return self.config.client_secret

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def auth_uri(self) -> str:
        return f"{self.base_url}/o/oauth2/v2/auth"

    @property
    def revoke_uri(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def certs_uri(self) -> str:
        return f"{self.base_url}/oauth2/v1/certs"

    def topic(self, name: str = "gmail") -> str:
        return f"projects/{self.config.project}/topics/{name}"

    def env(self) -> dict[str, str]:
        """The service's environment variables that point it at this sandbox."""
        env = {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_AUTH_URI": self.auth_uri,
            "GOOGLE_TOKEN_URI": self.token_uri,
            "GOOGLE_REVOKE_URI": self.revoke_uri,
            "GOOGLE_CERTS_URI": self.certs_uri,
            "GMAIL_API_BASE_URL": self.base_url,
            "PUBSUB_TOPIC": self.topic(),
            "PUBSUB_PUSH_SERVICE_ACCOUNT": self.config.push_service_account,
        }
        if self.smtp_port:
            env["DEFAULT_SMTP_URL"] = f"smtp://sandbox:sandbox@{self.host}:{self.smtp_port}"
        return env

    def request(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        """A control API call; returns the decoded JSON (None for empty bodies)."""
        if self._client is None:
            raise RuntimeError("the sandbox is not running")
        response = self._client.request(method, path, json=json, **kwargs)
        if response.status_code >= 400:
            raise SandboxControlError(response.status_code, response.text)
        return response.json() if response.content else None

    # --- accounts and grants ---------------------------------------------------------------------

    def create_account(self, email: str, name: str | None = None) -> str:
        body: dict[str, Any] = {"email": email}
        if name is not None:
            body["name"] = name
        result: str = self.request("POST", "/_sandbox/accounts", body)["email"]
        return result

    def account(self, email: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/_sandbox/accounts/{email}")
        return result

    def set_gmail_enabled(self, email: str, enabled: bool) -> None:
        self.request("PATCH", f"/_sandbox/accounts/{email}", {"gmail_enabled": enabled})

    def grant(self, email: str, scopes: list[str]) -> dict[str, Any]:
        """Consent without a browser: {access_token, refresh_token, expires_in, scope}."""
        result: dict[str, Any] = self.request(
            "POST", f"/_sandbox/accounts/{email}/grant", {"scopes": scopes}
        )
        return result

    def revoke(self, email: str) -> int:
        """The user removes the app's access: every grant of `email` dies."""
        result: int = self.request("POST", f"/_sandbox/accounts/{email}/revoke")["revoked"]
        return result

    def revoke_token(self, token: str) -> None:
        self.request("POST", "/_sandbox/tokens/revoke", {"token": token})

    def change_password(self, email: str) -> int:
        result: int = self.request("POST", f"/_sandbox/accounts/{email}/password-change")["revoked"]
        return result

    def set_consent(
        self,
        *,
        auto: bool = True,
        decision: str = "allow",
        email: str | None = None,
        scopes: list[str] | None = None,
    ) -> None:
        """How the consent page answers: auto-consent, deny, or grant only `scopes`."""
        self.request(
            "PUT",
            "/_sandbox/consent",
            {"auto": auto, "decision": decision, "email": email, "scopes": scopes},
        )

    # --- mail as people write it ---------------------------------------------------------------

    def customer_reply(
        self,
        customer: str,
        *,
        message_id: str | None = None,
        thread_id: str | None = None,
        text: str = "Thanks, sounds good.",
        html: str | None = None,
        reply_all: bool = False,
        attachments: list[tuple[str, str, bytes]] | None = None,
        name: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """`customer` replies to the message with RFC 822 `message_id` (or to the last message
        of its own `thread_id`): quoted body, In-Reply-To/References, From the customer."""
        body: dict[str, Any] = {"text": text, "reply_all": reply_all, **extra}
        if message_id is not None:
            body["message_id"] = message_id
        if thread_id is not None:
            body["thread_id"] = thread_id
        if html is not None:
            body["html"] = html
        if name is not None:
            body["name"] = name
        if attachments:
            body["attachments"] = _attachments(attachments)
        result: dict[str, Any] = self.request("POST", f"/_sandbox/accounts/{customer}/reply", body)
        return result

    def rep_reply_in_gmail(
        self,
        rep: str,
        *,
        thread_id: str | None = None,
        message_id: str | None = None,
        text: str = "Following up on this.",
        html: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The rep answers in Gmail's web UI, inside the rep's own thread."""
        return self.customer_reply(
            rep, thread_id=thread_id, message_id=message_id, text=text, html=html, **extra
        )

    def customer_new_thread(
        self,
        customer: str,
        to: list[str],
        subject: str,
        text: str,
        *,
        html: str | None = None,
        attachments: list[tuple[str, str, bytes]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"to": to, "subject": subject, "text": text, **extra}
        if html is not None:
            body["html"] = html
        if attachments:
            body["attachments"] = _attachments(attachments)
        result: dict[str, Any] = self.request("POST", f"/_sandbox/accounts/{customer}/send", body)
        return result

    def insert_raw(
        self,
        email: str,
        raw: bytes,
        *,
        labels: list[str] | None = None,
        thread_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(raw).decode()}
        if labels is not None:
            body["labels"] = labels
        if thread_id is not None:
            body["thread_id"] = thread_id
        result: dict[str, Any] = self.request("POST", f"/_sandbox/accounts/{email}/messages", body)
        return result

    def messages(self, email: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/_sandbox/accounts/{email}/messages")[
            "items"
        ]
        return result

    def delete_message(self, email: str, gmail_id: str) -> None:
        self.request("DELETE", f"/_sandbox/accounts/{email}/messages/{gmail_id}")

    def modify_labels(
        self,
        email: str,
        gmail_id: str,
        add: list[str] | None = None,
        remove: list[str] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/_sandbox/accounts/{email}/messages/{gmail_id}/labels",
            {"add": add or [], "remove": remove or []},
        )
        return result

    def expire_history(self, email: str, before: int | None = None) -> int:
        body = {} if before is None else {"before": before}
        result = self.request("POST", f"/_sandbox/accounts/{email}/expire-history", body)
        return int(result["history_floor"])

    # --- time, faults, push ---------------------------------------------------------------------

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/_sandbox/clock", {"advance": seconds})
        return result

    def fault(
        self,
        method: str,
        kind: str,
        count: int = 1,
        *,
        account: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Fail the next `count` calls of `method` ("gmail.users.messages.get", "*", or
        "oauth.token") with `kind` (see GET /_sandbox/faults for the kinds)."""
        body: dict[str, Any] = {"method": method, "kind": kind, "count": count, "params": params}
        if account is not None:
            body["account"] = account
        result: dict[str, Any] = self.request("POST", "/_sandbox/faults", body)
        return result

    def clear_faults(self) -> None:
        self.request("DELETE", "/_sandbox/faults")

    def push_fault(
        self, kind: str, count: int = 1, delay: float = 2.0, email: str | None = None
    ) -> None:
        """drop, duplicate, reorder or delay the next `count` push notifications (of one
        mailbox when `email` is given)."""
        self.request(
            "POST",
            "/_sandbox/push/faults",
            {"kind": kind, "count": count, "delay": delay, "email": email},
        )

    def set_push_endpoint(
        self, url: str | None, audience: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT", "/_sandbox/push", {"endpoint": url, "audience": audience, **settings}
        )
        return result

    def notifications(self, email: str | None = None) -> list[dict[str, Any]]:
        params = {"email": email} if email else None
        result: list[dict[str, Any]] = self.request(
            "GET", "/_sandbox/push/notifications", params=params
        )["items"]
        return result

    def push_token(
        self,
        *,
        audience: str | None = None,
        claims: dict[str, Any] | None = None,
        remove: list[str] | None = None,
        key: str = "active",
    ) -> str:
        """A push OIDC token, optionally with defects (claims overridden or removed; key
        "unknown" or "bad_signature")."""
        body = {"audience": audience, "claims": claims or {}, "remove": remove or [], "key": key}
        result: str = self.request("POST", "/_sandbox/push/token", body)["token"]
        return result

    def rotate_key(self, *, activate: bool = True) -> str:
        result: str = self.request("POST", "/_sandbox/keys/rotate", {"activate": activate})["kid"]
        return result

    def retire_key(self, kid: str | None = None) -> str:
        result: str = self.request("POST", "/_sandbox/keys/retire", {"kid": kid})["retired"]
        return result

    def settings(self, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", "/_sandbox/settings", values)
        return result

    def set_topics(self, topics: dict[str, bool] | None, *, any_topic: bool = False) -> None:
        body: dict[str, Any] = {"any_topic": any_topic}
        if topics is not None:
            body["topics"] = [{"name": n, "publish_granted": g} for n, g in topics.items()]
        self.request("PUT", "/_sandbox/topics", body)

    # --- logs ------------------------------------------------------------------------------------

    def calls(
        self, gmail_method: str | None = None, *, account: str | None = None
    ) -> list[dict[str, Any]]:
        """The request log, optionally only one Gmail method and one mailbox's calls."""
        items: list[dict[str, Any]] = self.request("GET", "/_sandbox/calls")["items"]
        if gmail_method is not None:
            items = [c for c in items if c.get("gmail_method") == gmail_method]
        if account is not None:
            items = [c for c in items if c.get("account") == account.lower()]
        return items

    def clear_calls(self) -> None:
        self.request("DELETE", "/_sandbox/calls")

    def call_counts(self) -> dict[str, int]:
        result: dict[str, int] = self.request("GET", "/_sandbox/stats")["calls"]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/_sandbox/stats")
        return result

    def outgoing(self, via: str | None = None) -> list[dict[str, Any]]:
        params = {"via": via} if via else None
        result: list[dict[str, Any]] = self.request("GET", "/_sandbox/outgoing", params=params)[
            "items"
        ]
        return result

    def reset(self) -> None:
        self.request("POST", "/_sandbox/reset")


def _attachments(items: list[tuple[str, str, bytes]]) -> list[dict[str, str]]:
    return [
        {"filename": name, "mime_type": mime_type, "content_b64": base64.b64encode(data).decode()}
        for name, mime_type, data in items
    ]


@contextlib.contextmanager
def run_sandbox(**config_overrides: Any) -> Iterator[RunningSandbox]:
    """Start a sandbox on free loopback ports for the duration of the block."""
    running = RunningSandbox(**config_overrides).start()
    try:
        yield running
    finally:
        running.stop()
