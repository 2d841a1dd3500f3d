"""How the sync reaches a mailbox's Gmail: the interface MailboxAccess provides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from app.google import GmailSession
from app.mailboxes.models import Mailbox

T = TypeVar("T")


class GmailAccess(Protocol):
    """Runs `fn` with a Gmail session for the mailbox, refreshing its access token as
    needed; a refresh refused with invalid_grant disconnects the mailbox and raises."""

    async def call(self, mailbox: Mailbox, fn: Callable[[GmailSession], Awaitable[T]]) -> T: ...
