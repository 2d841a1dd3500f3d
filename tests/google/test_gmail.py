"""Request and response shapes of every Gmail call, against httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import httpx
import pytest

from app.google.errors import MalformedResponse, NotFound, RateLimited, TransportFailure
from app.google.gmail import GmailClient, GmailSession, HistoryPage

BASE = "https://gmail.test"
TOKEN = "ya29.test-token"
RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"


@dataclass
class FakeGmail:
    """Answers queued responses in order and records every request."""

    responses: list[httpx.Response] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    def answer(self, status: int = 200, body: Any = None, **kwargs: Any) -> None:
        if body is None:
            self.responses.append(httpx.Response(status, content=b"", **kwargs))
        else:
            self.responses.append(httpx.Response(status, json=body, **kwargs))

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def on_call(self, method: str, status: int, seconds: float) -> None:
        self.calls.append((method, status, seconds))


@pytest.fixture
def fake() -> FakeGmail:
    return FakeGmail()


@pytest.fixture
async def session(fake: FakeGmail) -> AsyncIterator[GmailSession]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        client = GmailClient(http, BASE + "/", on_call=fake.on_call, upload_threshold=1024)
        yield client.for_token(TOKEN)


def b64url(data: bytes, *, pad: bool = True) -> str:
    encoded = base64.urlsafe_b64encode(data).decode()
    return encoded if pad else encoded.rstrip("=")


async def test_get_profile_parses_int64_strings(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(
        body={
            "emailAddress": "rep@example.com",
            "messagesTotal": 1523,
            "threadsTotal": 977,
            "historyId": "4467334",
        }
    )
    profile = await session.get_profile()
    assert profile.email_address == "rep@example.com"
    assert profile.history_id == 4467334
    assert (profile.messages_total, profile.threads_total) == (1523, 977)
    assert fake.last.method == "GET"
    assert str(fake.last.url) == f"{BASE}/gmail/v1/users/me/profile"
    assert fake.last.headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake.calls[0][:2] == ("getProfile", 200)


async def test_send_small_message_as_json_with_thread(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(body={"id": "m2", "threadId": "t1", "labelIds": ["SENT"]})
    sent = await session.send(RAW, thread_id="t1")
    assert (sent.id, sent.thread_id, sent.label_ids) == ("m2", "t1", ("SENT",))
    request = fake.last
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/gmail/v1/users/me/messages/send"
    body = json.loads(request.content)
    assert body["threadId"] == "t1"
    assert base64.urlsafe_b64decode(body["raw"]) == RAW
    assert "+" not in body["raw"] and "/" not in body["raw"]
    assert fake.calls[0][:2] == ("messages.send", 200)


async def test_send_without_thread_omits_thread_id(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body={"id": "m1", "threadId": "m1", "labelIds": ["SENT"]})
    await session.send(RAW)
    assert "threadId" not in json.loads(fake.last.content)


async def test_send_large_message_uses_media_upload(fake: FakeGmail, session: GmailSession) -> None:
    large = RAW + b"x" * 2048
    fake.answer(body={"id": "m3", "threadId": "m3", "labelIds": ["SENT"]})
    sent = await session.send(large)
    request = fake.last
    assert request.url.path == "/upload/gmail/v1/users/me/messages/send"
    assert request.url.params["uploadType"] == "media"
    assert request.headers["Content-Type"] == "message/rfc822"
    assert request.content == large
    assert sent.id == "m3"


async def test_send_large_reply_uses_multipart_upload_to_carry_thread_id(
    fake: FakeGmail, session: GmailSession
) -> None:
    large = RAW + b"y" * 2048
    fake.answer(body={"id": "m4", "threadId": "t9", "labelIds": ["SENT"]})
    await session.send(large, thread_id="t9")
    request = fake.last
    assert request.url.path == "/upload/gmail/v1/users/me/messages/send"
    assert request.url.params["uploadType"] == "multipart"
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/related; boundary=")
    envelope = BytesParser(policy=policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.content
    )
    assert isinstance(envelope, EmailMessage)
    metadata, media = envelope.iter_parts()
    assert metadata.get_content_type() == "application/json"
    assert json.loads(metadata.get_content()) == {"threadId": "t9"}
    assert media.get_content_type() == "message/rfc822"
    assert large in request.content


async def test_get_message_raw(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(
        body={
            "id": "18d1e2f3a4b5c6d7",
            "threadId": "18d1e2f3a4b5c6d0",
            "labelIds": ["INBOX", "UNREAD"],
            "snippet": "Hi, here&#39;s the file",
            "historyId": "4467385",
            "internalDate": "1767225600000",
            "sizeEstimate": 48213,
            "raw": b64url(RAW, pad=False),
        }
    )
    message = await session.get_message("18d1e2f3a4b5c6d7")
    assert fake.last.url.path == "/gmail/v1/users/me/messages/18d1e2f3a4b5c6d7"
    assert fake.last.url.params.get_list("format") == ["raw"]
    assert "metadataHeaders" not in fake.last.url.params
    assert message.raw == RAW
    assert message.history_id == 4467385
    assert message.internal_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert message.label_ids == ("INBOX", "UNREAD")
    assert message.size_estimate == 48213
    assert message.payload is None and message.headers == ()


async def test_get_message_metadata_sends_repeated_headers(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(
        body={
            "id": "m1",
            "threadId": "t1",
            "historyId": "7",
            "payload": {
                "mimeType": "multipart/alternative",
                "headers": [
                    {"name": "Message-Id", "value": "<abc@mail.gmail.com>"},
                    {"name": "In-Reply-To", "value": "<orig@example.com>"},
                ],
            },
        }
    )
    message = await session.get_message(
        "m1", format="metadata", metadata_headers=["Message-ID", "In-Reply-To", "References"]
    )
    params = fake.last.url.params
    assert params["format"] == "metadata"
    assert params.get_list("metadataHeaders") == ["Message-ID", "In-Reply-To", "References"]
    assert message.header("message-id") == "<abc@mail.gmail.com>"
    assert message.header("References") is None
    assert message.label_ids == ()  # omitted when empty
    assert message.raw is None


async def test_get_message_full_parses_the_part_tree(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(
        body={
            "id": "m1",
            "threadId": "t1",
            "payload": {
                "partId": "",
                "mimeType": "multipart/mixed",
                "filename": "",
                "headers": [{"name": "Subject", "value": "Re: Order 42"}],
                "body": {"size": 0},
                "parts": [
                    {
                        "partId": "0",
                        "mimeType": "text/plain",
                        "filename": "",
                        "body": {"size": 22, "data": b64url(b"Hi, here's the file\r\n")},
                    },
                    {
                        "partId": "1",
                        "mimeType": "application/pdf",
                        "filename": "invoice.pdf",
                        "body": {"attachmentId": "ANGjdJ8", "size": 41873},
                    },
                ],
            },
        }
    )
    message = await session.get_message("m1", format="full")
    assert message.header("subject") == "Re: Order 42"
    assert message.payload is not None
    text, pdf = message.payload.parts
    assert (text.part_id, text.mime_type, text.body.data) == (
        "0",
        "text/plain",
        b"Hi, here's the file\r\n",
    )
    assert (pdf.filename, pdf.body.attachment_id, pdf.body.size, pdf.body.data) == (
        "invoice.pdf",
        "ANGjdJ8",
        41873,
        None,
    )


async def test_message_ids_are_quoted_as_one_path_segment(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(body={"id": "x", "threadId": "x"})
    await session.get_message("../profile?x=1")
    assert fake.last.url.raw_path.startswith(b"/gmail/v1/users/me/messages/..%2Fprofile%3Fx%3D1")


async def test_list_message_ids_by_rfc822_message_id(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(
        body={
            "messages": [{"id": "m1", "threadId": "t1"}],
            "nextPageToken": "p2",
            "resultSizeEstimate": 1,
        }
    )
    page = await session.list_message_ids("rfc822msgid:<abc@example.com>", max_results=5)
    params = fake.last.url.params
    assert fake.last.url.path == "/gmail/v1/users/me/messages"
    assert params["q"] == "rfc822msgid:<abc@example.com>"
    assert params["maxResults"] == "5"
    assert [(m.id, m.thread_id) for m in page.messages] == [("m1", "t1")]
    assert page.next_page_token == "p2"


async def test_list_message_ids_with_no_match_omits_messages(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(body={"resultSizeEstimate": 0})
    page = await session.list_message_ids(
        "in:inbox", label_ids=["INBOX", "UNREAD"], page_token="p1"
    )
    assert page.messages == ()
    assert page.next_page_token is None
    assert fake.last.url.params.get_list("labelIds") == ["INBOX", "UNREAD"]
    assert fake.last.url.params["pageToken"] == "p1"


async def test_get_thread_keeps_oldest_first(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(
        body={
            "id": "t1",
            "historyId": "99",
            "messages": [
                {"id": "m1", "threadId": "t1", "internalDate": "1000"},
                {"id": "m2", "threadId": "t1", "internalDate": "2000"},
            ],
        }
    )
    thread = await session.get_thread("t1", format="metadata", metadata_headers=["Subject"])
    assert fake.last.url.path == "/gmail/v1/users/me/threads/t1"
    assert fake.last.url.params["format"] == "metadata"
    assert fake.last.url.params.get_list("metadataHeaders") == ["Subject"]
    assert thread.history_id == 99
    assert [m.id for m in thread.messages] == ["m1", "m2"]


HISTORY = {
    "history": [
        {
            "id": "4467340",
            "messages": [{"id": "m1", "threadId": "t1"}],
            "messagesAdded": [
                {"message": {"id": "m1", "threadId": "t1", "labelIds": ["UNREAD", "INBOX"]}}
            ],
        },
        {
            "id": "4467352",
            "messages": [{"id": "m1", "threadId": "t1"}],
            "labelsRemoved": [
                {
                    "message": {"id": "m1", "threadId": "t1", "labelIds": ["INBOX"]},
                    "labelIds": ["UNREAD"],
                }
            ],
            "labelsAdded": [{"message": {"id": "m1", "threadId": "t1"}, "labelIds": ["TRASH"]}],
        },
        {"id": "4467360", "messagesDeleted": [{"message": {"id": "m0", "threadId": "t0"}}]},
        {"id": "4467370", "messages": [{"id": "m5", "threadId": "t5"}]},
    ],
    "nextPageToken": "next",
    "historyId": "4467385",
}


async def test_list_history_request_and_records(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body=HISTORY)
    page = await session.list_history(
        4467334, history_types=["messageAdded", "labelAdded"], page_token="tok", max_results=50
    )
    params = fake.last.url.params
    assert fake.last.url.path == "/gmail/v1/users/me/history"
    assert params["startHistoryId"] == "4467334"
    assert params.get_list("historyTypes") == ["messageAdded", "labelAdded"]
    assert params["pageToken"] == "tok"
    assert params["maxResults"] == "50"
    assert page.history_id == 4467385
    assert page.next_page_token == "next"
    added, labels, deleted, bare = page.records
    assert added.id == 4467340
    assert [(m.id, m.thread_id, m.label_ids) for m in added.messages_added] == [
        ("m1", "t1", ("UNREAD", "INBOX"))
    ]
    assert added.labels_added == added.labels_removed == ()
    assert added.messages_deleted == ()
    assert labels.labels_removed[0].label_ids == ("UNREAD",)
    assert labels.labels_removed[0].message.label_ids == ("INBOX",)
    assert labels.labels_added[0].label_ids == ("TRASH",)
    assert [m.id for m in deleted.messages_deleted] == ["m0"]
    assert deleted.messages == ()
    assert bare.messages[0].thread_id == "t5" and bare.messages_added == ()
    assert fake.calls[0][:2] == ("history.list", 200)


async def test_list_history_with_nothing_new(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body={"historyId": "1710"})
    page = await session.list_history(1700)
    assert page == HistoryPage(records=(), next_page_token=None, history_id=1710)
    assert "historyTypes" not in fake.last.url.params


async def test_iter_history_follows_tokens_through_empty_pages(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(body={"nextPageToken": "p2", "historyId": "50"})  # token, no history
    fake.answer(
        body={"history": [{"id": "45", "messages": []}], "nextPageToken": "p3", "historyId": "50"}
    )
    fake.answer(body={"history": [{"id": "48"}], "historyId": "51"})
    pages = [page async for page in session.iter_history(40)]
    assert [[r.id for r in p.records] for p in pages] == [[], [45], [48]]
    assert pages[-1].history_id == 51
    tokens = [r.url.params.get("pageToken") for r in fake.requests]
    assert tokens == [None, "p2", "p3"]
    assert all(r.url.params["startHistoryId"] == "40" for r in fake.requests)


async def test_history_too_old_is_not_found(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(
        404,
        {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "errors": [{"reason": "notFound"}],
            }
        },
    )
    with pytest.raises(NotFound):
        await session.list_history(1)
    assert fake.calls[0][:2] == ("history.list", 404)


async def test_watch_and_stop(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body={"historyId": "1234567890", "expiration": "1431990098200"})
    result = await session.watch(
        "projects/p/topics/gmail", label_ids=["INBOX"], label_filter_behavior="include"
    )
    assert json.loads(fake.last.content) == {
        "topicName": "projects/p/topics/gmail",
        "labelIds": ["INBOX"],
        "labelFilterBehavior": "include",
    }
    assert fake.last.url.path == "/gmail/v1/users/me/watch"
    assert result.history_id == 1234567890
    assert result.expiration == datetime(2015, 5, 18, 23, 1, 38, 200000, tzinfo=UTC)

    fake.answer(204)
    await session.stop()
    assert (fake.last.method, fake.last.url.path) == ("POST", "/gmail/v1/users/me/stop")
    assert [c[:2] for c in fake.calls] == [("watch", 200), ("stop", 204)]


async def test_watch_with_topic_only(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body={"historyId": 5, "expiration": 1431990098200})  # bare numbers, as in the guide
    result = await session.watch("projects/p/topics/gmail")
    assert json.loads(fake.last.content) == {"topicName": "projects/p/topics/gmail"}
    assert result.history_id == 5


async def test_get_attachment_decodes_unpadded_data(fake: FakeGmail, session: GmailSession) -> None:
    fake.answer(body={"size": 5, "data": b64url(b"\xfb\xffPDF", pad=False)})
    data = await session.get_attachment("m1", "ANGj")
    assert data == b"\xfb\xffPDF"
    assert fake.last.url.path == "/gmail/v1/users/me/messages/m1/attachments/ANGj"
    assert fake.calls[0][0] == "messages.attachments.get"


@pytest.mark.parametrize(
    "body",
    [
        {"emailAddress": "x@example.com"},  # historyId missing
        {"emailAddress": "x@example.com", "historyId": "abc"},
        {"historyId": "1"},
        [],
    ],
)
async def test_malformed_success_body_is_malformed_response(
    fake: FakeGmail, session: GmailSession, body: Any
) -> None:
    fake.answer(body=body)
    with pytest.raises(MalformedResponse):
        await session.get_profile()


async def test_non_json_success_body_is_malformed_response(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.responses.append(httpx.Response(200, content=b"<html>"))
    with pytest.raises(MalformedResponse):
        await session.get_profile()


async def test_rate_limit_is_reported_to_the_hook_with_its_status(
    fake: FakeGmail, session: GmailSession
) -> None:
    fake.answer(
        403,
        {
            "error": {
                "code": 403,
                "message": "User-rate limit exceeded.  Retry after 2026-09-16T03:57:19.386Z",
                "errors": [{"reason": "rateLimitExceeded"}],
            }
        },
    )
    with pytest.raises(RateLimited):
        await session.send(RAW)
    method, status, seconds = fake.calls[0]
    assert (method, status) == ("messages.send", 403)
    assert seconds >= 0


async def test_transport_failure_is_reported_with_status_zero() -> None:
    calls: list[tuple[str, int, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        session = GmailClient(http, BASE, on_call=lambda *c: calls.append(c)).for_token(TOKEN)
        with pytest.raises(TransportFailure):
            await session.get_profile()
    assert calls[0][:2] == ("getProfile", 0)


async def test_a_broken_hook_does_not_break_the_call(fake: FakeGmail) -> None:
    def broken(method: str, status: int, seconds: float) -> None:
        raise RuntimeError("metrics down")

    fake.answer(body={"emailAddress": "a@example.com", "historyId": "1"})
    hook: Callable[[str, int, float], None] = broken
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        profile = await GmailClient(http, BASE, on_call=hook).for_token(TOKEN).get_profile()
    assert profile.history_id == 1
