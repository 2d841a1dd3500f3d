"""Streaming pull: Gmail notifications from a Pub/Sub subscription into the service's intake.

The pull twin of the push webhook, for replicas that share one subscription
(``PUBSUB_SUBSCRIPTION``). google-cloud-pubsub calls back in its own threads; each
message is handed to the service's event loop, where the same intake as the webhook
records it, and the message is acked only once that returned (the notification is
durably recorded), nacked when it raised (Pub/Sub redelivers, per the subscription's
retry policy). Data that is not a Gmail notification is acked and counted: redelivering
it could never help.

At most ``max_messages`` notifications are in flight per process (flow control); the
client library extends their leases while the intake runs. A stream that fails (a
missing subscription, a permission error, the emulator restarting) is reopened with
exponential backoff; :meth:`PullSubscriber.stop` lets in-flight intakes finish so their
acks go out, then closes the stream and the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from google.cloud import pubsub_v1

from app.google.errors import UndecodablePush
from app.google.pubsub import GmailNotification, decode_pubsub_data
from app.metrics import PUSHES
from app.pubsub.clients import subscriber_client, validate_subscription_path

__all__ = ["Intake", "PullSubscriber"]

logger = logging.getLogger("leadmail.pubsub")

Intake = Callable[[GmailNotification], Awaitable[None]]
"""Durably records one notification, or raises (the message is then redelivered)."""


class PullSubscriber:
    """One streaming-pull subscriber, driven from an asyncio event loop.

    ``emulator_host`` (``HOST:PORT``) talks to a Pub/Sub emulator; without it the client
    library's own rules apply (``PUBSUB_EMULATOR_HOST``, else Google with Application
    Default Credentials). ``intake_timeout_seconds`` bounds one intake: a hung database
    call becomes a nack instead of a message leased forever.
    """

    def __init__(
        self,
        subscription: str,
        intake: Intake,
        *,
        emulator_host: str | None = None,
        max_messages: int = 64,
        max_bytes: int = 10 * 1024 * 1024,
        max_lease_seconds: int = 600,
        intake_timeout_seconds: float = 60.0,
        shutdown_timeout_seconds: float = 10.0,
        min_restart_delay_seconds: float = 1.0,
        max_restart_delay_seconds: float = 60.0,
    ) -> None:
        self._subscription = validate_subscription_path(subscription)
        self._intake = intake
        self._emulator_host = emulator_host
        self._flow_control = pubsub_v1.types.FlowControl(
            max_messages=max_messages,
            max_bytes=max_bytes,
            max_lease_duration=max_lease_seconds,
        )
        self._intake_timeout = intake_timeout_seconds
        self._shutdown_timeout = shutdown_timeout_seconds
        self._min_restart_delay = min_restart_delay_seconds
        self._max_restart_delay = max_restart_delay_seconds

        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        # Guards the hand-over from the library's threads to the loop against stop():
        # a message is either in ``_in_flight`` before stop() looks, or nacked.
        self._lock = threading.Lock()
        self._stopping = False
        self._in_flight: set[concurrent.futures.Future[None]] = set()
        self._received_since_start = False

    @property
    def subscription(self) -> str:
        return self._subscription

    @property
    def running(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done()

    def start(self) -> None:
        """Open the stream; call from the event loop that runs the intake."""
        if self._supervisor is not None:
            raise RuntimeError("a PullSubscriber starts once")
        self._loop = asyncio.get_running_loop()
        self._client = subscriber_client(self._emulator_host)
        self._supervisor = asyncio.create_task(self._supervise(), name="pubsub-pull")
        logger.info("pubsub.pull.started", extra={"subscription": self._subscription})

    async def stop(self) -> None:
        """Stop taking messages, let in-flight intakes finish, close the stream and client.

        Idempotent. Intakes still running after ``shutdown_timeout_seconds`` are cancelled
        and their messages nacked; messages the library had not handed over yet are nacked
        by the library.
        """
        with self._lock:
            if self._stopping:
                pending: set[concurrent.futures.Future[None]] = set()
            else:
                self._stopping = True
                pending = set(self._in_flight)
        self._stopped.set()
        if pending:
            waiting = [asyncio.wrap_future(future) for future in pending]
            _, late = await asyncio.wait(waiting, timeout=self._shutdown_timeout)
            for future in late:
                future.cancel()
            if late:
                await asyncio.wait(late)
        if self._supervisor is not None:
            await self._supervisor
        if self._client is not None:
            self._client.close()
            self._client = None
            logger.info("pubsub.pull.stopped", extra={"subscription": self._subscription})

    async def _supervise(self) -> None:
        delay = self._min_restart_delay
        while not self._stopping:
            self._received_since_start = False
            error = await self._run_stream()
            if self._stopping:
                return
            if self._received_since_start:
                delay = self._min_restart_delay
            logger.warning(
                "pubsub.pull.stream_failed",
                extra={
                    "subscription": self._subscription,
                    "error": repr(error),
                    "retry_in_seconds": delay,
                },
            )
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=delay)
            except TimeoutError:
                delay = min(delay * 2, self._max_restart_delay)

    async def _run_stream(self) -> BaseException | None:
        """One streaming pull, until it fails (its error) or stop() ends it (``None``)."""
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        def on_done(_: object) -> None:  # in a library thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(ended.set)

        stream = self._client.subscribe(
            self._subscription,
            self._on_message,
            flow_control=self._flow_control,
            # The callback only hands over to the loop, so waiting for it costs nothing,
            # and acks issued while the stream shuts down still reach Pub/Sub.
            await_callbacks_on_shutdown=True,
        )
        stream.add_done_callback(on_done)
        stopping = asyncio.create_task(self._stopped.wait())
        ending = asyncio.create_task(ended.wait())
        try:
            await asyncio.wait({stopping, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if ended.is_set():
            error: BaseException | None = stream.exception()
            return error
        stream.cancel()  # only starts the shutdown, in a library thread
        await ending
        return None

    def _on_message(self, message: Any) -> None:
        """Runs in a library thread: decode, then hand over to the event loop."""
        self._received_since_start = True
        try:
            notification = decode_pubsub_data(
                message.data, message_id=message.message_id, publish_time=message.publish_time
            )
        except UndecodablePush as exc:
            PUSHES.labels(outcome="undecodable").inc()
            logger.warning(
                "pubsub.pull.undecodable",
                extra={"message_id": message.message_id, "reason": str(exc)},
            )
            message.ack()
            return
        loop = self._loop
        assert loop is not None
        with self._lock:
            if self._stopping:
                message.nack()
                return
            try:
                future = asyncio.run_coroutine_threadsafe(self._take(message, notification), loop)
            except RuntimeError:  # the loop is closed: the process is going away
                message.nack()
                return
            self._in_flight.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    async def _take(self, message: Any, notification: GmailNotification) -> None:
        try:
            await asyncio.wait_for(self._intake(notification), timeout=self._intake_timeout)
        except asyncio.CancelledError:
            message.nack()
            raise
        except Exception as exc:
            PUSHES.labels(outcome="unavailable").inc()
            logger.warning(
                "pubsub.pull.intake_failed",
                extra={
                    "message_id": message.message_id,
                    "email_address": notification.email_address,
                    "error": repr(exc),
                },
            )
            message.nack()
        else:
            message.ack()
