"""Mail between sandbox accounts, people's replies, and the SMTP relay (§8 item 12, §7)."""

from __future__ import annotations

import base64
import smtplib
from email import message_from_string, policy
from typing import Any

import pytest

from sandbox.testing import RunningSandbox, SandboxControlError, run_sandbox
from tests.sandbox.conftest import unique_email
from tests.sandbox.gmail_client import gmail_service, raw_of, simple_mail


def _rep(google: RunningSandbox) -> tuple[str, Any]:
    email = google.create_account(unique_email("rep"), "Rita Rep")
    return email, gmail_service(google, google.grant(email, ["gmail.modify"]))


def _raw(google: RunningSandbox, email: str, gmail_id: str) -> Any:
    text = google.request("GET", f"/_sandbox/accounts/{email}/messages/{gmail_id}")["raw"]
    return message_from_string(text, policy=policy.default)


def _outbound(
    google: RunningSandbox, gmail: Any, rep: str, lead: str
) -> tuple[dict[str, Any], str]:
    mail = simple_mail(
        rep,
        lead,
        "Your quote",
        "Hi Lee,\nhere is the quote.",
        extra="Message-ID: <q1@crm.test>\r\n",
    )
    sent = gmail.users().messages().send(userId="me", body={"raw": raw_of(mail)}).execute()
    return sent, "<q1@crm.test>"


def test_12_delivery_to_a_sandbox_account_lands_in_its_inbox(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"), "Lee Lead")
    sent, message_id = _outbound(google, gmail, rep, lead)
    (received,) = google.messages(lead)
    assert received["labelIds"] == ["INBOX", "UNREAD"]
    assert received["message_id"] == message_id
    assert received["threadId"] != sent["threadId"]  # each party threads on its own
    parsed = _raw(google, lead, received["id"])
    assert parsed["Delivered-To"] == lead
    out = google.outgoing()[-1]
    assert out["delivered_to"] == [lead] and out["external"] == []


def test_customer_reply_threads_into_reps_original_thread(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"), "Lee Lead")
    sent, message_id = _outbound(google, gmail, rep, lead)
    result = google.customer_reply(lead, message_id=message_id, text="Looks great, let's talk.")
    (delivered,) = result["delivered"]
    assert delivered["email"] == rep and delivered["threadId"] == sent["threadId"]
    (lead_copy,) = [m for m in google.messages(lead) if m["id"] == result["sent"]["id"]]
    assert "SENT" in lead_copy["labelIds"]
    reply = _raw(google, rep, delivered["id"])
    assert reply["In-Reply-To"] == message_id
    assert reply["References"] == message_id
    assert reply["Subject"] == "Re: Your quote"
    assert "Lee Lead" in reply["From"] and reply["To"] == rep
    text = reply.get_body(("plain",)).get_content()
    assert text.startswith("Looks great, let's talk.")
    assert f"<{rep}> wrote:" in text
    assert "> Hi Lee," in text and "> here is the quote." in text
    html = reply.get_body(("html",)).get_content()
    assert 'class="gmail_quote"' in html and "<blockquote" in html


def test_second_reply_references_the_whole_chain(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"), "Lee Lead")
    sent, message_id = _outbound(google, gmail, rep, lead)
    first = google.customer_reply(lead, message_id=message_id, text="One")
    lead_thread = first["sent"]["threadId"]
    second = google.customer_reply(lead, thread_id=lead_thread, text="Two")
    reply = _raw(google, rep, second["delivered"][0]["id"])
    assert reply["References"].split() == [message_id, first["message_id"]]
    assert reply["In-Reply-To"] == first["message_id"]
    assert second["delivered"][0]["threadId"] == sent["threadId"]


def test_external_customer_can_reply_by_message_id(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    sent, message_id = _outbound(google, gmail, rep, "lead@not-in-sandbox.test")
    result = google.customer_reply("lead@not-in-sandbox.test", message_id=message_id, text="Hi!")
    assert result["sent"] is None
    assert result["delivered"][0]["threadId"] == sent["threadId"]


def test_rep_reply_in_gmail_stays_in_reps_thread(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"))
    sent, _ = _outbound(google, gmail, rep, lead)
    result = google.rep_reply_in_gmail(rep, thread_id=sent["threadId"], text="Any news?")
    assert result["sent"]["threadId"] == sent["threadId"]
    thread = (
        gmail.users().threads().get(userId="me", id=sent["threadId"], format="minimal").execute()
    )
    assert [m["labelIds"] for m in thread["messages"]] == [["SENT"], ["SENT"]]
    (lead_copy,) = [d for d in result["delivered"] if d["email"] == lead]
    assert lead_copy["threadId"] == google.messages(lead)[0]["threadId"]


def test_customer_new_thread_and_subject_change_split(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"))
    sent, message_id = _outbound(google, gmail, rep, lead)
    fresh = google.customer_new_thread(lead, [rep], "Another question", "Hello again")
    assert fresh["delivered"][0]["threadId"] != sent["threadId"]
    changed = google.customer_reply(lead, message_id=message_id, text="x", subject="New topic")
    assert changed["delivered"][0]["threadId"] != sent["threadId"]


def test_reply_with_attachment_and_raw_insert(google: RunningSandbox) -> None:
    rep, gmail = _rep(google)
    lead = google.create_account(unique_email("lead"))
    _, message_id = _outbound(google, gmail, rep, lead)
    result = google.customer_reply(
        lead,
        message_id=message_id,
        text="Signed.",
        attachments=[("s.pdf", "application/pdf", b"%PDF")],
    )
    got = gmail.users().messages().get(userId="me", id=result["delivered"][0]["id"]).execute()
    assert got["payload"]["parts"][1]["filename"] == "s.pdf"
    raw = b"From: x@y.test\r\nTo: " + rep.encode() + b"\r\nSubject: Raw\r\n\r\nraw body\r\n"
    inserted = google.insert_raw(rep, raw, labels=["INBOX"])
    assert inserted["labelIds"] == ["INBOX"]


def test_control_errors_are_reported(google: RunningSandbox) -> None:
    lead = google.create_account(unique_email("lead"))
    with pytest.raises(SandboxControlError) as caught:
        google.customer_reply(lead, message_id="<nothing@x>")
    assert caught.value.status == 404
    assert google.create_account(lead) == lead  # 200: exists already
    with pytest.raises(SandboxControlError):
        google.fault("gmail.users.messages.get", "no-such-kind")


def test_smtp_relay_accepts_auth_without_tls_and_delivers(google: RunningSandbox) -> None:
    lead = google.create_account(unique_email("lead"))
    message = (
        f"From: CRM <noreply@crm.test>\r\nTo: {lead}, someone@outside.test\r\n"
        "Subject: From the default sender\r\nMessage-ID: <smtp-1@crm.test>\r\n\r\nHello by SMTP\r\n"
    )
    with smtplib.SMTP("127.0.0.1", google.smtp_port, timeout=5) as client:
        client.login("any-user", "any-password")
        refused = client.sendmail(
            "bounce@crm.test", [lead, "someone@outside.test", "hidden@outside.test"], message
        )
    assert refused == {}
    (entry,) = google.outgoing(via="smtp")
    assert entry["envelope_from"] == "bounce@crm.test"
    assert entry["rcpt_tos"] == [lead, "someone@outside.test", "hidden@outside.test"]
    assert entry["delivered_to"] == [lead]
    assert entry["external"] == ["someone@outside.test", "hidden@outside.test"]
    assert "Hello by SMTP" in entry["raw"]
    assert base64.urlsafe_b64decode(entry["raw_b64"]).startswith(b"From: CRM")
    (received,) = google.messages(lead)
    assert received["message_id"] == "<smtp-1@crm.test>"


def test_smtp_without_auth_is_accepted(google: RunningSandbox) -> None:
    with smtplib.SMTP("127.0.0.1", google.smtp_port, timeout=5) as client:
        client.sendmail("a@crm.test", ["b@outside.test"], "Subject: x\r\n\r\ny\r\n")
    assert google.outgoing(via="smtp")[0]["external"] == ["b@outside.test"]


def test_smtp_with_configured_credentials_refuses_a_wrong_password_at_once() -> None:
    with run_sandbox(smtp_user="relay", smtp_password="s3cret", log_level="error") as google:
        with smtplib.SMTP("127.0.0.1", google.smtp_port, timeout=5) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                client.login("relay", "wrong")
            assert caught.value.smtp_code == 535
        with smtplib.SMTP("127.0.0.1", google.smtp_port, timeout=5) as client:
            client.login("relay", "s3cret")
            refused = client.sendmail("a@crm.test", ["b@outside.test"], "Subject: x\r\n\r\ny\r\n")
        assert refused == {}
