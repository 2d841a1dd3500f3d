"""The request log and per-method call and quota-unit counts (§3.4, new regime)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

# Units per call, new regime (projects created on or after 1 May 2026).
QUOTA_UNITS: dict[str, int] = {
    "gmail.users.getProfile": 1,
    "gmail.users.history.list": 2,
    "gmail.users.messages.list": 5,
    "gmail.users.messages.get": 20,
    "gmail.users.messages.attachments.get": 20,
    "gmail.users.messages.modify": 5,
    "gmail.users.threads.get": 40,
    "gmail.users.threads.list": 10,
    "gmail.users.messages.send": 100,
    "gmail.users.watch": 100,
    "gmail.users.stop": 50,
    "gmail.users.labels.list": 1,
}


@dataclass(frozen=True)
class CallRecord:
    method: str
    path: str
    query: str
    status: int
    gmail_method: str | None
    account: str | None

    def json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
        }
        if self.gmail_method:
            item["gmail_method"] = self.gmail_method
        if self.account:
            item["account"] = self.account
        return item


class CallLog:
    def __init__(self) -> None:
        self.items: list[CallRecord] = []
        self.calls: Counter[str] = Counter()
        self.units: Counter[str] = Counter()
        self.units_by_account: Counter[str] = Counter()

    def add(self, record: CallRecord) -> None:
        self.items.append(record)
        if record.gmail_method:
            self.calls[record.gmail_method] += 1
            cost = QUOTA_UNITS.get(record.gmail_method, 0)
            self.units[record.gmail_method] += cost
            if record.account:
                self.units_by_account[record.account] += cost

    def clear(self) -> None:
        self.items.clear()
        self.calls.clear()
        self.units.clear()
        self.units_by_account.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "units": dict(self.units),
            "units_by_account": dict(self.units_by_account),
            "total_calls": sum(self.calls.values()),
            "total_units": sum(self.units.values()),
        }
