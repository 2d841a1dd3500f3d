"""Every Gmail method the service uses, called through google-api-python-client.

Named after GOOGLE.md §8 items 8-17."""

from __future__ import annotations

import base64
import io
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload

from sandbox.testing import RunningSandbox
from tests.sandbox.conftest import unique_email
from tests.sandbox.gmail_client import (
    gmail_service,
    gmail_service_by_endpoint,
    raw_of,
    simple_mail,
)

READ_SEND = ["gmail.send", "gmail.readonly"]


def _account(google: RunningSandbox, scopes: list[str] | None = None) -> tuple[str, Any]:
    email = google.create_account(unique_email("rep"), "Rita Rep")
    return email, gmail_service(google, google.grant(email, scopes or READ_SEND))


def _error(exc: HttpError) -> dict[str, Any]:
    import json

    body: dict[str, Any] = json.loads(exc.content)["error"]
    return body


def _with_attachment(sender: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Quote attached"
    message["Message-ID"] = "<quote-1@crm.example>"
    message.set_content("Please find the quote. It's here.")
    message.add_alternative("<p>Please find the <b>quote</b>.</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="q.pdf"
    )
    return message.as_bytes()


def test_08_bearer_missing_gives_401_required(google: RunningSandbox) -> None:
    response = httpx.get(f"{google.base_url}/gmail/v1/users/me/profile")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["errors"][0]["reason"] == "required"
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == "CREDENTIALS_MISSING"
    assert response.headers["www-authenticate"].startswith("Bearer realm=")


def test_08_bearer_expired_gives_401_auth_error_and_client_refreshes_once(
    google: RunningSandbox,
) -> None:
    email, gmail = _account(google)
    google.advance_clock(3600)  # the access token dies on the sandbox clock
    profile = gmail.users().getProfile(userId="me").execute()  # 401, refresh, retry
    assert profile["emailAddress"] == email
    statuses = [(c["path"], c["status"]) for c in google.calls()]
    assert statuses[-3:] == [
        ("/gmail/v1/users/me/profile", 401),
        ("/token", 200),
        ("/gmail/v1/users/me/profile", 200),
    ]
    bad = httpx.get(
        f"{google.base_url}/gmail/v1/users/me/profile", headers={"Authorization": "Bearer nope"}
    )
    error = bad.json()["error"]
    assert (bad.status_code, error["errors"][0]["reason"]) == (401, "authError")
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]


def test_08_access_token_in_query_and_user_id_as_address(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    token = google.grant(email, ["gmail.readonly"])["access_token"]
    by_query = httpx.get(
        f"{google.base_url}/gmail/v1/users/{email}/profile", params={"access_token": token}
    )
    assert by_query.json()["emailAddress"] == email
    other = httpx.get(
        f"{google.base_url}/gmail/v1/users/someone@else.test/profile",
        params={"access_token": token},
    )
    assert other.status_code == 403


@pytest.mark.parametrize(
    ("scopes", "call"),
    [
        (["gmail.send"], lambda g: g.users().getProfile(userId="me")),
        (["gmail.send"], lambda g: g.users().history().list(userId="me", startHistoryId="1")),
        (["gmail.send"], lambda g: g.users().watch(userId="me", body={"topicName": "x"})),
        (["gmail.readonly"], lambda g: g.users().messages().send(userId="me", body={"raw": "eA"})),
        (
            ["gmail.metadata"],
            lambda g: g.users().messages().get(userId="me", id="1a", format="raw"),
        ),
        (["gmail.metadata"], lambda g: g.users().messages().list(userId="me", q="in:inbox")),
    ],
)
def test_09_scope_enforcement_per_method(
    google: RunningSandbox, scopes: list[str], call: Any
) -> None:
    _, gmail = _account(google, scopes)
    with pytest.raises(HttpError) as caught:
        call(gmail).execute()
    assert caught.value.status_code == 403
    error = _error(caught.value)
    assert error["errors"][0]["reason"] == "insufficientPermissions"
    assert error["status"] == "PERMISSION_DENIED"


def test_09_metadata_scope_may_read_headers(google: RunningSandbox) -> None:
    email, sender = _account(google, ["gmail.modify"])
    sent = (
        sender.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, "x@external.test", "Hi"))})
        .execute()
    )
    metadata = gmail_service(google, google.grant(email, ["gmail.metadata"]))
    got = metadata.users().messages().get(userId="me", id=sent["id"], format="metadata").execute()
    assert got["payload"]["headers"]


def test_01_client_built_with_api_endpoint_reaches_the_sandbox(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    gmail = gmail_service_by_endpoint(google, google.grant(email, READ_SEND))
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == email
    assert google.calls()[-1]["path"] == "/gmail/v1/users/me/profile"


def test_11_get_profile(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    profile = gmail.users().getProfile(userId="me").execute()
    assert profile["emailAddress"] == email
    assert profile["messagesTotal"] == 0 and profile["threadsTotal"] == 0
    assert isinstance(profile["historyId"], str) and profile["historyId"].isdigit()


def test_12_send_json_keeps_message_id_and_returns_sent(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    mail = simple_mail(
        email, "lead@external.test", "Intro", extra="Message-ID: <mine@crm.test>\r\n"
    )
    sent = gmail.users().messages().send(userId="me", body={"raw": raw_of(mail)}).execute()
    assert sent["labelIds"] == ["SENT"]
    assert sent["threadId"] == sent["id"]
    got = (
        gmail.users()
        .messages()
        .get(userId="me", id=sent["id"], format="metadata", metadataHeaders=["Message-ID"])
        .execute()
    )
    assert got["payload"]["headers"] == [{"name": "Message-ID", "value": "<mine@crm.test>"}]
    outgoing = google.outgoing()
    assert outgoing[-1]["external"] == ["lead@external.test"]
    assert outgoing[-1]["message_id"] == "<mine@crm.test>"


def test_12_send_adds_message_id_when_missing(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, "a@external.test", "No id"))})
        .execute()
    )
    got = gmail.users().messages().get(userId="me", id=sent["id"], format="raw").execute()
    parsed = message_from_bytes(base64.urlsafe_b64decode(got["raw"]), policy=policy.default)
    assert str(parsed["Message-ID"]).endswith("@mail.gmail.com>")


def test_12_send_by_media_upload_and_multipart(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    first = (
        gmail.users()
        .messages()
        .send(
            userId="me",
            media_body=MediaIoBaseUpload(
                io.BytesIO(simple_mail(email, "b@external.test", "Upload")),
                mimetype="message/rfc822",
            ),
        )
        .execute()
    )
    calls = google.calls("gmail.users.messages.send")
    assert calls[-1]["path"] == "/upload/gmail/v1/users/me/messages/send"
    assert "uploadType=media" in calls[-1]["query"]
    parent = _msgid(gmail, first["id"])
    reply = simple_mail(
        email,
        "b@external.test",
        "Re: Upload",
        extra=f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n",
    )
    second = (
        gmail.users()
        .messages()
        .send(
            userId="me",
            body={"threadId": first["threadId"]},
            media_body=MediaIoBaseUpload(io.BytesIO(reply), mimetype="message/rfc822"),
        )
        .execute()
    )
    assert "uploadType=multipart" in google.calls("gmail.users.messages.send")[-1]["query"]
    assert second["threadId"] == first["threadId"]


def _msgid(gmail: Any, gmail_id: str) -> str:
    got = (
        gmail.users()
        .messages()
        .get(userId="me", id=gmail_id, format="metadata", metadataHeaders=["Message-ID"])
        .execute()
    )
    value: str = got["payload"]["headers"][0]["value"]
    return value


def test_12_thread_rule_on_send(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    users = gmail.users()
    first = (
        users.messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, "c@external.test", "Pricing"))})
        .execute()
    )
    parent = _msgid(gmail, first["id"])
    refs = f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
    follow = (
        users.messages()
        .send(
            userId="me",
            body={
                "raw": raw_of(simple_mail(email, "c@external.test", "Re: Pricing", extra=refs)),
                "threadId": first["threadId"],
            },
        )
        .execute()
    )
    assert follow["threadId"] == first["threadId"]
    no_thread_id = (
        users.messages()
        .send(
            userId="me",
            body={"raw": raw_of(simple_mail(email, "c@external.test", "Re: Pricing", extra=refs))},
        )
        .execute()
    )
    assert no_thread_id["threadId"] != first["threadId"]
    mismatch = (
        users.messages()
        .send(
            userId="me",
            body={
                "raw": raw_of(simple_mail(email, "c@external.test", "Something else")),
                "threadId": first["threadId"],
            },
        )
        .execute()
    )
    assert mismatch["threadId"] != first["threadId"]
    with pytest.raises(HttpError) as caught:
        users.messages().send(
            userId="me",
            body={"raw": raw_of(simple_mail(email, "c@x.test", "Pricing")), "threadId": "abc123"},
        ).execute()
    assert caught.value.status_code == 404


def test_12_send_to_self_adds_inbox_and_unread(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, email, "Note to self"))})
        .execute()
    )
    assert sent["labelIds"] == ["SENT", "INBOX", "UNREAD"]


def test_12_bcc_is_stripped_for_recipients(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    hidden = google.create_account(unique_email("boss"))
    lead = google.create_account(unique_email("lead"))
    mail = simple_mail(email, lead, "Hello", extra=f"Bcc: {hidden}\r\n")
    gmail.users().messages().send(userId="me", body={"raw": raw_of(mail)}).execute()
    for address in (lead, hidden):
        received = google.messages(address)
        assert len(received) == 1
        raw = google.request("GET", f"/_sandbox/accounts/{address}/messages/{received[0]['id']}")
        assert "Bcc:" not in raw["raw"]
        assert received[0]["labelIds"] == ["INBOX", "UNREAD"]


def test_13_get_in_all_four_formats(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(_with_attachment(email, "d@external.test"))})
        .execute()
    )
    get = gmail.users().messages().get
    minimal = get(userId="me", id=sent["id"], format="minimal").execute()
    assert set(minimal) == {
        "id",
        "threadId",
        "labelIds",
        "snippet",
        "sizeEstimate",
        "historyId",
        "internalDate",
    }
    assert minimal["snippet"] == "Please find the quote. It&#39;s here."
    assert minimal["internalDate"].isdigit() and isinstance(minimal["sizeEstimate"], int)
    metadata = get(
        userId="me", id=sent["id"], format="metadata", metadataHeaders=["subject", "From"]
    ).execute()
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["From", "Subject"]
    assert "parts" not in metadata["payload"]
    full = get(userId="me", id=sent["id"]).execute()
    payload = full["payload"]
    assert payload["partId"] == "" and payload["mimeType"] == "multipart/mixed"
    alternative, attachment = payload["parts"]
    assert alternative["partId"] == "0" and alternative["mimeType"] == "multipart/alternative"
    assert [p["partId"] for p in alternative["parts"]] == ["0.0", "0.1"]
    text = base64.urlsafe_b64decode(alternative["parts"][0]["body"]["data"])
    assert text.startswith(b"Please find the quote.")
    assert attachment["filename"] == "q.pdf" and "data" not in attachment["body"]
    assert attachment["body"]["size"] == len(b"%PDF-1.4 fake")
    raw = get(userId="me", id=sent["id"], format="raw").execute()
    assert "payload" not in raw
    decoded = base64.urlsafe_b64decode(raw["raw"])
    assert b"Subject: Quote attached" in decoded
    assert raw["raw"].endswith("=") or len(raw["raw"]) % 4 == 0  # padded base64url


def test_13_unknown_and_malformed_ids(google: RunningSandbox) -> None:
    _, gmail = _account(google)
    with pytest.raises(HttpError) as missing:
        gmail.users().messages().get(userId="me", id="18d1e2f3a4b5c6d7").execute()
    assert missing.value.status_code == 404
    assert _error(missing.value)["errors"][0]["reason"] == "notFound"
    with pytest.raises(HttpError) as malformed:
        gmail.users().messages().get(userId="me", id="not-an-id!").execute()
    assert malformed.value.status_code == 400
    assert _error(malformed.value)["message"] == "Invalid id value"


def test_14_attachment_ids_are_ephemeral(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(_with_attachment(email, "e@external.test"))})
        .execute()
    )
    messages = gmail.users().messages()
    first = messages.get(userId="me", id=sent["id"]).execute()["payload"]["parts"][1]["body"]
    second = messages.get(userId="me", id=sent["id"]).execute()["payload"]["parts"][1]["body"]
    assert first["attachmentId"] != second["attachmentId"]
    body = (
        messages.attachments()
        .get(userId="me", messageId=sent["id"], id=first["attachmentId"])
        .execute()
    )
    assert body["size"] == len(b"%PDF-1.4 fake")
    assert base64.urlsafe_b64decode(body["data"]) == b"%PDF-1.4 fake"
    google.request("POST", "/_sandbox/attachments/expire")
    with pytest.raises(HttpError) as expired:
        messages.attachments().get(
            userId="me", messageId=sent["id"], id=second["attachmentId"]
        ).execute()
    assert expired.value.status_code == 400


def test_14_threads_get_oldest_first_in_three_formats(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    lead = google.create_account(unique_email("lead"), "Lee Lead")
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, lead, "Demo"))})
        .execute()
    )
    google.customer_reply(lead, message_id=_msgid(gmail, sent["id"]), text="Sure, Tuesday.")
    threads = gmail.users().threads()
    full = threads.get(userId="me", id=sent["threadId"]).execute()
    assert full["messages"][0]["id"] == sent["id"]
    assert len(full["messages"]) == 2
    assert full["messages"][1]["labelIds"] == ["INBOX", "UNREAD"]
    assert "payload" in full["messages"][1]
    metadata = threads.get(
        userId="me", id=sent["threadId"], format="metadata", metadataHeaders=["Subject"]
    ).execute()
    assert metadata["messages"][1]["payload"]["headers"] == [
        {"name": "Subject", "value": "Re: Demo"}
    ]
    minimal = threads.get(userId="me", id=sent["threadId"], format="minimal").execute()
    assert all("payload" not in m for m in minimal["messages"])
    assert int(minimal["historyId"]) >= int(minimal["messages"][1]["historyId"])


def test_15_history_list_records_and_filters(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    lead = google.create_account(unique_email("lead"))
    sent = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, lead, "Catalogue"))})
        .execute()
    )
    reply = google.customer_reply(lead, message_id=_msgid(gmail, sent["id"]), text="Got it")
    inbound = next(d["id"] for d in reply["delivered"] if d["email"] == email)
    google.modify_labels(email, inbound, remove=["UNREAD"])
    google.delete_message(email, inbound)
    history = gmail.users().history()
    page = history.list(userId="me", startHistoryId=start).execute()
    ids = [int(r["id"]) for r in page["history"]]
    assert ids == sorted(ids) and ids[0] > int(start)
    assert page["historyId"] == gmail.users().getProfile(userId="me").execute()["historyId"]
    kinds = [k for r in page["history"] for k in r if k not in ("id", "messages")]
    assert kinds == ["messagesAdded", "messagesAdded", "labelsRemoved", "messagesDeleted"]
    assert all(r["messages"] for r in page["history"])
    added = history.list(
        userId="me", startHistoryId=start, historyTypes=["messageAdded"], labelId="INBOX"
    ).execute()
    assert [r["messagesAdded"][0]["message"]["id"] for r in added["history"]] == [inbound]
    removed = next(r for r in page["history"] if "labelsRemoved" in r)["labelsRemoved"][0]
    assert removed["labelIds"] == ["UNREAD"]


def test_15_history_paging_and_empty_answer(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    for n in range(5):
        gmail.users().messages().send(
            userId="me", body={"raw": raw_of(simple_mail(email, "p@external.test", f"N{n}"))}
        ).execute()
    history = gmail.users().history()
    seen: list[str] = []
    request = history.list(
        userId="me", startHistoryId=start, maxResults=2, historyTypes="messageAdded"
    )
    pages = 0
    while request is not None:
        page = request.execute()
        pages += 1
        seen += [r["messagesAdded"][0]["message"]["id"] for r in page.get("history", [])]
        request = history.list_next(request, page)
    assert pages == 3 and len(seen) == 5
    current = gmail.users().getProfile(userId="me").execute()["historyId"]
    empty = history.list(userId="me", startHistoryId=current).execute()
    assert empty == {"historyId": current}


def test_15_history_requires_start_and_404s_when_too_old(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    missing = httpx.get(
        f"{google.base_url}/gmail/v1/users/me/history",
        headers={
            "Authorization": f"Bearer {google.grant(email, ['gmail.readonly'])['access_token']}"
        },
    )
    assert missing.status_code == 400
    gmail.users().messages().send(
        userId="me", body={"raw": raw_of(simple_mail(email, "q@external.test", "Old"))}
    ).execute()
    google.expire_history(email)
    with pytest.raises(HttpError) as caught:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert caught.value.status_code == 404


def test_15_history_retention_window_on_the_sandbox_clock(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    gmail.users().messages().send(
        userId="me", body={"raw": raw_of(simple_mail(email, "r@external.test", "Week"))}
    ).execute()
    assert gmail.users().history().list(userId="me", startHistoryId=start).execute()["history"]
    google.advance_clock(7 * 86400 + 60)
    with pytest.raises(HttpError) as caught:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert caught.value.status_code == 404


def test_16_messages_list_with_q_subset_and_paging(google: RunningSandbox) -> None:
    email, gmail = _account(google)
    lead = google.create_account(unique_email("lead"))
    sent = (
        gmail.users()
        .messages()
        .send(
            userId="me",
            body={
                "raw": raw_of(
                    simple_mail(email, lead, "Offer", extra="Message-ID: <offer-9@crm.test>\r\n")
                )
            },
        )
        .execute()
    )
    google.customer_reply(lead, message_id="<offer-9@crm.test>", text="Interested")
    messages = gmail.users().messages()
    found = messages.list(userId="me", q="rfc822msgid:<offer-9@crm.test>").execute()
    assert found["messages"] == [{"id": sent["id"], "threadId": sent["threadId"]}]
    assert found["resultSizeEstimate"] == 1
    inbox = messages.list(userId="me", q="in:inbox is:unread").execute()
    assert len(inbox["messages"]) == 1
    assert (
        messages.list(userId="me", labelIds=["SENT"]).execute()["messages"][0]["id"] == sent["id"]
    )
    assert messages.list(userId="me", q="rfc822msgid:nothing@x").execute() == {
        "resultSizeEstimate": 0
    }
    paged = messages.list(userId="me", maxResults=1).execute()
    assert len(paged["messages"]) == 1 and "nextPageToken" in paged
    rest = messages.list(userId="me", maxResults=1, pageToken=paged["nextPageToken"]).execute()
    assert rest["messages"][0]["id"] != paged["messages"][0]["id"]
    assert "nextPageToken" not in rest


def test_17_watch_validates_topics_and_stop_succeeds(google: RunningSandbox) -> None:
    _, gmail = _account(google)
    users = gmail.users()
    answer = users.watch(
        userId="me", body={"topicName": google.topic(), "labelIds": ["INBOX"]}
    ).execute()
    assert answer["historyId"].isdigit() and answer["expiration"].isdigit()
    with pytest.raises(HttpError) as other_project:
        users.watch(userId="me", body={"topicName": "projects/other/topics/gmail"}).execute()
    assert other_project.value.status_code == 400
    assert (
        "does not match projects/sandbox-project/topics/*" in _error(other_project.value)["message"]
    )
    google.set_topics({google.topic("granted"): True, google.topic("locked"): False})
    with pytest.raises(HttpError) as missing:
        users.watch(userId="me", body={"topicName": google.topic("absent")}).execute()
    assert missing.value.status_code == 404
    assert "Resource not found (resource=absent)" in _error(missing.value)["message"]
    with pytest.raises(HttpError) as forbidden:
        users.watch(userId="me", body={"topicName": google.topic("locked")}).execute()
    assert forbidden.value.status_code == 403
    assert users.watch(userId="me", body={"topicName": google.topic("granted")}).execute()
    assert users.stop(userId="me").execute() in ("", None, {})
