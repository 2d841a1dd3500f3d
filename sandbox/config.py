"""The sandbox's configuration: command-line flags, each with an environment variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_PUSH_SERVICE_ACCOUNT = "gmail-push@sandbox.iam.gserviceaccount.com"


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the sandbox can be told at start; most of it can also change at runtime."""

    host: str = "127.0.0.1"
    port: int = 8025
    smtp_port: int = 8026
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    # Empty means "any http(s) redirect URI is registered"; otherwise exact matches only.
    redirect_uris: tuple[str, ...] = ()
    push_endpoint: str | None = None
    push_audience: str | None = None
    push_service_account: str = DEFAULT_PUSH_SERVICE_ACCOUNT
    push_subscription: str = "projects/sandbox-project/subscriptions/gmail-push"
    push_wrapped: bool = True
    push_history_id_as_string: bool = False
    push_min_interval: float = 1.0
    push_ack_deadline: float = 10.0
    push_max_attempts: int = 5
    push_retry_backoff: float = 0.5
    push_retry_backoff_max: float = 8.0
    project: str = "sandbox-project"
    clock_speed: float = 1.0
    auto_consent: bool = False
    access_token_ttl: int = 3599
    code_ttl: int = 300
    history_retention: float = 7 * 86400.0
    watch_ttl: float = 7 * 86400.0
    attachment_id_ttl: float = 3600.0
    certs_max_age: int = 300
    retry_after_header: bool = False
    rotate_refresh_tokens: bool = False
    testing_mode: bool = False
    user_quota_per_minute: int = 0
    rate_limit_status: int = 429
    messages_only_record_rate: float = 0.1
    smtp_user: str | None = None
    smtp_password: str | None = None
    seed: int | None = None
    log_level: str = "warning"
    pubsub_emulator_host: str | None = None

    def with_overrides(self, **overrides: Any) -> SandboxConfig:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown sandbox settings: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class _Flag:
    name: str
    env: str
    kind: type
    help: str
    extra: dict[str, Any] = field(default_factory=dict)


_FLAGS: tuple[_Flag, ...] = (
    _Flag("host", "SANDBOX_HOST", str, "bind address"),
    _Flag("port", "SANDBOX_PORT", int, "the one HTTP port (0: any free port)"),
    _Flag(
        "smtp_port", "SANDBOX_SMTP_PORT", int, "SMTP port (0: any free port, -1: no SMTP server)"
    ),
    _Flag("client_id", "SANDBOX_CLIENT_ID", str, "the OAuth client's id"),
    _Flag("client_secret", "SANDBOX_CLIENT_SECRET", str, "the OAuth client's secret"),
    _Flag("redirect_uris", "SANDBOX_REDIRECT_URIS", tuple, "registered redirect URIs (comma list)"),
    _Flag("push_endpoint", "SANDBOX_PUSH_ENDPOINT", str, "where Pub/Sub pushes go"),
    _Flag("push_audience", "SANDBOX_PUSH_AUDIENCE", str, "aud of push tokens (default: endpoint)"),
    _Flag("push_service_account", "SANDBOX_PUSH_SERVICE_ACCOUNT", str, "email of push tokens"),
    _Flag("push_subscription", "SANDBOX_PUSH_SUBSCRIPTION", str, "subscription in envelopes"),
    _Flag("push_wrapped", "SANDBOX_PUSH_WRAPPED", bool, "wrapped envelope (else unwrapped)"),
    _Flag(
        "push_history_id_as_string",
        "SANDBOX_PUSH_HISTORY_ID_AS_STRING",
        bool,
        "historyId in push data as a JSON string instead of a number",
    ),
    _Flag("push_min_interval", "SANDBOX_PUSH_MIN_INTERVAL", float, "min seconds between pushes"),
    _Flag("push_ack_deadline", "SANDBOX_PUSH_ACK_DEADLINE", float, "push request timeout (s)"),
    _Flag("push_max_attempts", "SANDBOX_PUSH_MAX_ATTEMPTS", int, "delivery attempts per push"),
    _Flag("push_retry_backoff", "SANDBOX_PUSH_RETRY_BACKOFF", float, "first redelivery delay (s)"),
    _Flag("push_retry_backoff_max", "SANDBOX_PUSH_RETRY_BACKOFF_MAX", float, "max delay (s)"),
    _Flag("project", "SANDBOX_PROJECT", str, "Cloud project whose Pub/Sub topics exist"),
    _Flag("clock_speed", "SANDBOX_CLOCK_SPEED", float, "sandbox seconds per real second"),
    _Flag("auto_consent", "SANDBOX_AUTO_CONSENT", bool, "consent page redirects at once"),
    _Flag("access_token_ttl", "SANDBOX_ACCESS_TOKEN_TTL", int, "expires_in of access tokens"),
    _Flag("code_ttl", "SANDBOX_CODE_TTL", int, "lifetime of authorization codes (s)"),
    _Flag("history_retention", "SANDBOX_HISTORY_RETENTION", float, "history kept (s)"),
    _Flag("watch_ttl", "SANDBOX_WATCH_TTL", float, "watch lifetime (s)"),
    _Flag("attachment_id_ttl", "SANDBOX_ATTACHMENT_ID_TTL", float, "attachment id lifetime (s)"),
    _Flag("certs_max_age", "SANDBOX_CERTS_MAX_AGE", int, "Cache-Control max-age of certs"),
    _Flag("retry_after_header", "SANDBOX_RETRY_AFTER_HEADER", bool, "Retry-After on rate limits"),
    _Flag("rotate_refresh_tokens", "SANDBOX_ROTATE_REFRESH_TOKENS", bool, "new refresh tokens"),
    _Flag("testing_mode", "SANDBOX_TESTING_MODE", bool, "refresh tokens die after 7 days"),
    _Flag("user_quota_per_minute", "SANDBOX_USER_QUOTA_PER_MINUTE", int, "0 = no quota"),
    _Flag("rate_limit_status", "SANDBOX_RATE_LIMIT_STATUS", int, "403 or 429 when over quota"),
    _Flag(
        "messages_only_record_rate",
        "SANDBOX_MESSAGES_ONLY_RECORD_RATE",
        float,
        "probability of an extra messages-only history record",
    ),
    _Flag("smtp_user", "SANDBOX_SMTP_USER", str, "SMTP AUTH user (default: any)"),
    _Flag("smtp_password", "SANDBOX_SMTP_PASSWORD", str, "SMTP AUTH password"),
    _Flag("seed", "SANDBOX_SEED", int, "random seed for ids and gaps"),
    _Flag("log_level", "SANDBOX_LOG_LEVEL", str, "uvicorn log level"),
    _Flag(
        "pubsub_emulator_host",
        "PUBSUB_EMULATOR_HOST",
        str,
        "publish notifications to this Pub/Sub emulator (HOST:PORT) instead of pushing",
    ),
)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(flag: _Flag, text: str) -> Any:
    if flag.kind is bool:
        return _parse_bool(text)
    if flag.kind is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return flag.kind(text)


def parse_config(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None
) -> SandboxConfig:
    """Build the config from flags, falling back to environment variables, then defaults."""
    env = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="A local stand-in for Google (OAuth, Gmail, push)."
    )
    for flag in _FLAGS:
        option = "--" + flag.name.replace("_", "-")
        text = f"{flag.help} (env {flag.env})"
        if flag.kind is bool:
            parser.add_argument(
                option, dest=flag.name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(option, dest=flag.name, help=text)
    namespace = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for flag in _FLAGS:
        given = getattr(namespace, flag.name)
        if given is not None:
            values[flag.name] = given if flag.kind is bool else _convert(flag, given)
        elif flag.env in env:
            values[flag.name] = _convert(flag, env[flag.env])
    return SandboxConfig(**values)
