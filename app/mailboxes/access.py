"""Gmail access for a linked mailbox: cached access tokens, refresh, and the broken link.

One :class:`MailboxAccess` lives on ``app.state.mailbox_access``. Everything that talks
to a mailbox's Gmail goes through :meth:`MailboxAccess.call`::

    sent = await access.call(mailbox, lambda gmail: gmail.send(raw, thread_id))

It hands ``fn`` a :class:`~app.google.GmailSession` bound to a valid access token. A
401 from Gmail costs one refresh and one retry. When Google refuses the refresh token
(``invalid_grant``: revoked, expired, password changed) the mailbox is marked
disconnected at once, in a session of its own that is committed even if the caller's
unit of work rolls back, and :class:`MailboxDisconnected` is raised; nothing retries
it. Every other Google error (RateLimited, Unavailable, NotFound, ...) reaches the
caller unchanged.

On SQLite, call these with no uncommitted writes in your own session: marking a
mailbox disconnected takes the database's single write lock.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.crypto import TokenCipher, TokenCipherError
from app.db import session_scope, utcnow
from app.google import (
    AccessToken,
    GmailClient,
    GmailSession,
    GoogleError,
    InvalidGrant,
    OAuthClient,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from app.mailboxes.models import Mailbox, MailboxStatus
from app.mailboxes.repository import MailboxRepository
from app.metrics import GMAIL_CALLS, GMAIL_QUOTA_UNITS, MAILBOXES, TOKEN_REFRESHES

__all__ = [
    "GMAIL_QUOTA_COST",
    "REFRESH_MARGIN",
    "GmailCall",
    "MailboxAccess",
    "MailboxDisconnected",
    "invalid_grant_reason",
]

logger = logging.getLogger("leadmail.mailboxes")

T = TypeVar("T")
GmailCall = Callable[[GmailSession], Awaitable[T]]

# Refresh a little before Google's expiry, so a token never dies in flight
# (google-auth itself treats tokens as expired 3 min 45 s early).
REFRESH_MARGIN = timedelta(minutes=5)
UNDECRYPTABLE_REASON = (
    "the stored refresh token cannot be decrypted with TOKEN_ENCRYPTION_KEYS "
    "(its key was retired before re-encryption); connect the mailbox again"
)

# Quota units per Gmail method under the regime for projects created from May 2026
# (GOOGLE.md §3.4); keys are the adapter's method names.
GMAIL_QUOTA_COST: dict[str, int] = {
    "getProfile": 1,
    "history.list": 2,
    "messages.list": 5,
    "messages.get": 20,
    "messages.attachments.get": 20,
    "messages.modify": 5,
    "threads.get": 40,
    "threads.list": 10,
    "messages.send": 100,
    "drafts.send": 100,
    "watch": 100,
    "stop": 50,
}


class MailboxDisconnected(Exception):
    """The mailbox cannot be used until its owner links it again."""

    def __init__(self, mailbox_id: str, reason: str) -> None:
        super().__init__(f"mailbox {mailbox_id} is disconnected: {reason}")
        self.mailbox_id = mailbox_id
        self.reason = reason


def invalid_grant_reason(exc: InvalidGrant) -> str:
    """The human-readable ``disconnect_reason`` for a refused refresh token."""
    return (
        f"Google refused the refresh token (invalid_grant: {exc.description}); "
        "reconnect the mailbox"
    )


@dataclass(frozen=True, slots=True)
class _CachedToken:
    token: str
    expires_at: datetime
    # The link the token belongs to: a reconnected mailbox must not reuse the old one.
    connected_at: datetime


class MailboxAccess:
    """Access tokens per mailbox (cached, refreshed one at a time) and Gmail calls."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        cipher: TokenCipher,
        *,
        refresh_attempts: int = 3,
        refresh_backoff: float = 0.5,
    ) -> None:
        """``refresh_attempts`` bounds our retries of a transient refresh failure
        (network error, 5xx after google-auth's own three tries, 429)."""
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.cipher = cipher
        secret = settings.google_client_secret
        self.oauth = OAuthClient(
            settings.google_client_id or "",
            secret.get_secret_value() if secret is not None else "",
            settings.google_auth_uri,
            settings.google_token_uri,
            settings.google_revoke_uri,
            http,
            on_call=record_google_call,
        )
        self.gmail_client = GmailClient(
            http, settings.gmail_api_base_url, on_call=record_google_call
        )
        self._refresh_attempts = max(1, refresh_attempts)
        self._refresh_backoff = refresh_backoff
        self._tokens: dict[str, _CachedToken] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def configured(self) -> bool:
        """Whether an OAuth client is configured at all."""
        return bool(self.settings.google_client_id and self.settings.google_client_secret)

    def gmail(self, access_token: str) -> GmailSession:
        return self.gmail_client.for_token(access_token)

    async def access_token(self, mailbox: Mailbox) -> str:
        """A valid access token for an active mailbox.

        Raises :class:`MailboxDisconnected` for a disconnected mailbox or when Google
        refuses its refresh token (the mailbox and the passed object are then marked
        disconnected); :class:`~app.google.Unavailable` or
        :class:`~app.google.RateLimited` when the token endpoint stays unreachable
        after bounded retries; :class:`~app.google.TokenEndpointError` when the OAuth
        client itself is refused (misconfiguration: the mailbox is left alone).
        """
        _ensure_usable(mailbox)
        cached = self._cached(mailbox)
        if cached is not None:
            return cached
        lock = self._locks.get(mailbox.id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[mailbox.id] = lock
        async with lock:
            # Whoever held the lock before us may have refreshed already.
            cached = self._cached(mailbox)
            if cached is not None:
                return cached
            return await self._refresh(mailbox)

    async def call(self, mailbox: Mailbox, fn: GmailCall[T]) -> T:
        """Run ``fn`` with a Gmail session for the mailbox; one refresh and one retry on
        a 401. Raises :class:`MailboxDisconnected` as :meth:`access_token` does."""
        token = await self.access_token(mailbox)
        try:
            return await fn(self.gmail(token))
        except Unauthorized:
            logger.info("gmail.token.rejected", extra={"mailbox_id": mailbox.id})
            self.forget(mailbox.id, token)
        token = await self.access_token(mailbox)
        return await fn(self.gmail(token))

    def remember(self, mailbox: Mailbox, token: str, expires_at: datetime) -> None:
        """Cache an access token obtained elsewhere (the consent's code exchange)."""
        self._tokens[mailbox.id] = _CachedToken(token, expires_at, mailbox.connected_at)

    def forget(self, mailbox_id: str, token: str | None = None) -> None:
        """Drop the cached token (only if it is still ``token``, when given: a token
        someone else already replaced stays)."""
        cached = self._tokens.get(mailbox_id)
        if cached is not None and (token is None or cached.token == token):
            del self._tokens[mailbox_id]

    async def disconnect(self, mailbox_id: str, reason: str) -> None:
        """Mark an active mailbox disconnected with ``reason``, in a session of its own.

        Idempotent: a mailbox that is already disconnected keeps its first reason.
        """
        await self._mark_disconnected(mailbox_id, reason, only_if_token=None)

    async def aclose(self) -> None:
        self._tokens.clear()
        await asyncio.to_thread(self.oauth.close)

    def _cached(self, mailbox: Mailbox) -> str | None:
        cached = self._tokens.get(mailbox.id)
        if cached is None or cached.connected_at != mailbox.connected_at:
            return None
        if cached.expires_at - REFRESH_MARGIN <= utcnow():
            return None
        return cached.token

    async def _refresh(self, mailbox: Mailbox) -> str:
        # Two rounds at most: a second one only when the row changed under the first
        # (reconnected with a new refresh token, or disconnected by someone else).
        for _ in range(2):
            current = await self._current_link(mailbox)
            encrypted = current.refresh_token_encrypted
            assert encrypted is not None
            try:
                fresh = await self._refresh_with_retries(mailbox.id, self.cipher.decrypt(encrypted))
            except (InvalidGrant, TokenCipherError) as exc:
                if isinstance(exc, InvalidGrant):
                    reason = invalid_grant_reason(exc)
                else:
                    # No configured key opens it (one was retired before `rotate-keys`
                    # ran): as unusable as a revoked grant, and only a reconnect mends it.
                    logger.error("mailbox.token_undecryptable", extra={"mailbox_id": mailbox.id})
                    reason = UNDECRYPTABLE_REASON
                if await self._mark_disconnected(mailbox.id, reason, only_if_token=encrypted):
                    _mark_object_disconnected(mailbox, reason)
                    raise MailboxDisconnected(mailbox.id, reason) from None
                continue
            if fresh.rotated_refresh_token:
                await self._store_rotated(mailbox, encrypted, fresh.rotated_refresh_token)
            self._tokens[mailbox.id] = _CachedToken(
                fresh.token, fresh.expires_at, current.connected_at
            )
            return fresh.token
        raise MailboxDisconnected(mailbox.id, "the mailbox's link changed during a token refresh")

    async def _current_link(self, mailbox: Mailbox) -> Mailbox:
        """The stored row: it, not the caller's copy (maybe stale), holds the refresh
        token that counts. A row that is no longer usable updates the copy and raises."""
        async with self.sessionmaker() as session:
            current = await MailboxRepository(session).get_by_id(mailbox.id)
        if current is None:
            raise MailboxDisconnected(mailbox.id, "the mailbox no longer exists")
        if current.status != MailboxStatus.ACTIVE or current.refresh_token_encrypted is None:
            _copy_link_state(current, mailbox)
            _ensure_usable(mailbox)
        return current

    async def _refresh_with_retries(self, mailbox_id: str, refresh_token: str) -> AccessToken:
        attempt = 1
        while True:
            try:
                fresh = await self.oauth.refresh(refresh_token)
            except InvalidGrant as exc:
                TOKEN_REFRESHES.labels("invalid_grant").inc()
                logger.warning(
                    "mailbox.token.invalid_grant",
                    extra={"mailbox_id": mailbox_id, "description": exc.description},
                )
                raise
            except (Unavailable, RateLimited) as exc:
                if attempt >= self._refresh_attempts:
                    TOKEN_REFRESHES.labels("unavailable").inc()
                    logger.warning(
                        "mailbox.token.refresh_unavailable",
                        extra={"mailbox_id": mailbox_id, "attempts": attempt, "error": str(exc)},
                    )
                    raise
                TOKEN_REFRESHES.labels("retried").inc()
                await asyncio.sleep(self._refresh_backoff * 2 ** (attempt - 1))
                attempt += 1
                continue
            except GoogleError as exc:
                TOKEN_REFRESHES.labels("error").inc()
                logger.error(
                    "mailbox.token.refresh_failed",
                    extra={"mailbox_id": mailbox_id, "error": str(exc)},
                )
                raise
            TOKEN_REFRESHES.labels("ok").inc()
            return fresh

    async def _store_rotated(self, mailbox: Mailbox, old: bytes, new_token: str) -> None:
        new = self.cipher.encrypt(new_token)
        async with session_scope(self.sessionmaker) as session:
            stored = await MailboxRepository(session).store_rotated_token(
                mailbox.id, old, new, utcnow()
            )
        if stored:
            mailbox.refresh_token_encrypted = new

    async def _mark_disconnected(
        self, mailbox_id: str, reason: str, *, only_if_token: bytes | None
    ) -> bool:
        self._tokens.pop(mailbox_id, None)
        async with session_scope(self.sessionmaker) as session:
            repository = MailboxRepository(session)
            changed = await repository.mark_disconnected(
                mailbox_id, reason, utcnow(), only_if_token=only_if_token
            )
            if changed:
                await update_mailbox_gauge(repository)
        if changed:
            logger.warning(
                "mailbox.disconnected", extra={"mailbox_id": mailbox_id, "reason": reason}
            )
        return changed


async def update_mailbox_gauge(repository: MailboxRepository) -> None:
    for status, count in (await repository.count_by_status()).items():
        MAILBOXES.labels(status).set(count)


def record_google_call(method: str, status: int, seconds: float) -> None:
    """The adapter's call hook: Gmail calls by method and status, and quota spent.

    Token-endpoint calls are counted by outcome in TOKEN_REFRESHES instead. A call
    refused for rate limiting (429) is taken as not charged.
    """
    if method.startswith("token."):
        return
    GMAIL_CALLS.labels(method, str(status)).inc()
    cost = GMAIL_QUOTA_COST.get(method)
    if cost and status and status != 429:
        GMAIL_QUOTA_UNITS.labels(method).inc(cost)


def _ensure_usable(mailbox: Mailbox) -> None:
    if mailbox.status != MailboxStatus.ACTIVE or mailbox.refresh_token_encrypted is None:
        raise MailboxDisconnected(
            mailbox.id, mailbox.disconnect_reason or "the mailbox is not connected"
        )


def _mark_object_disconnected(mailbox: Mailbox, reason: str) -> None:
    # The caller's copy tells the same story as the row, whatever its session does next.
    mailbox.status = MailboxStatus.DISCONNECTED
    mailbox.disconnect_reason = reason
    mailbox.disconnected_at = utcnow()
    mailbox.refresh_token_encrypted = None
    mailbox.watch_expires_at = None
    mailbox.sync_requested = False


def _copy_link_state(source: Mailbox, target: Mailbox) -> None:
    target.connected_at = source.connected_at
    target.status = source.status
    target.disconnect_reason = source.disconnect_reason
    target.disconnected_at = source.disconnected_at
    target.refresh_token_encrypted = source.refresh_token_encrypted
    target.watch_expires_at = source.watch_expires_at
