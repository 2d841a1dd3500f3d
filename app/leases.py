"""Database leases: one holder per named duty at a time, across replicas.

A lease expires on its own, so a crashed holder blocks nobody for longer than its
time to live. Taking one is a single conditional UPDATE (or INSERT), which both
SQLite and PostgreSQL execute atomically.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String, delete, insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def acquire_lease(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, holder: str, ttl: timedelta
) -> bool:
    """Take or extend `name` for `holder`; False when someone else holds a live lease."""
    now = utcnow()
    async with sessionmaker() as session:
        result = await session.execute(
            update(Lease)
            .where(Lease.name == name)
            .where(or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            await session.commit()
            return True
        try:
            await session.execute(
                insert(Lease).values(name=name, holder=holder, expires_at=now + ttl)
            )
            await session.commit()
        except IntegrityError:
            await session.rollback()
            return False
        return True


async def release_lease(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, holder: str
) -> None:
    async with sessionmaker() as session:
        await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
        await session.commit()
