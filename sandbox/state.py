"""The one object that holds the sandbox's state; every change happens under its lock."""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass, field

from sandbox.calls import CallLog
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.faults import FaultBook, UserQuota
from sandbox.keys import KeyRing
from sandbox.mailstore import Mailbox, MailStore
from sandbox.oauth import OAuthState
from sandbox.pubsub import PushService


@dataclass
class ConsentSettings:
    """How the consent page answers when nobody clicks: the test's switch (§8 item 2)."""

    auto: bool
    decision: str = "allow"
    email: str | None = None
    # None grants everything asked for; a list grants only those (granular consent).
    scopes: list[str] | None = None


@dataclass
class AttachmentRef:
    email: str
    message_id: str
    part_id: str
    minted_at: float


@dataclass
class Sandbox:
    config: SandboxConfig
    clock: Clock = field(init=False)
    rng: random.Random = field(init=False)
    lock: asyncio.Lock = field(init=False)
    keys: KeyRing = field(init=False)
    oauth: OAuthState = field(init=False)
    mail: MailStore = field(init=False)
    push: PushService = field(init=False)
    faults: FaultBook = field(init=False)
    quota: UserQuota = field(init=False)
    calls: CallLog = field(init=False)
    consent: ConsentSettings = field(init=False)
    attachments: dict[str, AttachmentRef] = field(init=False)
    retry_after_header: bool = field(init=False)
    history_retention: float = field(init=False)
    attachment_id_ttl: float = field(init=False)
    base_url: str = ""
    smtp_port: int | None = None

    def __post_init__(self) -> None:
        config = self.config
        self.clock = Clock(config.clock_speed)
        self.rng = random.Random(config.seed)
        self.lock = asyncio.Lock()
        self.keys = KeyRing()
        self.oauth = OAuthState(config, self.clock)
        self.mail = MailStore(self.clock, self.rng, config.messages_only_record_rate)
        self.push = PushService(config, self.clock, self.keys, self.rng)
        self.mail.add_listener(self._on_change)
        self.faults = FaultBook()
        self.quota = UserQuota(
            self.clock,
            config.user_quota_per_minute,
            config.rate_limit_status,
            config.retry_after_header,
        )
        self.calls = CallLog()
        self.consent = ConsentSettings(auto=config.auto_consent)
        self.attachments = {}
        self.retry_after_header = config.retry_after_header
        self.history_retention = config.history_retention
        self.attachment_id_ttl = config.attachment_id_ttl

    def _on_change(self, mailbox: Mailbox, history_id: int, labels: list[str]) -> None:
        self.push.on_change(mailbox.email, history_id, labels)

    def mint_attachment_id(self, email: str, message_id: str, part_id: str) -> str:
        token = "ANGjdJ" + secrets.token_urlsafe(96)
        self.attachments[token] = AttachmentRef(email, message_id, part_id, self.clock.now())
        return token

    def reset(self) -> None:
        """Forget every account, token, message, fault, log and runtime setting: back to the
        configuration the sandbox started with (the first signing key is kept)."""
        self.clock.reset(self.config.clock_speed)
        self.oauth = OAuthState(self.config, self.clock)
        self.mail.reset()
        self.push.reset()
        self.faults.clear()
        self.quota = UserQuota(
            self.clock,
            self.config.user_quota_per_minute,
            self.config.rate_limit_status,
            self.config.retry_after_header,
        )
        self.calls.clear()
        self.attachments.clear()
        self.keys.reset()
        self.consent = ConsentSettings(auto=self.config.auto_consent)
        self.retry_after_header = self.config.retry_after_header
        self.history_retention = self.config.history_retention
        self.attachment_id_ttl = self.config.attachment_id_ttl
