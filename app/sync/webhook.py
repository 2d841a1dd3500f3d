"""The Pub/Sub push webhook's work: authenticate, decode, record, count.

verify -> record durably -> acknowledge; the Gmail work happens later in the sync
engine. Rejections change nothing in the database.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from app.errors import Forbidden, ServiceUnavailable, Unauthenticated
from app.google import (
    PushClaims,
    PushForbidden,
    PushTokenVerifier,
    PushUnauthenticated,
    Unavailable,
    UndecodablePush,
    decode_push_body,
)
from app.metrics import PUSHES
from app.sync.intake import NotificationRecorder, PushOutcome, RecordFailed

logger = logging.getLogger("leadmail.sync.webhook")


class RememberingVerifier:
    """A push-token verifier that remembers the tokens it accepted.

    Pub/Sub signs a token per subscription and sends it with many pushes until it
    nears expiry, so the signature check (RSA, the bulk of a push's CPU) runs once
    per token instead of once per push. An accepted token is trusted again until the
    earlier of its `exp` and `max_age` seconds; refused tokens are never remembered.
    """

    def __init__(
        self,
        verifier: PushTokenVerifier,
        *,
        max_entries: int = 256,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self._accepted: OrderedDict[str, tuple[PushClaims, float]] = OrderedDict()

    async def verify(self, authorization_header: str | None) -> PushClaims:
        now = self._clock()
        if authorization_header:
            known = self._accepted.get(authorization_header)
            if known is not None and now < known[1]:
                return known[0]
        claims = await self._verifier.verify(authorization_header)
        assert authorization_header is not None  # the verifier refuses a missing one
        until = min(claims.expires_at.timestamp(), now + self._max_age)
        self._accepted[authorization_header] = (claims, until)
        self._accepted.move_to_end(authorization_header)
        while len(self._accepted) > self._max_entries:
            self._accepted.popitem(last=False)
        return claims


class PushReceiver:
    def __init__(
        self,
        recorder: NotificationRecorder,
        verifier: PushTokenVerifier | RememberingVerifier | None,
        push_token: str | None = None,
    ) -> None:
        self._recorder = recorder
        self._verifier = verifier
        self._push_token = push_token.encode() if push_token else None

    async def receive(
        self,
        *,
        authorization: str | None,
        query_token: str | None,
        body: bytes,
        headers: Mapping[str, str],
    ) -> PushOutcome:
        """The outcome of one push; raises the AppError that is the HTTP answer when
        the push is refused (401/403) or cannot be recorded now (503)."""
        # A bearer token is always verified, whatever the query says: PUBSUB_PUSH_TOKEN
        # is for pushers that cannot sign, never a way around a failed OIDC check.
        if authorization or not self._token_matches(query_token):
            await self._authenticate(authorization)
        try:
            notification = decode_push_body(body, headers)
        except UndecodablePush as exc:
            # Retrying cannot make it decodable: acknowledge, count, move on.
            logger.warning("gmail.push.undecodable", extra={"reason": str(exc)})
            return self._count(PushOutcome.UNDECODABLE)
        try:
            result = await self._recorder.record(
                notification.email_address, notification.history_id
            )
        except RecordFailed:
            self._count(PushOutcome.UNAVAILABLE)
            raise ServiceUnavailable("the notification could not be recorded; retry") from None
        return self._count(result.outcome)

    def _token_matches(self, query_token: str | None) -> bool:
        if self._push_token is None or not query_token:
            return False
        return hmac.compare_digest(query_token.encode(), self._push_token)

    async def _authenticate(self, authorization: str | None) -> None:
        if self._verifier is None:
            self._count(PushOutcome.UNAUTHENTICATED)
            logger.error("gmail.push.no_audience_configured")
            raise Unauthenticated("push authentication is not configured (PUBSUB_PUSH_AUDIENCE)")
        try:
            await self._verifier.verify(authorization)
        except PushForbidden as exc:
            self._count(PushOutcome.FORBIDDEN)
            raise Forbidden(str(exc)) from None
        except PushUnauthenticated as exc:
            self._count(PushOutcome.UNAUTHENTICATED)
            raise Unauthenticated(str(exc)) from None
        except Unavailable as exc:
            self._count(PushOutcome.UNAVAILABLE)
            logger.error("gmail.push.certs_unavailable", extra={"error": str(exc)})
            raise ServiceUnavailable("cannot verify push tokens right now; retry") from None

    @staticmethod
    def _count(outcome: PushOutcome) -> PushOutcome:
        PUSHES.labels(outcome.value).inc()
        return outcome
