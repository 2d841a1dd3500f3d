"""``python -m app pubsub setup``: provision the topic, Gmail's grant and the subscription.

Examples::

    # production, push with OIDC (Application Default Credentials, roles/pubsub.admin)
    python -m app pubsub setup --topic projects/acme/topics/gmail \\
        --subscription projects/acme/subscriptions/leadmail-push \\
        --push-endpoint https://leadmail.acme.com/v1/webhooks/gmail \\
        --oidc-service-account pubsub-push@acme.iam.gserviceaccount.com

    # production, pull (every replica with PUBSUB_SUBSCRIPTION set shares it)
    python -m app pubsub setup --topic projects/acme/topics/gmail \\
        --subscription projects/acme/subscriptions/leadmail --pull

    # the emulator, push with ?token= (PUBSUB_PUSH_TOKEN from the environment)
    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 PUBSUB_PUSH_TOKEN=... python -m app pubsub setup \\
        --topic projects/dev/topics/gmail --subscription projects/dev/subscriptions/push \\
        --push-endpoint http://127.0.0.1:8000/v1/webhooks/gmail --push-token-from-env

Defaults come from the service's own variables (``PUBSUB_TOPIC``, ``PUBSUB_SUBSCRIPTION``,
``PUBSUB_PUSH_AUDIENCE``, ``PUBSUB_PUSH_SERVICE_ACCOUNT``, ``PUBSUB_EMULATOR_HOST``), so
the same environment that runs the service can provision for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import google.auth.exceptions

from app.pubsub.clients import emulator_host_from_env, publisher_client, subscriber_client
from app.pubsub.provisioning import (
    DeadLetter,
    Outcome,
    ProvisioningError,
    PushEndpoint,
    RetryPolicy,
    SetupSpec,
    SubscriptionSpec,
    provision,
    with_push_token,
)

__all__ = ["add_pubsub_command", "run_pubsub_command"]


def add_pubsub_command(commands: Any) -> None:
    """Register ``pubsub setup`` on the top-level argparse sub-parsers."""
    pubsub = commands.add_parser("pubsub", help="Cloud Pub/Sub operations")
    actions = pubsub.add_subparsers(dest="pubsub_command", required=True)
    setup = actions.add_parser(
        "setup",
        help="create the topic, grant Gmail publish rights, create the subscription",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    setup.add_argument(
        "--topic", default=env("PUBSUB_TOPIC"), help="projects/P/topics/T (default: PUBSUB_TOPIC)"
    )
    setup.add_argument(
        "--subscription",
        default=env("PUBSUB_SUBSCRIPTION"),
        help="projects/P/subscriptions/S (default: PUBSUB_SUBSCRIPTION)",
    )
    mode = setup.add_mutually_exclusive_group(required=True)
    mode.add_argument("--push-endpoint", metavar="URL", help="a push subscription to this URL")
    mode.add_argument("--pull", action="store_true", help="a pull subscription")
    setup.add_argument(
        "--oidc-service-account",
        default=env("PUBSUB_PUSH_SERVICE_ACCOUNT"),
        metavar="EMAIL",
        help="push: sign each push as this service account (default: PUBSUB_PUSH_SERVICE_ACCOUNT)",
    )
    setup.add_argument(
        "--audience",
        default=env("PUBSUB_PUSH_AUDIENCE"),
        help="push: the OIDC token's aud (default: PUBSUB_PUSH_AUDIENCE, else the endpoint)",
    )
    setup.add_argument(
        "--push-token-from-env",
        action="store_true",
        help="push: add ?token=$PUBSUB_PUSH_TOKEN to the endpoint (for pushers that cannot "
        "sign, such as the emulator); the token is never printed",
    )
    setup.add_argument(
        "--ack-deadline", type=int, default=30, metavar="SECONDS", help="10-600 (default: 30)"
    )
    setup.add_argument("--min-backoff", type=int, default=10, metavar="SECONDS")
    setup.add_argument("--max-backoff", type=int, default=600, metavar="SECONDS")
    setup.add_argument("--dead-letter-topic", metavar="TOPIC", help="projects/P/topics/T")
    setup.add_argument("--max-delivery-attempts", type=int, default=5, help="5-100 (default: 5)")
    setup.add_argument(
        "--project-number",
        help="with --dead-letter-topic: grants the Pub/Sub service agent what dead-lettering needs",
    )
    setup.add_argument(
        "--emulator-host",
        default=emulator_host_from_env(),
        metavar="HOST:PORT",
        help="talk to a Pub/Sub emulator (default: PUBSUB_EMULATOR_HOST)",
    )
    setup.add_argument(
        "--no-gmail-grant",
        dest="grant_gmail_publisher",
        action="store_false",
        help="do not grant roles/pubsub.publisher to gmail-api-push@system.gserviceaccount.com",
    )


def run_pubsub_command(args: argparse.Namespace) -> int:
    try:
        spec = _spec(args)
    except ValueError as exc:
        print(f"pubsub setup: {exc}", file=sys.stderr)
        return 2
    emulator: str | None = args.emulator_host
    try:
        publisher = publisher_client(emulator)
        subscriber = subscriber_client(emulator)
    except google.auth.exceptions.DefaultCredentialsError:
        print(
            "pubsub setup: no Google credentials: run `gcloud auth application-default login`, "
            "set GOOGLE_APPLICATION_CREDENTIALS, or pass --emulator-host",
            file=sys.stderr,
        )
        return 1
    try:
        steps = provision(spec, publisher, subscriber, emulator=emulator is not None)
    except ProvisioningError as exc:
        print(f"pubsub setup: {exc}", file=sys.stderr)
        return 1
    finally:
        subscriber.close()
        publisher.transport.close()
    where = f"the emulator at {emulator}" if emulator else "Google Cloud Pub/Sub"
    print(f"pubsub setup on {where}:")
    for step in steps:
        print(f"  {step}")
    if all(step.outcome in {Outcome.UNCHANGED, Outcome.SKIPPED} for step in steps):
        print("nothing changed: everything was already in place")
    return 0


def _spec(args: argparse.Namespace) -> SetupSpec:
    if not args.topic:
        raise ValueError("--topic is required (or set PUBSUB_TOPIC)")
    if not args.subscription:
        raise ValueError("--subscription is required (or set PUBSUB_SUBSCRIPTION)")
    push: PushEndpoint | None = None
    if args.push_endpoint:
        url: str = args.push_endpoint
        if args.push_token_from_env:
            url = with_push_token(url, os.environ.get("PUBSUB_PUSH_TOKEN", ""))
        if not args.oidc_service_account and not args.push_token_from_env:
            raise ValueError(
                "a push subscription needs --oidc-service-account (or "
                "PUBSUB_PUSH_SERVICE_ACCOUNT), or --push-token-from-env: leadmail refuses "
                "unauthenticated pushes"
            )
        push = PushEndpoint(
            url=url,
            oidc_service_account=args.oidc_service_account or None,
            audience=(args.audience or args.push_endpoint) if args.oidc_service_account else None,
        )
    elif args.push_token_from_env:
        raise ValueError("--push-token-from-env only applies to --push-endpoint")
    dead_letter = None
    if args.dead_letter_topic:
        dead_letter = DeadLetter(
            topic=args.dead_letter_topic,
            max_delivery_attempts=args.max_delivery_attempts,
            project_number=args.project_number,
        )
    return SetupSpec(
        topic=args.topic,
        subscription=SubscriptionSpec(
            name=args.subscription,
            push=push,
            ack_deadline_seconds=args.ack_deadline,
            retry=RetryPolicy(args.min_backoff, args.max_backoff),
            dead_letter=dead_letter,
        ),
        grant_gmail_publisher=args.grant_gmail_publisher,
    )
