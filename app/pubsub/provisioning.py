"""Provision what Gmail push needs in Pub/Sub, idempotently (GOOGLE.md §4 "one-time setup").

1. the topic that ``users.watch`` names (``PUBSUB_TOPIC``);
2. ``roles/pubsub.publisher`` on it for ``gmail-api-push@system.gserviceaccount.com``, so
   Gmail may publish (where IAM exists: the emulator has none, and the step says so);
3. optionally a dead-letter topic, with the rights the Pub/Sub service agent needs to use it;
4. the subscription: push (endpoint, OIDC service account and audience) or pull.

:func:`provision` converges on the desired state and reports one :class:`Step` per
resource; running it again reports every step ``unchanged``. A subscription that exists
with other settings is updated in place (its topic, which Pub/Sub cannot change, is the
exception: that is a :class:`ProvisioningError`). The calls are blocking gRPC calls, made
with the clients from :mod:`app.pubsub.clients`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from google.api_core import exceptions as api_exceptions
from google.cloud.pubsub_v1 import types
from google.iam.v1 import policy_pb2

from app.pubsub.clients import validate_subscription_path, validate_topic_path

__all__ = [
    "GMAIL_PUSH_MEMBER",
    "DeadLetter",
    "Outcome",
    "ProvisioningError",
    "PushEndpoint",
    "RetryPolicy",
    "SetupSpec",
    "Step",
    "SubscriptionSpec",
    "ensure_binding",
    "mask_secrets",
    "provision",
    "with_push_token",
]

GMAIL_PUSH_MEMBER = "serviceAccount:gmail-api-push@system.gserviceaccount.com"
PUBLISHER_ROLE = "roles/pubsub.publisher"
SUBSCRIBER_ROLE = "roles/pubsub.subscriber"
_SET_POLICY_ATTEMPTS = 3
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&#]*")


class ProvisioningError(Exception):
    """The desired state cannot be reached; the message says what to do."""


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did to one resource; ``detail`` never contains a secret."""

    resource: str
    what: str
    outcome: Outcome
    detail: str = ""

    def __str__(self) -> str:
        line = f"{self.what} {self.resource}: {self.outcome}"
        return f"{line} ({self.detail})" if self.detail else line


@dataclass(frozen=True, slots=True)
class PushEndpoint:
    """Where Pub/Sub pushes, and how it authenticates.

    ``oidc_service_account`` makes Pub/Sub sign each push with an OIDC token for
    ``audience`` (Google defaults it to the endpoint; leadmail checks it against
    ``PUBSUB_PUSH_AUDIENCE``, so it is always set explicitly here). Without one, the
    endpoint must carry ``?token=`` (``PUBSUB_PUSH_TOKEN``): see :func:`with_push_token`.
    """

    url: str
    oidc_service_account: str | None = None
    audience: str | None = None

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in {"http", "https"} or not urlsplit(self.url).netloc:
            raise ValueError(f"push endpoint {mask_secrets(self.url)!r} is not an http(s) URL")
        if self.audience and not self.oidc_service_account:
            raise ValueError("a push audience needs an OIDC service account to sign for it")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential redelivery delay; Pub/Sub's own default, unset, retries immediately."""

    minimum_backoff_seconds: int = 10
    maximum_backoff_seconds: int = 600

    def __post_init__(self) -> None:
        if not 0 <= self.minimum_backoff_seconds <= self.maximum_backoff_seconds <= 600:
            raise ValueError("retry backoff must satisfy 0 <= minimum <= maximum <= 600 seconds")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Messages nacked ``max_delivery_attempts`` times go to ``topic``.

    ``project_number`` names the Pub/Sub service agent
    (``service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com``), which needs publish
    rights on the dead-letter topic and subscribe rights on the subscription; without
    it those grants are skipped and reported.
    """

    topic: str
    max_delivery_attempts: int = 5
    project_number: str | None = None

    def __post_init__(self) -> None:
        validate_topic_path(self.topic)
        if not 5 <= self.max_delivery_attempts <= 100:
            raise ValueError("max delivery attempts must be between 5 and 100")
        if self.project_number is not None and not self.project_number.isdigit():
            raise ValueError("a project number is all digits (not the project id)")


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A push subscription when ``push`` is set, else a pull subscription."""

    name: str
    push: PushEndpoint | None = None
    ack_deadline_seconds: int = 30
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    dead_letter: DeadLetter | None = None
    # Pub/Sub deletes a subscription after 31 idle days unless told otherwise; a quiet
    # staging system would then lose its notifications silently.
    never_expire: bool = True

    def __post_init__(self) -> None:
        validate_subscription_path(self.name)
        if not 10 <= self.ack_deadline_seconds <= 600:
            raise ValueError("the ack deadline must be between 10 and 600 seconds")


@dataclass(frozen=True, slots=True)
class SetupSpec:
    topic: str
    subscription: SubscriptionSpec | None = None
    grant_gmail_publisher: bool = True

    def __post_init__(self) -> None:
        validate_topic_path(self.topic)


def provision(spec: SetupSpec, publisher: Any, subscriber: Any, *, emulator: bool) -> list[Step]:
    """Bring Pub/Sub to ``spec``; one :class:`Step` per resource, in order.

    ``emulator`` says that IAM does not exist, so grants are reported as skipped.
    Raises :class:`ProvisioningError` for refusals (permissions, an immutable field).
    """
    try:
        return _provision(spec, publisher, subscriber, emulator=emulator)
    except api_exceptions.PermissionDenied as exc:
        raise ProvisioningError(
            f"permission denied: {exc.message} (the caller needs roles/pubsub.admin on the "
            "project, and iam.serviceAccounts.actAs on a push OIDC service account)"
        ) from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise ProvisioningError(f"Pub/Sub refused: {exc}") from exc


def _provision(spec: SetupSpec, publisher: Any, subscriber: Any, *, emulator: bool) -> list[Step]:
    existing = None
    if spec.subscription is not None:
        # Checked before anything is created, so a refusal leaves Pub/Sub as it was.
        existing = _existing_subscription(subscriber, spec.topic, spec.subscription.name)
    steps = [_ensure_topic(publisher, spec.topic)]
    if spec.grant_gmail_publisher:
        steps.append(
            _grant(
                publisher,
                spec.topic,
                PUBLISHER_ROLE,
                GMAIL_PUSH_MEMBER,
                emulator=emulator,
                why="so Gmail can publish notifications",
            )
        )
    subscription = spec.subscription
    if subscription is None:
        return steps
    dead_letter = subscription.dead_letter
    if dead_letter is not None:
        steps.append(_ensure_topic(publisher, dead_letter.topic, what="dead-letter topic"))
    steps.append(_ensure_subscription(subscriber, spec.topic, subscription, existing))
    if dead_letter is not None:
        steps.extend(_dead_letter_grants(publisher, subscriber, subscription, emulator=emulator))
    return steps


def _ensure_topic(publisher: Any, topic: str, *, what: str = "topic") -> Step:
    try:
        publisher.create_topic(request={"name": topic})
    except api_exceptions.AlreadyExists:
        return Step(topic, what, Outcome.UNCHANGED, "exists")
    return Step(topic, what, Outcome.CREATED)


def _grant(client: Any, resource: str, role: str, member: str, *, emulator: bool, why: str) -> Step:
    what = f"grant {role} to {member} on"
    if emulator:
        return Step(resource, what, Outcome.SKIPPED, "the Pub/Sub emulator has no IAM")
    try:
        changed = ensure_binding(client, resource, role, member)
    except api_exceptions.MethodNotImplemented:
        return Step(resource, what, Outcome.SKIPPED, "this Pub/Sub endpoint has no IAM")
    return Step(resource, what, Outcome.UPDATED if changed else Outcome.UNCHANGED, why)


def ensure_binding(client: Any, resource: str, role: str, member: str) -> bool:
    """Add ``member`` to ``role`` in ``resource``'s IAM policy; ``True`` when it changed.

    Read-modify-write with the policy's etag, so a concurrent edit is never overwritten:
    Pub/Sub answers ABORTED and the edit is redone on the fresh policy.
    """
    for attempt in range(_SET_POLICY_ATTEMPTS):
        policy: policy_pb2.Policy = client.get_iam_policy(request={"resource": resource})
        binding = next(
            (b for b in policy.bindings if b.role == role and not b.HasField("condition")), None
        )
        if binding is not None and member in binding.members:
            return False
        if binding is None:
            binding = policy.bindings.add(role=role)
        binding.members.append(member)
        try:
            client.set_iam_policy(request={"resource": resource, "policy": policy})
        except api_exceptions.Aborted:
            if attempt == _SET_POLICY_ATTEMPTS - 1:
                raise
            continue
        return True
    raise AssertionError("unreachable")


def _dead_letter_grants(
    publisher: Any, subscriber: Any, spec: SubscriptionSpec, *, emulator: bool
) -> list[Step]:
    dead_letter = spec.dead_letter
    assert dead_letter is not None
    targets = (
        (publisher, dead_letter.topic, PUBLISHER_ROLE),
        (subscriber, spec.name, SUBSCRIBER_ROLE),
    )
    if emulator or dead_letter.project_number is None:
        detail = (
            "the Pub/Sub emulator has no IAM"
            if emulator
            else "pass the project number to grant it to "
            "service-<project-number>@gcp-sa-pubsub.iam.gserviceaccount.com"
        )
        return [
            Step(resource, f"grant {role} to the Pub/Sub service agent on", Outcome.SKIPPED, detail)
            for _, resource, role in targets
        ]
    agent = (
        f"serviceAccount:service-{dead_letter.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
    )
    return [
        _grant(client, resource, role, agent, emulator=False, why="so Pub/Sub can dead-letter")
        for client, resource, role in targets
    ]


# The fields :func:`_ensure_subscription` manages; everything else is left as found.
_MANAGED_FIELDS = (
    "push_config",
    "ack_deadline_seconds",
    "retry_policy",
    "dead_letter_policy",
    "expiration_policy",
)


def _desired_subscription(topic: str, spec: SubscriptionSpec) -> Any:
    subscription = types.Subscription(
        name=spec.name, topic=topic, ack_deadline_seconds=spec.ack_deadline_seconds
    )
    if spec.push is not None:
        subscription.push_config = types.PushConfig(push_endpoint=spec.push.url)
        if spec.push.oidc_service_account:
            subscription.push_config.oidc_token = types.PushConfig.OidcToken(
                service_account_email=spec.push.oidc_service_account,
                audience=spec.push.audience or spec.push.url,
            )
    if spec.retry is not None:
        subscription.retry_policy = types.RetryPolicy(
            minimum_backoff={"seconds": spec.retry.minimum_backoff_seconds},
            maximum_backoff={"seconds": spec.retry.maximum_backoff_seconds},
        )
    if spec.dead_letter is not None:
        subscription.dead_letter_policy = types.DeadLetterPolicy(
            dead_letter_topic=spec.dead_letter.topic,
            max_delivery_attempts=spec.dead_letter.max_delivery_attempts,
        )
    if spec.never_expire:
        # Present but without a ttl: "never expires" (an absent policy means 31 days).
        subscription.expiration_policy = types.ExpirationPolicy()
    return subscription


def _existing_subscription(subscriber: Any, topic: str, name: str) -> Any | None:
    try:
        existing = subscriber.get_subscription(request={"subscription": name})
    except api_exceptions.NotFound:
        return None
    if existing.topic != topic:
        raise ProvisioningError(
            f"subscription {name} exists on topic {existing.topic}, and Pub/Sub cannot "
            "move a subscription to another topic: delete it first or choose another name"
        )
    return existing


def _ensure_subscription(
    subscriber: Any, topic: str, spec: SubscriptionSpec, existing: Any | None
) -> Step:
    desired = _desired_subscription(topic, spec)
    what = f"{'push' if spec.push else 'pull'} subscription"
    if existing is None:
        subscriber.create_subscription(request=desired)
        return Step(spec.name, what, Outcome.CREATED, _describe(spec))
    changed = [name for name in _MANAGED_FIELDS if _view(existing, name) != _view(desired, name)]
    if not changed:
        return Step(spec.name, what, Outcome.UNCHANGED, _describe(spec))
    subscriber.update_subscription(
        request={"subscription": desired, "update_mask": {"paths": changed}}
    )
    return Step(
        spec.name, what, Outcome.UPDATED, f"changed {', '.join(changed)}; {_describe(spec)}"
    )


def _view(subscription: Any, name: str) -> object:
    """A comparable view of one managed field, blind to what Google fills in by itself."""
    if name == "push_config":
        push = subscription.push_config
        oidc = push.oidc_token
        # Google adds attributes {"x-goog-version": "v1"} to every push config it returns.
        version = dict(push.attributes).get("x-goog-version", "v1")
        return (
            push.push_endpoint,
            oidc.service_account_email,
            oidc.audience,
            version,
            "no_wrapper" in push,
        )
    if name == "expiration_policy":
        if "expiration_policy" not in subscription:
            return "default"
        ttl = subscription.expiration_policy.ttl
        return "never" if not ttl else ttl.total_seconds()
    if name == "ack_deadline_seconds":
        return subscription.ack_deadline_seconds
    return type(getattr(subscription, name)).to_dict(getattr(subscription, name))


def _describe(spec: SubscriptionSpec) -> str:
    parts: list[str] = []
    if spec.push is not None:
        parts.append(f"to {mask_secrets(spec.push.url)}")
        if spec.push.oidc_service_account:
            audience = spec.push.audience or spec.push.url
            parts.append(
                f"OIDC as {spec.push.oidc_service_account} for audience {mask_secrets(audience)}"
            )
        else:
            parts.append("no OIDC")
    parts.append(f"ack deadline {spec.ack_deadline_seconds}s")
    if spec.retry is not None:
        parts.append(
            f"retry backoff {spec.retry.minimum_backoff_seconds}-"
            f"{spec.retry.maximum_backoff_seconds}s"
        )
    if spec.dead_letter is not None:
        parts.append(
            f"dead-letter to {spec.dead_letter.topic} after "
            f"{spec.dead_letter.max_delivery_attempts} attempts"
        )
    return ", ".join(parts)


def with_push_token(url: str, token: str) -> str:
    """``url`` with ``token=<token>`` in its query (replacing any), for ``PUBSUB_PUSH_TOKEN``."""
    if not token:
        raise ValueError("the push token is empty")
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def mask_secrets(url: str) -> str:
    """``url`` fit to print: a ``token=`` query value is replaced by ``***``."""
    return _TOKEN_IN_URL.sub(r"\1***", url)
