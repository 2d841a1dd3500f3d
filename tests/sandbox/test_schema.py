"""Gmail answers checked against the schemas of the discovery document shipped with
google-api-python-client: field names and JSON types (§8 item 10)."""

from __future__ import annotations

import base64
from typing import Any

from sandbox.testing import RunningSandbox
from tests.sandbox.conftest import unique_email
from tests.sandbox.gmail_client import discovery_document, gmail_service, raw_of
from tests.sandbox.test_gmail_api import _with_attachment

SCHEMAS: dict[str, Any] = discovery_document()["schemas"]


def conform(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """Raise AssertionError where `value` leaves `schema`; empty arrays must be omitted."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), f"{path}: expected object, got {value!r}"
        properties = schema.get("properties")
        if properties is None:
            return
        for name, item in value.items():
            assert name in properties, f"{path}.{name} is not in the schema"
            conform(item, properties[name], f"{path}.{name}")
    elif kind == "array":
        assert isinstance(value, list), f"{path}: expected array"
        assert value, f"{path}: Google omits empty arrays"
        for index, item in enumerate(value):
            conform(item, schema["items"], f"{path}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected string, got {value!r}"
        if schema.get("format") in ("int64", "uint64"):
            assert value.lstrip("-").isdigit(), f"{path}: 64-bit value {value!r} is not digits"
        if schema.get("format") == "byte":
            base64.urlsafe_b64decode(value)
            assert len(value) % 4 == 0, f"{path}: base64url without padding"
        if "enum" in schema:
            assert value in schema["enum"], f"{path}: {value!r} not in enum"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: expected int"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: expected boolean"


def test_10_every_answer_matches_the_discovery_schemas(google: RunningSandbox) -> None:
    rep = google.create_account(unique_email("rep"), "Rita Rep")
    lead = google.create_account(unique_email("lead"), "Lee Lead")
    users = gmail_service(google, google.grant(rep, ["gmail.modify"])).users()
    start = users.getProfile(userId="me").execute()
    conform(start, {"$ref": "Profile"})
    conform(
        users.watch(userId="me", body={"topicName": google.topic()}).execute(),
        {"$ref": "WatchResponse"},
    )
    sent = (
        users.messages()
        .send(userId="me", body={"raw": raw_of(_with_attachment(rep, lead))})
        .execute()
    )
    conform(sent, {"$ref": "Message"})
    google.customer_reply(lead, message_id="<quote-1@crm.example>", text="Thanks")
    for fmt in ("minimal", "metadata", "full", "raw"):
        conform(
            users.messages().get(userId="me", id=sent["id"], format=fmt).execute(),
            {"$ref": "Message"},
        )
    for fmt in ("minimal", "metadata", "full"):
        thread = users.threads().get(userId="me", id=sent["threadId"], format=fmt).execute()
        conform(thread, {"$ref": "Thread"})
    conform(users.messages().list(userId="me").execute(), {"$ref": "ListMessagesResponse"})
    conform(
        users.messages().list(userId="me", q="rfc822msgid:none@x").execute(),
        {"$ref": "ListMessagesResponse"},
    )
    conform(users.threads().list(userId="me").execute(), {"$ref": "ListThreadsResponse"})
    conform(users.labels().list(userId="me").execute(), {"$ref": "ListLabelsResponse"})
    history = users.history().list(userId="me", startHistoryId=start["historyId"]).execute()
    conform(history, {"$ref": "ListHistoryResponse"})
    full = users.messages().get(userId="me", id=sent["id"]).execute()
    attachment_id = full["payload"]["parts"][1]["body"]["attachmentId"]
    body = (
        users.messages()
        .attachments()
        .get(userId="me", messageId=sent["id"], id=attachment_id)
        .execute()
    )
    conform(body, {"$ref": "MessagePartBody"})
    modified = (
        users.messages()
        .modify(userId="me", id=sent["id"], body={"addLabelIds": ["STARRED"]})
        .execute()
    )
    conform(modified, {"$ref": "Message"})


def test_10_checker_catches_wrong_types() -> None:
    import pytest

    with pytest.raises(AssertionError, match="64-bit"):
        conform({"historyId": "12a"}, {"$ref": "Profile"})
    with pytest.raises(AssertionError, match="expected int"):
        conform({"messagesTotal": "3"}, {"$ref": "Profile"})
    with pytest.raises(AssertionError, match="omits empty arrays"):
        conform({"history": [], "historyId": "1"}, {"$ref": "ListHistoryResponse"})
    with pytest.raises(AssertionError, match="not in the schema"):
        conform({"email": "x"}, {"$ref": "Profile"})


def test_09_scope_table_matches_the_discovery_document() -> None:
    from sandbox.gmail import METHOD_SCOPES

    def methods(resource: dict[str, Any]) -> dict[str, list[str]]:
        found = {m["id"]: m["scopes"] for m in resource.get("methods", {}).values()}
        for child in resource.get("resources", {}).values():
            found.update(methods(child))
        return found

    published = methods(discovery_document())
    for method, scopes in METHOD_SCOPES.items():
        assert sorted(scopes) == sorted(published[method]), method
