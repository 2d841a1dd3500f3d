"""IAM grants, which the emulator cannot do, against a small IAM policy server over real gRPC.

The server speaks ``google.iam.v1.IAMPolicy`` the way Pub/Sub does: a policy per resource,
an etag that changes on every write, and ABORTED for a write based on a stale etag.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import pytest
from google.cloud.pubsub_v1 import types as pubsub_types
from google.iam.v1 import iam_policy_pb2_grpc, policy_pb2

from app.pubsub.clients import publisher_client
from app.pubsub.provisioning import (
    GMAIL_PUSH_MEMBER,
    Outcome,
    SetupSpec,
    ensure_binding,
    provision,
)
from tests.support import free_port

TOPIC = "projects/acme/topics/gmail"


class PolicyServer(iam_policy_pb2_grpc.IAMPolicyServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.policies: dict[str, policy_pb2.Policy] = {}
        self.writes = 0
        self.aborted = 0
        self.interfere_once: policy_pb2.Binding | None = None
        self._lock = threading.Lock()

    def GetIamPolicy(self, request: Any, context: Any) -> policy_pb2.Policy:
        with self._lock:
            policy = self.policies.setdefault(request.resource, policy_pb2.Policy(etag=b"0"))
            answer = policy_pb2.Policy()
            answer.CopyFrom(policy)
            if self.interfere_once is not None:
                # Someone else edits the policy right after this read.
                policy.bindings.append(self.interfere_once)
                policy.etag = str(int(policy.etag) + 1).encode()
                self.interfere_once = None
            return answer

    def SetIamPolicy(self, request: Any, context: Any) -> policy_pb2.Policy:
        with self._lock:
            current = self.policies.setdefault(request.resource, policy_pb2.Policy(etag=b"0"))
            if request.policy.etag != current.etag:
                self.aborted += 1
                context.abort(grpc.StatusCode.ABORTED, "etag mismatch")
            stored = policy_pb2.Policy()
            stored.CopyFrom(request.policy)
            stored.etag = str(int(current.etag) + 1).encode()
            self.policies[request.resource] = stored
            self.writes += 1
            return stored


def topics_handler(topics: set[str]) -> grpc.GenericRpcHandler:
    """``google.pubsub.v1.Publisher/CreateTopic``, which answers ALREADY_EXISTS the second time."""

    def create_topic(request: Any, context: Any) -> Any:
        if request.name in topics:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
        topics.add(request.name)
        return request

    return grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher",
        {
            "CreateTopic": grpc.unary_unary_rpc_method_handler(
                create_topic,
                request_deserializer=pubsub_types.Topic.deserialize,
                response_serializer=pubsub_types.Topic.serialize,
            )
        },
    )


@pytest.fixture
def iam() -> Iterator[tuple[PolicyServer, str]]:
    servicer = PolicyServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    iam_policy_pb2_grpc.add_IAMPolicyServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([topics_handler(set())])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def members(server: PolicyServer, role: str) -> list[str]:
    policy = server.policies[TOPIC]
    return [m for b in policy.bindings if b.role == role for m in b.members]


def test_the_grant_is_added_once_and_other_bindings_survive(
    iam: tuple[PolicyServer, str],
) -> None:
    server, host = iam
    server.policies[TOPIC] = policy_pb2.Policy(
        etag=b"7",
        bindings=[policy_pb2.Binding(role="roles/pubsub.viewer", members=["user:ops@acme.com"])],
    )
    client = publisher_client(host)
    try:
        first = ensure_binding(client, TOPIC, "roles/pubsub.publisher", GMAIL_PUSH_MEMBER)
        second = ensure_binding(client, TOPIC, "roles/pubsub.publisher", GMAIL_PUSH_MEMBER)
    finally:
        client.transport.close()

    assert (first, second) == (True, False)
    assert server.writes == 1
    assert members(server, "roles/pubsub.publisher") == [GMAIL_PUSH_MEMBER]
    assert members(server, "roles/pubsub.viewer") == ["user:ops@acme.com"]


def test_a_concurrent_policy_edit_is_kept_and_the_grant_redone(
    iam: tuple[PolicyServer, str],
) -> None:
    server, host = iam
    server.interfere_once = policy_pb2.Binding(
        role="roles/pubsub.publisher", members=["serviceAccount:other@acme.iam.gserviceaccount.com"]
    )
    client = publisher_client(host)
    try:
        changed = ensure_binding(client, TOPIC, "roles/pubsub.publisher", GMAIL_PUSH_MEMBER)
    finally:
        client.transport.close()

    assert changed is True
    assert server.aborted == 1
    assert sorted(members(server, "roles/pubsub.publisher")) == sorted(
        ["serviceAccount:other@acme.iam.gserviceaccount.com", GMAIL_PUSH_MEMBER]
    )


def test_provisioning_grants_gmail_where_iam_exists(iam: tuple[PolicyServer, str]) -> None:
    server, host = iam
    client = publisher_client(host)
    try:
        first = provision(SetupSpec(topic=TOPIC), client, None, emulator=False)
        second = provision(SetupSpec(topic=TOPIC), client, None, emulator=False)
    finally:
        client.transport.close()

    assert [(s.what, s.outcome) for s in first] == [
        ("topic", Outcome.CREATED),
        (f"grant roles/pubsub.publisher to {GMAIL_PUSH_MEMBER} on", Outcome.UPDATED),
    ]
    assert [s.outcome for s in second] == [Outcome.UNCHANGED, Outcome.UNCHANGED]
    assert members(server, "roles/pubsub.publisher") == [GMAIL_PUSH_MEMBER]
