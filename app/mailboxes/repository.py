"""Every SQL query on mailboxes and pending consents."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import new_id
from app.mailboxes.models import Mailbox, MailboxStatus, OAuthState
from app.pagination import newest_first


@dataclass(frozen=True, slots=True)
class ConnectedMailbox:
    """What a finished consent knows about the mailbox it links."""

    org_id: str
    user_id: str
    user_name: str | None
    email_address: str
    refresh_token_encrypted: bytes
    granted_scopes: str
    history_id: int
    watch_expires_at: datetime
    connected_at: datetime


class MailboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, org_id: str, mailbox_id: str) -> Mailbox | None:
        mailbox = await self.session.scalar(
            select(Mailbox).where(Mailbox.org_id == org_id, Mailbox.id == mailbox_id)
        )
        return mailbox

    async def get_by_id(self, mailbox_id: str) -> Mailbox | None:
        """Any organization's mailbox: for background work, never for a request."""
        return await self.session.get(Mailbox, mailbox_id, populate_existing=True)

    async def get_for_user(self, org_id: str, user_id: str) -> Mailbox | None:
        """The user's own mailbox: the most recently connected active one, else the most
        recent one of any status (so a caller can tell why it is not usable)."""
        active_first = case((Mailbox.status == MailboxStatus.ACTIVE, 0), else_=1)
        mailbox = await self.session.scalar(
            select(Mailbox)
            .where(Mailbox.org_id == org_id, Mailbox.user_id == user_id)
            .order_by(active_first, Mailbox.connected_at.desc(), Mailbox.id.desc())
            .limit(1)
        )
        return mailbox

    async def get_by_org_and_address(self, org_id: str, email_address: str) -> Mailbox | None:
        mailbox = await self.session.scalar(
            select(Mailbox).where(
                Mailbox.org_id == org_id, Mailbox.email_address == email_address.lower()
            )
        )
        return mailbox

    async def list(
        self,
        org_id: str,
        limit: int,
        after: tuple[datetime, str] | None = None,
        *,
        user_id: str | None = None,
        status: str | None = None,
    ) -> list[Mailbox]:
        """Newest first, keyset-paginated on (created_at, id)."""
        query = select(Mailbox).where(Mailbox.org_id == org_id)
        if user_id is not None:
            query = query.where(Mailbox.user_id == user_id)
        if status is not None:
            query = query.where(Mailbox.status == status)
        query = newest_first(query, Mailbox.created_at, Mailbox.id, after, limit)
        return list(await self.session.scalars(query))

    async def by_address(self, email_address: str) -> builtins.list[Mailbox]:
        """Every organization's mailbox for one Gmail address (what a push names)."""
        return list(
            await self.session.scalars(
                select(Mailbox)
                .where(Mailbox.email_address == email_address.lower())
                .order_by(Mailbox.connected_at.desc(), Mailbox.id)
            )
        )

    async def upsert_connected(self, linked: ConnectedMailbox) -> Mailbox:
        """Insert the mailbox, or make the existing one for this org and address active
        again on the same id; one statement, so concurrent callbacks cannot duplicate it.

        A reconnected mailbox keeps its sync cursor, so mail that arrived while it was
        disconnected is still synced: the watch's history id becomes a pending sync
        target instead.
        """
        email_address = linked.email_address.lower()
        values = {
            "org_id": linked.org_id,
            "user_id": linked.user_id,
            "user_name": linked.user_name,
            "email_address": email_address,
            "status": MailboxStatus.ACTIVE,
            "refresh_token_encrypted": linked.refresh_token_encrypted,
            "granted_scopes": linked.granted_scopes,
            "history_cursor": linked.history_id,
            "watch_expires_at": linked.watch_expires_at,
            "watch_renewed_at": linked.connected_at,
            "connected_at": linked.connected_at,
            "disconnected_at": None,
            "disconnect_reason": None,
            "sync_error": None,
            "sync_retry_at": None,
            "updated_at": linked.connected_at,
        }
        insert = _upsert_insert(self.session).values(
            id=new_id(),
            created_at=linked.connected_at,
            sync_requested=False,
            recovered_messages=0,
            **values,
        )
        excluded = insert.excluded
        had_cursor = Mailbox.history_cursor.is_not(None)
        on_conflict: dict[str, Any] = {
            key: excluded[key]
            for key in values
            if key not in {"org_id", "email_address", "history_cursor"}
        }
        on_conflict["history_cursor"] = func.coalesce(
            Mailbox.history_cursor, excluded.history_cursor
        )
        on_conflict["pending_history_id"] = case(
            (had_cursor, excluded.history_cursor), else_=Mailbox.pending_history_id
        )
        on_conflict["sync_requested"] = case((had_cursor, True), else_=Mailbox.sync_requested)
        statement = insert.on_conflict_do_update(
            index_elements=[Mailbox.org_id, Mailbox.email_address], set_=on_conflict
        ).returning(Mailbox.id)
        mailbox_id = await self.session.scalar(statement)
        assert mailbox_id is not None
        mailbox = await self.session.get(Mailbox, mailbox_id, populate_existing=True)
        assert mailbox is not None
        return mailbox

    async def mark_disconnected(
        self,
        mailbox_id: str,
        reason: str,
        at: datetime,
        *,
        only_if_token: bytes | None = None,
        only_active: bool = True,
    ) -> bool:
        """Turn a mailbox disconnected, drop its token and consider its watch gone.

        By default only an active mailbox changes (a disconnected one keeps its first
        reason); ``only_if_token`` makes it a compare-and-set, so a mailbox reconnected
        meanwhile (another refresh token) is left alone. False when nothing changed.
        """
        statement = (
            update(Mailbox)
            .where(Mailbox.id == mailbox_id)
            .values(
                status=MailboxStatus.DISCONNECTED,
                disconnected_at=at,
                disconnect_reason=reason,
                refresh_token_encrypted=None,
                watch_expires_at=None,
                sync_requested=False,
                updated_at=at,
            )
            .execution_options(synchronize_session=False)
        )
        if only_active:
            statement = statement.where(Mailbox.status == MailboxStatus.ACTIVE)
        if only_if_token is not None:
            statement = statement.where(Mailbox.refresh_token_encrypted == only_if_token)
        result = await self.session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def store_rotated_token(
        self, mailbox_id: str, old: bytes, new: bytes, at: datetime
    ) -> bool:
        result = await self.session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id, Mailbox.refresh_token_encrypted == old)
            .values(refresh_token_encrypted=new, updated_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self.session.execute(
            select(Mailbox.status, func.count()).group_by(Mailbox.status)
        )
        counts = {MailboxStatus.ACTIVE: 0, MailboxStatus.DISCONNECTED: 0}
        counts.update({status: count for status, count in rows.tuples()})
        return counts

    async def due_for_watch_renewal(
        self, renewed_before: datetime, expiring_before: datetime, limit: int
    ) -> builtins.list[str]:
        """Active mailboxes whose watch was last renewed before ``renewed_before`` or that
        expires (or has no watch at all) before ``expiring_before``, most urgent first."""
        return list(
            await self.session.scalars(
                self._due_for_renewal(renewed_before, expiring_before)
                .order_by(Mailbox.watch_expires_at.asc().nulls_first(), Mailbox.id)
                .limit(limit)
            )
        )

    def _due_for_renewal(
        self, renewed_before: datetime, expiring_before: datetime
    ) -> Select[tuple[str]]:
        return select(Mailbox.id).where(
            Mailbox.status == MailboxStatus.ACTIVE,
            Mailbox.refresh_token_encrypted.is_not(None),
            or_(
                Mailbox.watch_renewed_at.is_(None),
                Mailbox.watch_renewed_at <= renewed_before,
                Mailbox.watch_expires_at.is_(None),
                Mailbox.watch_expires_at <= expiring_before,
            ),
        )

    @staticmethod
    def is_due_for_renewal(
        mailbox: Mailbox, renewed_before: datetime, expiring_before: datetime
    ) -> bool:
        """The same test as :meth:`due_for_watch_renewal`, on a loaded row."""
        return (
            mailbox.status == MailboxStatus.ACTIVE
            and mailbox.refresh_token_encrypted is not None
            and (
                mailbox.watch_renewed_at is None
                or mailbox.watch_renewed_at <= renewed_before
                or mailbox.watch_expires_at is None
                or mailbox.watch_expires_at <= expiring_before
            )
        )

    async def record_watch(
        self, mailbox_id: str, expires_at: datetime, renewed_at: datetime
    ) -> None:
        await self.session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id, Mailbox.status == MailboxStatus.ACTIVE)
            .values(watch_expires_at=expires_at, watch_renewed_at=renewed_at, updated_at=renewed_at)
            .execution_options(synchronize_session=False)
        )

    async def request_safety_sync(self, quiet_since: datetime) -> Sequence[str]:
        """Mark every active mailbox with no push, no sync and no (re)connection since
        ``quiet_since`` for a sync; returns their ids."""
        result = await self.session.scalars(
            update(Mailbox)
            .where(
                Mailbox.status == MailboxStatus.ACTIVE,
                Mailbox.sync_requested.is_(False),
                Mailbox.connected_at <= quiet_since,
                or_(Mailbox.last_push_at.is_(None), Mailbox.last_push_at <= quiet_since),
                or_(Mailbox.last_synced_at.is_(None), Mailbox.last_synced_at <= quiet_since),
            )
            .values(sync_requested=True)
            .returning(Mailbox.id)
            .execution_options(synchronize_session=False)
        )
        return list(result)


class OAuthStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, state: OAuthState) -> OAuthState:
        self.session.add(state)
        await self.session.flush()
        return state

    async def consume(self, state_hash: str, now: datetime) -> OAuthState | None:
        """Use a pending consent once: only the first caller before expiry gets it."""
        result = await self.session.execute(
            update(OAuthState)
            .where(
                OAuthState.state_hash == state_hash,
                OAuthState.used_at.is_(None),
                OAuthState.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        return await self.session.get(OAuthState, state_hash, populate_existing=True)

    async def delete_expired(self, before: datetime) -> int:
        """Forget consents that expired before ``before`` (used or not)."""
        result = await self.session.execute(
            delete(OAuthState)
            .where(OAuthState.expires_at < before)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _upsert_insert(session: AsyncSession) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the dialect of the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(Mailbox)
    return sqlite.insert(Mailbox)
