"""Gmail watches and Cloud Pub/Sub push delivery with OIDC tokens (§2.8, §4, §5)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.clock import Clock, rfc3339
from sandbox.config import SandboxConfig
from sandbox.emulator import EmulatorPublisher
from sandbox.errors import GoogleApiError
from sandbox.keys import KeyRing, generate_key, sign_with

logger = logging.getLogger("sandbox.pubsub")

ACK_STATUSES = {102, 200, 201, 202, 204}
USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"
PUSH_FAULT_KINDS = {"drop", "duplicate", "delay", "reorder"}
_TOPIC = re.compile(r"^projects/([^/]+)/topics/([^/]+)$")


@dataclass
class Watch:
    topic: str
    label_ids: list[str]
    behavior: str
    expiration: float
    last_notified: float | None = None

    def wants(self, labels: list[str]) -> bool:
        if not self.label_ids:
            return True
        touches = any(label in self.label_ids for label in labels)
        return touches if self.behavior == "include" else not touches


@dataclass
class Delivery:
    at: float
    status: int | None
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "status": self.status, "error": self.error}


@dataclass
class Notification:
    seq: int
    message_id: str
    email: str
    history_id: int
    publish_time: float
    state: str = "pending"
    fault: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "message_id": self.message_id,
            "email_address": self.email,
            "history_id": str(self.history_id),
            "publish_time": rfc3339(self.publish_time),
            "state": self.state,
            "fault": self.fault,
            "deliveries": [d.json() for d in self.deliveries],
        }


@dataclass
class PushFault:
    kind: str
    remaining: int
    delay: float = 2.0
    email: str | None = None  # only this mailbox's notifications; None: any


class PushService:
    """Generates at most one notification per second per watched mailbox and pushes it."""

    def __init__(self, config: SandboxConfig, clock: Clock, keys: KeyRing, rng: random.Random):
        self._config = config
        self._clock = clock
        self._keys = keys
        self._rng = rng
        self.endpoint = config.push_endpoint
        self.audience = config.push_audience
        self.service_account = config.push_service_account
        self.subscription = config.push_subscription
        self.wrapped = config.push_wrapped
        self.history_id_as_string = config.push_history_id_as_string
        self.min_interval = config.push_min_interval
        self.ack_deadline = config.push_ack_deadline
        self.max_attempts = config.push_max_attempts
        self.retry_backoff = config.push_retry_backoff
        self.retry_backoff_max = config.push_retry_backoff_max
        self.project = config.project
        self.watch_ttl = config.watch_ttl
        self.any_topic = True
        self.topics: dict[str, bool] = {}
        self.watches: dict[str, Watch] = {}
        self.notifications: list[Notification] = []
        self.dropped: Counter[str] = Counter()
        self.faults: list[PushFault] = []
        self._held: Notification | None = None
        self._held_release: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._next_message_id = rng.randint(10**15, 9 * 10**15)
        # With a Pub/Sub emulator, notifications are published there instead of pushed.
        self.emulator = (
            EmulatorPublisher(config.pubsub_emulator_host) if config.pubsub_emulator_host else None
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None

    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._held_release is not None:
            self._held_release.cancel()
        self._held = None
        self.watches.clear()
        self.notifications.clear()
        self.dropped.clear()
        self.faults.clear()
        self.topics.clear()
        self.any_topic = True
        self.endpoint = self._config.push_endpoint
        self.audience = self._config.push_audience
        self.service_account = self._config.push_service_account
        self.wrapped = self._config.push_wrapped
        self.history_id_as_string = self._config.push_history_id_as_string
        self.min_interval = self._config.push_min_interval
        self.subscription = self._config.push_subscription
        self.ack_deadline = self._config.push_ack_deadline
        self.max_attempts = self._config.push_max_attempts
        self.retry_backoff = self._config.push_retry_backoff
        self.retry_backoff_max = self._config.push_retry_backoff_max
        self.watch_ttl = self._config.watch_ttl

    def settings(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "audience": self.effective_audience(),
            "service_account": self.service_account,
            "subscription": self.subscription,
            "wrapped": self.wrapped,
            "history_id_as_string": self.history_id_as_string,
            "min_interval": self.min_interval,
            "ack_deadline": self.ack_deadline,
            "max_attempts": self.max_attempts,
            "retry_backoff": self.retry_backoff,
            "retry_backoff_max": self.retry_backoff_max,
            "project": self.project,
            "any_topic": self.any_topic,
            "topics": [{"name": n, "publish_granted": g} for n, g in self.topics.items()],
            "pubsub_emulator_host": self.emulator.host if self.emulator else None,
        }

    def effective_audience(self) -> str | None:
        return self.audience or self.endpoint

    # --- topics and watches -------------------------------------------------------------------

    def check_topic(self, topic: str) -> None:
        match = _TOPIC.match(topic or "")
        if match is None or match.group(1) != self.project:
            raise GoogleApiError(
                400,
                f"Invalid topicName does not match projects/{self.project}/topics/*",
                "invalidArgument",
            )
        if self.emulator is not None:
            self.emulator.check_topic(topic)
            return
        prefix = f"Error sending test message to Cloud PubSub {topic} : "
        if not self.any_topic and topic not in self.topics:
            raise GoogleApiError(
                404,
                f"{prefix}Resource not found (resource={match.group(2)}).",
                "notFound",
            )
        if not self.topics.get(topic, True):
            raise GoogleApiError(
                403, f"{prefix}User not authorized to perform this action.", "forbidden"
            )

    def watch(
        self, email: str, topic: str, label_ids: list[str], behavior: str, history_id: int
    ) -> Watch:
        self.check_topic(topic)
        watch = Watch(
            topic=topic,
            label_ids=list(label_ids),
            behavior=behavior,
            expiration=self._clock.now() + self.watch_ttl,
        )
        self.watches[email] = watch
        # A successful watch publishes one notification at once (§2.8).
        watch.last_notified = self._clock.now()
        self._publish(email, history_id)
        return watch

    def stop(self, email: str) -> None:
        self.watches.pop(email, None)

    def on_change(self, email: str, history_id: int, labels: list[str]) -> None:
        watch = self.watches.get(email)
        now = self._clock.now()
        if watch is None:
            return
        if now >= watch.expiration:
            self.dropped["watch_expired"] += 1
            return
        if not watch.wants(labels):
            self.dropped["label_filter"] += 1
            return
        if watch.last_notified is not None and now - watch.last_notified < self.min_interval:
            # Gmail drops notifications above one per second per user; it does not queue them.
            self.dropped["rate"] += 1
            return
        watch.last_notified = now
        self._publish(email, history_id)

    # --- notifications and delivery -------------------------------------------------------------

    def _publish(self, email: str, history_id: int) -> None:
        self._next_message_id += self._rng.randint(1, 5000)
        notification = Notification(
            seq=len(self.notifications) + 1,
            message_id=str(self._next_message_id),
            email=email,
            history_id=history_id,
            publish_time=self._clock.now(),
        )
        self.notifications.append(notification)
        if self.emulator is not None:
            self._spawn(self._publish_to_emulator(notification, self.watches[email].topic))
            return
        fault = self._take_fault(email)
        held = self._held
        if fault is not None:
            notification.fault = fault.kind
        if fault is not None and fault.kind == "drop":
            notification.state = "dropped"
            return
        if fault is not None and fault.kind == "reorder" and held is None:
            notification.state = "held"
            self._held = notification
            loop = asyncio.get_running_loop()
            self._held_release = loop.call_later(5.0, self._release_held)
            return
        first_done = asyncio.Event()
        delay = fault.delay if fault is not None and fault.kind == "delay" else 0.0
        self._spawn(self._deliver(notification, delay=delay, done=first_done))
        if fault is not None and fault.kind == "duplicate":
            self._spawn(self._deliver(notification, wait_for=first_done, duplicate=True))
        if held is not None:
            self._held = None
            if self._held_release is not None:
                self._held_release.cancel()
            held.state = "pending"
            self._spawn(self._deliver(held, wait_for=first_done))

    async def _publish_to_emulator(self, notification: Notification, topic: str) -> None:
        assert self.emulator is not None
        try:
            notification.message_id = await self.emulator.publish(topic, self.data(notification))
        except Exception as exc:
            notification.state = "failed"
            notification.deliveries.append(Delivery(time.time(), None, f"publish: {exc}"))
            logger.warning("sandbox.emulator.publish_failed", extra={"error": str(exc)})
            return
        notification.state = "published"

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.state = "pending"
            self._spawn(self._deliver(held))

    def _take_fault(self, email: str) -> PushFault | None:
        fault = next((f for f in self.faults if f.email in (None, email)), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.faults.remove(fault)
        return fault

    def add_fault(
        self, kind: str, count: int, delay: float = 2.0, email: str | None = None
    ) -> None:
        if kind not in PUSH_FAULT_KINDS:
            raise ValueError(f"unknown push fault {kind!r}; one of {sorted(PUSH_FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self.faults.append(PushFault(kind, count, delay, email.lower() if email else None))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def data(self, notification: Notification) -> bytes:
        history: int | str = notification.history_id
        if self.history_id_as_string:
            history = str(history)
        return json.dumps({"emailAddress": notification.email, "historyId": history}).encode()

    def _request(self, notification: Notification) -> tuple[dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        audience = self.effective_audience()
        if audience:
            headers["Authorization"] = f"Bearer {self.push_token(audience)}"
        data = self.data(notification)
        if not self.wrapped:
            headers["x-goog-pubsub-message-id"] = notification.message_id
            headers["x-goog-pubsub-publish-time"] = rfc3339(notification.publish_time)
            headers["x-goog-pubsub-subscription-name"] = self.subscription
            return headers, data
        published = rfc3339(notification.publish_time)
        envelope = {
            "message": {
                "data": base64.b64encode(data).decode("ascii"),
                "messageId": notification.message_id,
                "message_id": notification.message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": self.subscription,
        }
        return headers, json.dumps(envelope).encode()

    async def _deliver(
        self,
        notification: Notification,
        *,
        delay: float = 0.0,
        wait_for: asyncio.Event | None = None,
        done: asyncio.Event | None = None,
        duplicate: bool = False,
    ) -> None:
        try:
            if wait_for is not None:
                await wait_for.wait()
            if delay:
                await asyncio.sleep(delay)
            await self._attempts(notification, duplicate=duplicate, done=done)
        finally:
            if done is not None:
                done.set()

    async def _attempts(
        self, notification: Notification, *, duplicate: bool, done: asyncio.Event | None
    ) -> None:
        for attempt in range(1, self.max_attempts + 1):
            endpoint = self.endpoint
            if endpoint is None:
                if not duplicate:
                    notification.state = "no_endpoint"
                return
            headers, body = self._request(notification)
            status: int | None = None
            error: str | None = None
            try:
                response = await self._http().post(
                    endpoint, content=body, headers=headers, timeout=self.ack_deadline
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            notification.deliveries.append(Delivery(time.time(), status, error))
            if done is not None:
                done.set()
            if status in ACK_STATUSES:
                notification.state = "acked"
                return
            notification.state = "retrying"
            if attempt < self.max_attempts:
                backoff = min(self.retry_backoff * 2 ** (attempt - 1), self.retry_backoff_max)
                await asyncio.sleep(backoff)
        # What a dead-letter policy would take: no more attempts.
        notification.state = "failed"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    # --- tokens -------------------------------------------------------------------------------

    def claims(self, audience: str) -> dict[str, Any]:
        # Verifiers use real time, so the token does too, whatever the sandbox clock says.
        issued = int(time.time())
        subject = str(int(hashlib.sha256(self.service_account.encode()).hexdigest(), 16))[:21]
        return {
            "aud": audience,
            "azp": subject,
            "email": self.service_account,
            "email_verified": True,
            "exp": issued + 3600,
            "iat": issued,
            "iss": "https://accounts.google.com",
            "sub": subject,
        }

    def push_token(self, audience: str) -> str:
        return self._keys.sign(self.claims(audience))

    def forge_token(
        self, audience: str | None, overrides: dict[str, Any], remove: list[str], key: str
    ) -> str:
        """Tokens with chosen defects, for tests of a push receiver (§8 item 25)."""
        claims = self.claims(audience or self.effective_audience() or "")
        claims.update(overrides)
        for name in remove:
            claims.pop(name, None)
        if key == "unknown":
            return sign_with(generate_key(), claims)
        token = self._keys.sign(claims)
        if key == "bad_signature":
            head, payload, signature = token.split(".")
            flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
            return f"{head}.{payload}.{flipped}"
        return token
