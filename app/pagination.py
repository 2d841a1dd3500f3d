"""Opaque keyset cursors for newest-first lists: (created_at, id) of the last item."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidInput

T = TypeVar("T")


class Keyed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


R = TypeVar("R", bound=Keyed)
S = TypeVar("S", bound=Select[Any])


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, item_id = json.loads(raw)
        return datetime.fromisoformat(created), str(item_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not a value this API returned") from exc


def page_of(rows: Sequence[R], limit: int, to_item: Callable[[R], T]) -> Page[T]:
    """Build a page from up to `limit + 1` rows: the extra row only says there is more."""
    items = [to_item(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return Page[T](items=items, next_cursor=next_cursor)


def newest_first(
    query: S,
    moment: InstrumentedAttribute[datetime],
    key: InstrumentedAttribute[str],
    after: tuple[datetime, str] | None,
    limit: int,
) -> S:
    """Order by (moment, key) descending and start after a decoded cursor; the pair is
    unique, so no row is skipped or repeated between pages."""
    if after is not None:
        at, item_id = after
        query = query.where(or_(moment < at, (moment == at) & (key < item_id)))
    return query.order_by(moment.desc(), key.desc()).limit(limit)
