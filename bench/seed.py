"""Bulk data for the read and intake figures: mailboxes, threads and messages.

PostgreSQL takes the rows by COPY (asyncpg's binary copy); SQLite, for the smoke run,
by executemany in batches. Mailboxes look freshly linked and watched, so the service's
duties leave them alone while the benchmark runs.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from app.db import create_engine, is_sqlite
from app.mailboxes.models import Mailbox
from app.threads.models import Message, Thread

START_CURSOR = 1000


@dataclass(frozen=True)
class Shape:
    mailboxes: int
    threads_per_mailbox: int
    messages_per_thread: int
    leads_per_mailbox: int
    mailboxes_per_org: int = 10

    @property
    def messages(self) -> int:
        return self.mailboxes * self.threads_per_mailbox * self.messages_per_thread

    @property
    def threads(self) -> int:
        return self.mailboxes * self.threads_per_mailbox


def org_of(mailbox: int, shape: Shape) -> str:
    return f"org-{mailbox // shape.mailboxes_per_org}"


def address_of(mailbox: int) -> str:
    return f"rep{mailbox}@bench.example"


def lead_of(mailbox: int, lead: int) -> str:
    return f"lead-{mailbox}-{lead}"


def _uid() -> str:
    return uuid.uuid4().hex


def mailbox_rows(shape: Shape, now: datetime) -> Iterator[dict[str, Any]]:
    for index in range(shape.mailboxes):
        yield {
            "id": f"mbx{index:09d}",
            "org_id": org_of(index, shape),
            "user_id": f"user-{index}",
            "user_name": None,
            "email_address": address_of(index),
            "status": "active",
            "refresh_token_encrypted": None,
            "granted_scopes": "",
            "history_cursor": START_CURSOR,
            "pending_history_id": None,
            "sync_requested": False,
            "sync_retry_at": None,
            "sync_error": None,
            "recovered_messages": 0,
            "last_recovery_at": None,
            "watch_expires_at": now + timedelta(days=7),
            "watch_renewed_at": now,
            "last_push_at": None,
            "last_synced_at": now,
            "connected_at": now,
            "disconnected_at": None,
            "disconnect_reason": None,
            "created_at": now,
            "updated_at": now,
        }


THREAD_COLUMNS = (
    "id",
    "org_id",
    "lead_id",
    "mailbox_id",
    "gmail_thread_id",
    "subject",
    "sent_via",
    "created_by",
    "message_count",
    "created_at",
    "last_message_at",
)
MESSAGE_COLUMNS = (
    "id",
    "org_id",
    "thread_id",
    "lead_id",
    "mailbox_id",
    "user_id",
    "direction",
    "status",
    "sent_via",
    "from_address",
    "to",
    "cc",
    "bcc",
    "subject",
    "body_text",
    "reply_text",
    "attachments",
    "gmail_message_id",
    "gmail_thread_id",
    "rfc822_message_id",
    "references",
    "attempts",
    "created_at",
    "sent_at",
    "received_at",
    "updated_at",
)
_JSON_COLUMNS = {"to", "cc", "bcc", "attachments", "references"}


def conversation_rows(
    shape: Shape, now: datetime, seed: int = 7
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(thread, its messages) as tuples in THREAD_COLUMNS / MESSAGE_COLUMNS order, for
    every thread; conversations spread over the last year. Ids are counters: unique, and
    far cheaper to make a million of than random ones."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    threads_per_lead = max(shape.threads_per_mailbox // shape.leads_per_mailbox, 1)
    gap = timedelta(minutes=17)
    number = 0
    for mailbox in range(shape.mailboxes):
        org = org_of(mailbox, shape)
        mailbox_id = f"mbx{mailbox:09d}"
        rep = address_of(mailbox)
        user = f"user-{mailbox}"
        for position in range(shape.threads_per_mailbox):
            lead_number = min(position // threads_per_lead, shape.leads_per_mailbox - 1)
            lead = lead_of(mailbox, lead_number)
            customer = f"{lead}@customer.example"
            to_customer, to_rep = json.dumps([customer]), json.dumps([rep])
            start = now - timedelta(minutes=rng.randint(60, 525_600))
            thread_id = f"thr{mailbox:07d}{position:05d}{run}"
            gmail_thread = f"{mailbox:07x}{position:05x}0000"
            subject = f"Offer {mailbox}-{position}"
            messages = []
            at = start
            for index in range(shape.messages_per_thread):
                number += 1
                outbound = index % 2 == 0
                text = f"Message {index} about the offer."
                messages.append(
                    (
                        f"msg{number:012d}{run}",
                        org,
                        thread_id,
                        lead,
                        mailbox_id,
                        user if outbound else None,
                        "outbound" if outbound else "inbound",
                        "sent" if outbound else "received",
                        "gmail" if outbound else None,
                        rep if outbound else customer,
                        to_customer if outbound else to_rep,
                        "[]",
                        "[]",
                        subject if index == 0 else f"Re: {subject}",
                        text + "\n\nKind regards",
                        None if outbound else text,
                        "[]",
                        f"{number:016x}",
                        gmail_thread,
                        f"<{number}.{run}@bench.example>",
                        "[]",
                        0,
                        at,
                        at if outbound else None,
                        None if outbound else at,
                        at,
                    )
                )
                at += gap
            thread = (
                thread_id,
                org,
                lead,
                mailbox_id,
                gmail_thread,
                subject,
                "gmail",
                user,
                len(messages),
                start,
                at - gap,
            )
            yield thread, messages


async def load(database_url: str, shape: Shape, batch: int = 20_000) -> None:
    now = datetime.now(UTC)
    if is_sqlite(database_url):
        await _load_sqlite(database_url, shape, now, batch)
    else:
        await _load_postgres(database_url, shape, now, batch)


def _as_dict(columns: Sequence[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        column: json.loads(value) if column in _JSON_COLUMNS else value
        for column, value in zip(columns, row, strict=True)
    }


async def _load_sqlite(database_url: str, shape: Shape, now: datetime, batch: int) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Mailbox), list(mailbox_rows(shape, now)))
        threads: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        for thread, items in conversation_rows(shape, now):
            threads.append(_as_dict(THREAD_COLUMNS, thread))
            messages += [_as_dict(MESSAGE_COLUMNS, item) for item in items]
            if len(messages) >= batch:
                await _flush_sqlite(engine, threads, messages)
                threads, messages = [], []
        await _flush_sqlite(engine, threads, messages)
    finally:
        await engine.dispose()


async def _flush_sqlite(
    engine: Any, threads: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> None:
    if not threads:
        return
    async with engine.begin() as connection:
        await connection.execute(insert(Thread), threads)
        if messages:
            await connection.execute(insert(Message), messages)


async def _load_postgres(database_url: str, shape: Shape, now: datetime, batch: int) -> None:
    """COPY into tables stripped of their secondary indexes and constraints, which are
    then rebuilt once: far faster than maintaining them row by row."""
    url = make_url(database_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        rebuild = await _strip(connection, ("messages", "threads"))
        rows = list(mailbox_rows(shape, now))
        await connection.copy_records_to_table(
            "mailboxes", records=[tuple(row.values()) for row in rows], columns=list(rows[0])
        )
        threads: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        for thread, items in conversation_rows(shape, now):
            threads.append(thread)
            messages += items
            if len(messages) >= batch:
                await _copy(connection, threads, messages)
                threads, messages = [], []
        await _copy(connection, threads, messages)
        for statement in rebuild:
            await connection.execute(statement)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def _copy(
    connection: asyncpg.Connection, threads: list[tuple[Any, ...]], messages: list[tuple[Any, ...]]
) -> None:
    if threads:
        await connection.copy_records_to_table("threads", records=threads, columns=THREAD_COLUMNS)
    if messages:
        await connection.copy_records_to_table(
            "messages", records=messages, columns=MESSAGE_COLUMNS
        )


async def _strip(connection: asyncpg.Connection, tables: Sequence[str]) -> list[str]:
    """Drop the tables' foreign keys, unique constraints and plain indexes (not the
    primary keys); returns the statements that put them back."""
    rebuild: list[str] = []
    drop: list[str] = []
    constraints = await connection.fetch(
        "SELECT conname, conrelid::regclass::text AS tbl, contype, pg_get_constraintdef(oid) AS d"
        " FROM pg_constraint WHERE conrelid::regclass::text = ANY($1::text[])"
        " AND contype IN ('u', 'f')",
        list(tables),
    )
    backing = {row["conname"] for row in constraints}
    indexes = await connection.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1::text[])"
        " AND indexname NOT LIKE 'pk\\_%'",
        list(tables),
    )
    for row in indexes:
        if row["indexname"] not in backing:
            drop.append(f'DROP INDEX "{row["indexname"]}"')
            rebuild.append(row["indexdef"])
    # Unique constraints before foreign keys: nothing references them, but order the
    # rebuild so that indexes exist before FK validation scans.
    for row in sorted(constraints, key=lambda r: r["contype"] == "f"):
        drop.insert(0, f'ALTER TABLE {row["tbl"]} DROP CONSTRAINT "{row["conname"]}"')
        rebuild.append(f'ALTER TABLE {row["tbl"]} ADD CONSTRAINT "{row["conname"]}" {row["d"]}')
    for statement in drop:
        await connection.execute(statement)
    return rebuild
