"""Provisioning against Google's Pub/Sub emulator, read back through the API."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions

from app.__main__ import main
from app.pubsub.provisioning import (
    DeadLetter,
    Outcome,
    ProvisioningError,
    PushEndpoint,
    RetryPolicy,
    SetupSpec,
    SubscriptionSpec,
    mask_secrets,
    provision,
    with_push_token,
)


def outcomes(steps: list[Any]) -> list[tuple[str, Outcome]]:
    return [(step.what, step.outcome) for step in steps]


def subscription_of(spec: SetupSpec) -> str:
    assert spec.subscription is not None
    return spec.subscription.name


def push_spec(project: str) -> SetupSpec:
    return SetupSpec(
        topic=f"{project}/topics/gmail",
        subscription=SubscriptionSpec(
            name=f"{project}/subscriptions/leadmail-push",
            push=PushEndpoint(
                url="https://leadmail.example.com/v1/webhooks/gmail",
                oidc_service_account="pubsub-push@example.iam.gserviceaccount.com",
                audience="https://leadmail.example.com/v1/webhooks/gmail",
            ),
            ack_deadline_seconds=45,
            retry=RetryPolicy(minimum_backoff_seconds=15, maximum_backoff_seconds=300),
            dead_letter=DeadLetter(topic=f"{project}/topics/gmail-dead", max_delivery_attempts=7),
        ),
    )


def pull_spec(project: str, name: str = "leadmail-pull") -> SetupSpec:
    return SetupSpec(
        topic=f"{project}/topics/gmail",
        subscription=SubscriptionSpec(name=f"{project}/subscriptions/{name}", push=None),
    )


def test_push_subscription_is_created_as_asked_and_a_second_run_changes_nothing(
    project: str, publisher: Any, subscriber: Any
) -> None:
    spec = push_spec(project)

    first = provision(spec, publisher, subscriber, emulator=True)

    assert outcomes(first) == [
        ("topic", Outcome.CREATED),
        (
            "grant roles/pubsub.publisher to "
            "serviceAccount:gmail-api-push@system.gserviceaccount.com on",
            Outcome.SKIPPED,
        ),
        ("dead-letter topic", Outcome.CREATED),
        ("push subscription", Outcome.CREATED),
        ("grant roles/pubsub.publisher to the Pub/Sub service agent on", Outcome.SKIPPED),
        ("grant roles/pubsub.subscriber to the Pub/Sub service agent on", Outcome.SKIPPED),
    ]
    assert all("emulator has no IAM" in s.detail for s in first if s.outcome is Outcome.SKIPPED)
    publisher.get_topic(request={"topic": f"{project}/topics/gmail"})
    publisher.get_topic(request={"topic": f"{project}/topics/gmail-dead"})
    created = subscriber.get_subscription(request={"subscription": subscription_of(spec)})
    assert created.topic == f"{project}/topics/gmail"
    assert created.push_config.push_endpoint == "https://leadmail.example.com/v1/webhooks/gmail"
    assert created.push_config.oidc_token.service_account_email == (
        "pubsub-push@example.iam.gserviceaccount.com"
    )
    assert created.push_config.oidc_token.audience == (
        "https://leadmail.example.com/v1/webhooks/gmail"
    )
    assert created.ack_deadline_seconds == 45
    assert created.retry_policy.minimum_backoff.total_seconds() == 15
    assert created.retry_policy.maximum_backoff.total_seconds() == 300
    assert created.dead_letter_policy.dead_letter_topic == f"{project}/topics/gmail-dead"
    assert created.dead_letter_policy.max_delivery_attempts == 7
    assert "expiration_policy" in created
    assert not created.expiration_policy.ttl  # present without a ttl: never expires

    second = provision(spec, publisher, subscriber, emulator=True)

    assert {step.outcome for step in second} == {Outcome.UNCHANGED, Outcome.SKIPPED}
    assert [step.resource for step in second] == [step.resource for step in first]
    assert subscriber.get_subscription(request={"subscription": subscription_of(spec)}) == created


def test_pull_subscription_is_created_as_asked_and_a_second_run_changes_nothing(
    project: str, publisher: Any, subscriber: Any
) -> None:
    spec = pull_spec(project)

    first = provision(spec, publisher, subscriber, emulator=True)
    second = provision(spec, publisher, subscriber, emulator=True)

    assert [s.outcome for s in first] == [Outcome.CREATED, Outcome.SKIPPED, Outcome.CREATED]
    assert [s.outcome for s in second] == [Outcome.UNCHANGED, Outcome.SKIPPED, Outcome.UNCHANGED]
    assert second[2].what == "pull subscription"
    created = subscriber.get_subscription(request={"subscription": subscription_of(spec)})
    assert created.push_config.push_endpoint == ""  # no endpoint: a pull subscription
    assert created.ack_deadline_seconds == 30
    assert created.retry_policy.minimum_backoff.total_seconds() == 10
    assert created.retry_policy.maximum_backoff.total_seconds() == 600
    assert "dead_letter_policy" not in created


def test_changed_settings_update_the_subscription_in_place(
    project: str, publisher: Any, subscriber: Any
) -> None:
    push = push_spec(project)
    provision(push, publisher, subscriber, emulator=True)
    assert push.subscription is not None
    as_pull = SetupSpec(
        topic=push.topic,
        subscription=SubscriptionSpec(name=push.subscription.name, ack_deadline_seconds=60),
    )

    steps = provision(as_pull, publisher, subscriber, emulator=True)

    subscription_step = next(s for s in steps if s.resource == push.subscription.name)
    assert subscription_step.outcome is Outcome.UPDATED
    for field in ("push_config", "ack_deadline_seconds", "retry_policy", "dead_letter_policy"):
        assert field in subscription_step.detail
    updated = subscriber.get_subscription(request={"subscription": push.subscription.name})
    assert updated.push_config.push_endpoint == ""
    assert updated.ack_deadline_seconds == 60
    assert updated.retry_policy.minimum_backoff.total_seconds() == 10
    assert "dead_letter_policy" not in updated
    again = provision(as_pull, publisher, subscriber, emulator=True)
    assert {s.outcome for s in again} == {Outcome.UNCHANGED, Outcome.SKIPPED}


def test_a_subscription_on_another_topic_is_refused_before_anything_changes(
    project: str, publisher: Any, subscriber: Any
) -> None:
    provision(pull_spec(project, "shared"), publisher, subscriber, emulator=True)
    elsewhere = SetupSpec(
        topic=f"{project}/topics/other",
        subscription=SubscriptionSpec(name=f"{project}/subscriptions/shared"),
    )

    with pytest.raises(ProvisioningError, match="cannot move a subscription"):
        provision(elsewhere, publisher, subscriber, emulator=True)

    with pytest.raises(api_exceptions.NotFound):
        publisher.get_topic(request={"topic": f"{project}/topics/other"})


def test_without_the_emulator_flag_a_missing_iam_api_is_reported_as_skipped(
    project: str, publisher: Any, subscriber: Any
) -> None:
    steps = provision(pull_spec(project), publisher, subscriber, emulator=False)

    grant = steps[1]
    assert grant.outcome is Outcome.SKIPPED
    assert grant.detail == "this Pub/Sub endpoint has no IAM"


def test_the_command_provisions_a_token_push_subscription_twice_without_leaking_the_token(
    project: str,
    pubsub_emulator: str,
    subscriber: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_PUSH_TOKEN", "s3cret-push-token")
    argv = [
        "pubsub",
        "setup",
        f"--emulator-host={pubsub_emulator}",
        f"--topic={project}/topics/gmail",
        f"--subscription={project}/subscriptions/push",
        "--push-endpoint=http://127.0.0.1:8000/v1/webhooks/gmail",
        "--push-token-from-env",
        "--ack-deadline=20",
    ]

    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out

    assert f"on the emulator at {pubsub_emulator}" in first
    assert f"push subscription {project}/subscriptions/push: created" in first
    assert "nothing changed" not in first
    assert f"push subscription {project}/subscriptions/push: unchanged" in second
    assert second.rstrip().endswith("nothing changed: everything was already in place")
    assert "s3cret" not in first + second
    assert "token=***" in first
    created = subscriber.get_subscription(request={"subscription": f"{project}/subscriptions/push"})
    assert created.push_config.push_endpoint == (
        "http://127.0.0.1:8000/v1/webhooks/gmail?token=s3cret-push-token"
    )
    assert not created.push_config.oidc_token.service_account_email
    assert created.ack_deadline_seconds == 20


def test_the_command_refuses_an_unauthenticated_push_subscription(
    project: str, pubsub_emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pubsub",
            "setup",
            f"--emulator-host={pubsub_emulator}",
            f"--topic={project}/topics/gmail",
            f"--subscription={project}/subscriptions/push",
            "--push-endpoint=http://127.0.0.1:8000/v1/webhooks/gmail",
        ]
    )

    assert code == 2
    assert "refuses unauthenticated pushes" in capsys.readouterr().err


def test_push_token_joins_the_endpoint_query_and_is_masked_for_printing() -> None:
    url = with_push_token("https://h.example/v1/webhooks/gmail?a=1&token=old", "n3w/+=")

    assert url == "https://h.example/v1/webhooks/gmail?a=1&token=n3w%2F%2B%3D"
    assert mask_secrets(url) == "https://h.example/v1/webhooks/gmail?a=1&token=***"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SetupSpec(topic="gmail"), "not a topic path"),
        (lambda: SubscriptionSpec(name="projects/p/topics/t"), "not a subscription path"),
        (
            lambda: SubscriptionSpec(name="projects/p/subscriptions/sub", ack_deadline_seconds=5),
            "between 10 and 600",
        ),
        (lambda: RetryPolicy(minimum_backoff_seconds=60, maximum_backoff_seconds=10), "backoff"),
        (lambda: DeadLetter(topic="projects/p/topics/dead", max_delivery_attempts=3), "5 and 100"),
        (lambda: PushEndpoint(url="leadmail.example.com/hook"), "not an http"),
        (lambda: PushEndpoint(url="https://h.example/", audience="x"), "OIDC service account"),
    ],
)
def test_impossible_settings_are_refused_before_calling_pub_sub(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
