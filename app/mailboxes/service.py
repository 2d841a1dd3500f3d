"""Linking Gmail mailboxes: consent with PKCE, the callback, reading, unlinking, watches.

Linking is all-or-nothing: the mailbox row is written only after the code exchange,
the granted scopes, ``users.getProfile`` and ``users.watch`` have all succeeded, so a
failure at any step leaves no half-linked mailbox marked active.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import Principal
from app.crypto import TokenCipherError
from app.db import session_scope, utcnow
from app.errors import AppError, InvalidInput, NotFound, ServiceUnavailable
from app.google import GmailSession, GoogleError, RateLimited, Unavailable, WatchResult, new_pkce
from app.mailboxes.access import MailboxAccess, MailboxDisconnected, update_mailbox_gauge
from app.mailboxes.models import Mailbox, MailboxStatus, OAuthState
from app.mailboxes.repository import ConnectedMailbox, MailboxRepository, OAuthStateRepository
from app.metrics import WATCH_RENEWALS
from app.pagination import decode_cursor

logger = logging.getLogger("leadmail.mailboxes")

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
GMAIL_COMPOSE = "https://www.googleapis.com/auth/gmail.compose"
FULL_MAIL = "https://mail.google.com/"

# Least privilege for "send as the user, watch, read history and whole messages"
# (GOOGLE.md §1.7): gmail.send alone cannot read, and gmail.modify could also change
# and trash the user's mail, which the service never does.
REQUESTED_SCOPES = (GMAIL_SEND, GMAIL_READONLY)
# A grant that is broader (e.g. carried over by include_granted_scopes) also serves.
_SCOPES_THAT_READ = frozenset({GMAIL_READONLY, GMAIL_MODIFY, FULL_MAIL})
_SCOPES_THAT_SEND = frozenset({GMAIL_SEND, GMAIL_MODIFY, GMAIL_COMPOSE, FULL_MAIL})

STATE_TTL = timedelta(minutes=10)
USER_DISCONNECT_REASON = "disconnected by the user"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RESULT_PARAMS = ("status", "mailbox_id", "error", "error_description")


class InvalidState(AppError):
    """The callback's ``state`` is missing, unknown, expired or already used."""

    status = 400
    title = "Bad Request"


class LinkFailed(Exception):
    """Linking stopped at a step; ``code`` goes back to the frontend as ``error``."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


# --- connect -------------------------------------------------------------------------------


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an absolute http(s) URL, or None for anything that a
    browser might read differently than we do (userinfo, backslashes, controls)."""
    if any(ch in url for ch in "\\\t\r\n ") or any(ord(ch) < 0x20 for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port or _DEFAULT_PORTS[scheme]}"


def check_return_url(return_url: str, allowed_origins: list[str]) -> str:
    """The return URL if its origin is exactly one of ``allowed_origins``, else 422:
    anything looser would make the callback an open redirect."""
    origin = origin_of(return_url)
    allowed = {origin_of(item) for item in allowed_origins} - {None}
    if origin is None or origin not in allowed:
        raise InvalidInput(
            "return_url must be an absolute http(s) URL on one of the allowed origins "
            "(ALLOWED_RETURN_ORIGINS)"
        )
    return return_url


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


async def start_connect(
    session: AsyncSession, access: MailboxAccess, principal: Principal, return_url: str
) -> str:
    """Record a pending consent for the caller and return Google's consent URL."""
    settings = access.settings
    if not access.configured or not settings.pubsub_topic:
        raise ServiceUnavailable(
            "linking Gmail is not configured (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, PUBSUB_TOPIC)"
        )
    check_return_url(return_url, settings.allowed_return_origins)
    state = secrets.token_urlsafe(32)
    pkce = new_pkce()
    now = utcnow()
    await OAuthStateRepository(session).add(
        OAuthState(
            state_hash=_state_hash(state),
            org_id=principal.org_id,
            user_id=principal.user_id,
            user_email=principal.email,
            user_name=principal.name,
            code_verifier=pkce.verifier,
            return_url=return_url,
            created_at=now,
            expires_at=now + STATE_TTL,
        )
    )
    return access.oauth.authorization_url(
        redirect_uri=settings.oauth_redirect_uri,
        scopes=REQUESTED_SCOPES,
        state=state,
        code_challenge=pkce.challenge,
        login_hint=principal.email,
    )


# --- callback ------------------------------------------------------------------------------


async def consume_state(session: AsyncSession, state: str | None) -> OAuthState:
    """The pending consent named by ``state``, used up; 400 when there is none."""
    if not state or len(state) > 512:
        raise InvalidState("the callback carries no valid state; start linking again")
    pending = await OAuthStateRepository(session).consume(_state_hash(state), utcnow())
    if pending is None:
        raise InvalidState("the state is unknown, expired or already used; start linking again")
    return pending


async def complete_link(
    session: AsyncSession,
    access: MailboxAccess,
    pending: OAuthState,
    *,
    code: str | None,
    error: str | None,
) -> str:
    """Finish a consent; returns where to send the browser (``pending.return_url`` with
    ``status=connected&mailbox_id=`` or ``status=error&error=``)."""
    try:
        mailbox = await _link(session, access, pending, code=code, error=error)
    except LinkFailed as failure:
        logger.warning(
            "mailbox.link_failed",
            extra={
                "org_id": pending.org_id,
                "user_id": pending.user_id,
                "error": failure.code,
                "description": failure.description,
            },
        )
        return with_query(
            pending.return_url,
            status="error",
            error=failure.code,
            error_description=failure.description,
        )
    return with_query(pending.return_url, status="connected", mailbox_id=mailbox.id)


async def _link(
    session: AsyncSession,
    access: MailboxAccess,
    pending: OAuthState,
    *,
    code: str | None,
    error: str | None,
) -> Mailbox:
    settings = access.settings
    if error:
        if error == "access_denied":
            raise LinkFailed("access_denied", "consent was denied")
        raise LinkFailed("authorization_failed", f"Google answered {error[:100]}")
    if not code:
        raise LinkFailed("authorization_failed", "Google sent no authorization code")
    try:
        grant = await access.oauth.exchange_code(
            code, redirect_uri=settings.oauth_redirect_uri, code_verifier=pending.code_verifier
        )
    except GoogleError as exc:
        raise LinkFailed("exchange_failed", f"Google refused the code exchange ({exc})") from exc
    if not grant.refresh_token:
        raise LinkFailed(
            "missing_refresh_token",
            "Google issued no refresh token, so the mailbox could not stay linked",
        )
    missing = missing_permissions(grant.scopes)
    if missing:
        raise LinkFailed(
            "insufficient_scopes",
            f"the permission to {' and '.join(missing)} Gmail was not granted; "
            "allow both when asked",
        )
    gmail = access.gmail(grant.access_token)
    try:
        profile = await gmail.get_profile()
    except GoogleError as exc:
        raise LinkFailed("profile_failed", f"reading the Gmail profile failed ({exc})") from exc
    assert settings.pubsub_topic is not None
    try:
        watch = await gmail.watch(settings.pubsub_topic)
    except GoogleError as exc:
        raise LinkFailed(
            "watch_failed", f"starting Gmail push notifications failed ({exc})"
        ) from exc

    repository = MailboxRepository(session)
    mailbox = await repository.upsert_connected(
        ConnectedMailbox(
            org_id=pending.org_id,
            user_id=pending.user_id,
            user_name=pending.user_name,
            email_address=profile.email_address,
            refresh_token_encrypted=access.cipher.encrypt(grant.refresh_token),
            granted_scopes=" ".join(sorted(grant.scopes)),
            history_id=watch.history_id,
            watch_expires_at=watch.expiration,
            connected_at=utcnow(),
        )
    )
    access.remember(mailbox, grant.access_token, grant.expires_at)
    await update_mailbox_gauge(repository)
    logger.info(
        "mailbox.linked",
        extra={"mailbox_id": mailbox.id, "org_id": mailbox.org_id, "user_id": mailbox.user_id},
    )
    return mailbox


def missing_permissions(granted: frozenset[str]) -> list[str]:
    """What a grant cannot do of ("read", "send"): granular consent may drop a scope."""
    missing = []
    if not granted & _SCOPES_THAT_READ:
        missing.append("read")
    if not granted & _SCOPES_THAT_SEND:
        missing.append("send")
    return missing


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query (replacing any of our own names)."""
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in _RESULT_PARAMS
    ]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- reading and unlinking -----------------------------------------------------------------


async def get_mailbox(session: AsyncSession, principal: Principal, mailbox_id: str) -> Mailbox:
    mailbox = await MailboxRepository(session).get(principal.org_id, mailbox_id)
    if mailbox is None:
        raise NotFound(f"mailbox {mailbox_id} not found")
    return mailbox


async def list_mailboxes(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> list[Mailbox]:
    after = decode_cursor(cursor) if cursor else None
    return await MailboxRepository(session).list(principal.org_id, limit, after)


async def disconnect_mailbox(
    session: AsyncSession, access: MailboxAccess, principal: Principal, mailbox_id: str
) -> None:
    """Unlink at the user's request: stop the watch, revoke the grant, drop the token.

    The mailbox row stays (disconnected, with its reason) so its threads and messages
    stay readable and a later reconnect reuses its id. Google's side is best effort: a
    failure there is logged and the mailbox is unlinked here all the same. When
    another organization has the same address linked, the watch and the grant are
    theirs too (one Google account, one OAuth client), so both are left running.
    """
    repository = MailboxRepository(session)
    mailbox = await get_mailbox(session, principal, mailbox_id)
    if mailbox.status != MailboxStatus.ACTIVE or mailbox.refresh_token_encrypted is None:
        return
    others = [
        other
        for other in await repository.by_address(mailbox.email_address)
        if other.id != mailbox.id and other.status == MailboxStatus.ACTIVE
    ]
    if not others:
        await _stop_watch(access, mailbox)
        await _revoke_grant(access, mailbox.id, mailbox.refresh_token_encrypted)
    access.forget(mailbox.id)
    await repository.mark_disconnected(
        mailbox.id, USER_DISCONNECT_REASON, utcnow(), only_active=False
    )
    await update_mailbox_gauge(repository)
    logger.info("mailbox.unlinked", extra={"mailbox_id": mailbox.id, "org_id": mailbox.org_id})


async def _stop_watch(access: MailboxAccess, mailbox: Mailbox) -> None:
    async def stop(gmail: GmailSession) -> None:
        await gmail.stop()

    try:
        await access.call(mailbox, stop)
    except (MailboxDisconnected, GoogleError) as exc:
        logger.warning(
            "mailbox.watch.stop_failed", extra={"mailbox_id": mailbox.id, "error": str(exc)}
        )


async def _revoke_grant(access: MailboxAccess, mailbox_id: str, encrypted: bytes | None) -> None:
    if encrypted is None:
        return
    try:
        await access.oauth.revoke(access.cipher.decrypt(encrypted))
    except (GoogleError, TokenCipherError) as exc:
        logger.warning(
            "mailbox.token.revoke_failed", extra={"mailbox_id": mailbox_id, "error": str(exc)}
        )


# --- watch renewal -------------------------------------------------------------------------

RenewalOutcome = Literal["renewed", "not_due", "disconnected", "failed"]


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """A watch is renewed when its last renewal is older than ``renew_after`` or when it
    expires within ``expiry_margin`` (or is gone)."""

    renew_after: timedelta
    expiry_margin: timedelta = timedelta(days=1)

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        return now - self.renew_after, now + self.expiry_margin


async def renew_watch(
    sessionmaker: async_sessionmaker[AsyncSession],
    access: MailboxAccess,
    mailbox_id: str,
    *,
    now: datetime,
    policy: RenewalPolicy,
) -> RenewalOutcome:
    """Call ``users.watch`` again for one mailbox if it is (still) due.

    The caller holds the mailbox's renewal lease; reading the row again under it is
    what makes a second replica that listed the same mailbox skip it.
    """
    renewed_before, expiring_before = policy.bounds(now)
    async with sessionmaker() as session:
        mailbox = await MailboxRepository(session).get_by_id(mailbox_id)
    if mailbox is None or not MailboxRepository.is_due_for_renewal(
        mailbox, renewed_before, expiring_before
    ):
        return "not_due"
    topic = access.settings.pubsub_topic
    if not topic:
        return "not_due"

    async def watch(gmail: GmailSession) -> WatchResult:
        return await gmail.watch(topic)

    try:
        result = await access.call(mailbox, watch)
    except MailboxDisconnected as exc:
        WATCH_RENEWALS.labels("disconnected").inc()
        logger.info(
            "mailbox.watch.renewal_skipped", extra={"mailbox_id": mailbox_id, "reason": exc.reason}
        )
        return "disconnected"
    except GoogleError as exc:
        WATCH_RENEWALS.labels("failed").inc()
        level = logging.WARNING if isinstance(exc, Unavailable | RateLimited) else logging.ERROR
        logger.log(
            level,
            "mailbox.watch.renewal_failed",
            extra={"mailbox_id": mailbox_id, "error": str(exc)},
        )
        return "failed"
    async with session_scope(sessionmaker) as session:
        await MailboxRepository(session).record_watch(mailbox_id, result.expiration, now)
    WATCH_RENEWALS.labels("renewed").inc()
    logger.info(
        "mailbox.watch.renewed",
        extra={"mailbox_id": mailbox_id, "expires_at": result.expiration.isoformat()},
    )
    return "renewed"
