import base64
import os
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.mail import Address, Attachment, decode_text, parse_message


def _corpus_dir() -> Path | None:
    try:
        import test  # the CPython test package; some distributions leave it out
    except ImportError:
        return None
    directory = Path(os.path.dirname(test.__file__)) / "test_email" / "data"
    return directory if directory.is_dir() else None


CORPUS = _corpus_dir()
CORPUS_MESSAGES = sorted(CORPUS.glob("msg_*.txt")) if CORPUS else []


def _message(headers: str, body: bytes) -> bytes:
    return headers.strip().replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def _single(content_type: str, body: bytes, encoding: str = "8bit") -> bytes:
    return _message(
        f"""
From: Anna <anna@example.com>
To: tom@example.com
Subject: test
Content-Type: {content_type}
Content-Transfer-Encoding: {encoding}
""",
        body,
    )


@pytest.mark.parametrize(
    ("content_type", "body", "encoding", "expected"),
    [
        ('text/plain; charset="iso-8859-1"', "Grüße".encode("latin-1"), "8bit", "Grüße"),
        (
            "text/plain; charset=windows-1252",
            "„Angebot“ \u2013 5 €".encode("cp1252"),
            "8bit",
            "„Angebot“ \u2013 5 €",
        ),
        # Declared latin-1 but really cp1252: the curly quotes and euro sign survive.
        ("text/plain; charset=iso-8859-1", "“5 €”".encode("cp1252"), "8bit", "“5 €”"),
        (
            "text/plain; charset=utf-8",
            b"Gr=C3=BC=C3=9Fe=\r\n aus M=C3=BCnchen",
            "quoted-printable",
            "Grüße aus München",
        ),
        ("text/plain; charset=utf-8", base64.b64encode("山田です".encode()), "base64", "山田です"),
        # No charset at all, 8-bit UTF-8 content.
        ("text/plain", "Grüße".encode(), "8bit", "Grüße"),
        # Declared UTF-8, really latin-1.
        ("text/plain; charset=utf-8", "Grüße".encode("latin-1"), "8bit", "Grüße"),
        # Declared latin-1, really UTF-8.
        ("text/plain; charset=iso-8859-1", "Grüße".encode(), "8bit", "Grüße"),
        # A charset nobody knows.
        ("text/plain; charset=x-made-up", "Grüße".encode(), "8bit", "Grüße"),
        ("text/plain; charset=base64", b"plain", "8bit", "plain"),
        ("text/plain; charset=iso-2022-jp", "山田".encode("iso-2022-jp"), "7bit", "山田"),
        ("text/plain; charset=gb2312", "简体中文".encode("gb18030"), "8bit", "简体中文"),
        ("text/plain; charset=shift_jis", "①山田".encode("cp932"), "8bit", "①山田"),
        ("text/plain; charset=koi8-r", "Привет".encode("koi8-r"), "8bit", "Привет"),
    ],
)
def test_bodies_are_decoded_whatever_the_charset(
    content_type: str, body: bytes, encoding: str, expected: str
) -> None:
    parsed = parse_message(_single(content_type, body, encoding))
    assert parsed.body_text == expected


def test_decode_text_never_raises_on_garbage() -> None:
    garbage = bytes(range(256))
    for charset in (None, "utf-8", "ascii", "x-unknown", "utf\x00-8", "", "latin-1", "big5"):
        assert isinstance(decode_text(garbage, charset), str)


def test_broken_base64_does_not_raise() -> None:
    parsed = parse_message(
        _single("text/plain; charset=utf-8", b"SGVsbG8gd29y!!bGQ=\r\n==", "base64")
    )
    assert isinstance(parsed.body_text, str)


def test_html_only_message_gets_a_derived_text_body() -> None:
    html = "<html><body><p>Hello <b>Tom</b>,</p><p>see you &amp; bye</p></body></html>"
    parsed = parse_message(_single("text/html; charset=utf-8", html.encode()))
    assert parsed.body_html == html
    assert parsed.body_text == "Hello Tom,\n\nsee you & bye"


def test_headers_are_decoded() -> None:
    raw = _message(
        """
From: =?iso-8859-1?q?J=FCrgen_M=FCller?= <j@example.de>
To: "=?utf-8?b?5bGx55Sw?=" <yamada@example.jp>, =?utf-8?q?M=C3=BCller=2C_J?= <m@example.de>
Cc: plain@example.com
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=
 =?utf-8?q?_aus_M=C3=BCnchen?=
Message-ID: <abc@example.de>
In-Reply-To: <parent@example.com> (sent earlier)
References: <root@example.com>
\t<parent@example.com>
Date: Mon, 5 Jan 2026 10:00:00 +0100
""",
        b"body",
    )
    parsed = parse_message(raw)
    assert parsed.from_ == Address("j@example.de", "Jürgen Müller")
    assert parsed.to == (Address("yamada@example.jp", "山田"), Address("m@example.de", "Müller, J"))
    assert parsed.cc == (Address("plain@example.com"),)
    assert parsed.subject == "Grüße aus München"
    assert parsed.message_id == "<abc@example.de>"
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == ("<root@example.com>", "<parent@example.com>")
    assert parsed.date == datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=1)))


def test_raw_8bit_headers_are_decoded_best_effort() -> None:
    raw = "Subject: Grüße\r\nFrom: Jürgen <j@example.de>\r\n\r\nbody".encode()
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße"
    assert parsed.from_ == Address("j@example.de", "Jürgen")
    latin = "Subject: Grüße\r\n\r\nbody".encode("latin-1")
    assert parse_message(latin).subject == "Grüße"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 5 Jan 2026 10:00:00 -0000", datetime(2026, 1, 5, 10, 0, tzinfo=UTC)),
        ("5 Jan 2026 10:00 GMT", datetime(2026, 1, 5, 10, 0, tzinfo=UTC)),
        ("yesterday at noon", None),
        ("Mon, 99 Foo 2026 99:99:99 +0000", None),
        ("", None),
    ],
)
def test_dates_are_aware_or_none(value: str, expected: datetime | None) -> None:
    parsed = parse_message(_message(f"Date: {value}\nSubject: x", b"body"))
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


def test_missing_headers_give_empty_values() -> None:
    parsed = parse_message(b"\r\njust a body")
    assert parsed.message_id is None
    assert parsed.in_reply_to is None
    assert parsed.references == ()
    assert parsed.subject == ""
    assert parsed.from_ is None
    assert parsed.to == ()
    assert parsed.date is None
    assert parsed.body_text == "just a body"
    assert parsed.attachments == ()


MIXED = b"""From: Anna <anna@example.com>
To: tom@example.com
Subject: files
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/related; boundary="related"

--related
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

See the logo.
--alt
Content-Type: text/html; charset=utf-8

<p>See the logo <img src="cid:logo@example.com"></p>
--alt--
--related
Content-Type: image/png
Content-ID: <logo@example.com>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--related--
--outer
Content-Type: application/pdf; name="offer.pdf"
Content-Disposition: attachment; filename="offer.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfs
--outer
Content-Type: application/vnd.ms-excel
Content-Disposition: attachment; filename*=utf-8''Preis%C3%BCbersicht%202026.xls
Content-Transfer-Encoding: base64

AAECAwQF
--outer
Content-Type: text/plain; name="=?utf-8?q?Gr=C3=BC=C3=9Fe.txt?="
Content-Disposition: attachment; filename="=?utf-8?q?Gr=C3=BC=C3=9Fe.txt?="

hello
--outer
Content-Type: image/jpeg; name="photo.jpg"
Content-Disposition: inline; filename="photo.jpg"
Content-Transfer-Encoding: base64

/9j/4AAQ
--outer
Content-Type: message/rfc822

From: someone@example.com
Subject: forwarded

Inner body that is not ours.
--outer--
""".replace(b"\n", b"\r\n")


def test_multipart_bodies_and_attachments() -> None:
    parsed = parse_message(MIXED)
    assert parsed.body_text == "See the logo."
    assert parsed.body_html == '<p>See the logo <img src="cid:logo@example.com"></p>'
    assert parsed.attachments[:5] == (
        Attachment(None, "image/png", 8, inline=True, content_id="logo@example.com"),
        Attachment("offer.pdf", "application/pdf", 12, inline=False),
        Attachment("Preisübersicht 2026.xls", "application/vnd.ms-excel", 6, inline=False),
        Attachment("Grüße.txt", "text/plain", 5, inline=False),
        Attachment("photo.jpg", "image/jpeg", 6, inline=True),
    )
    forwarded = parsed.attachments[5]
    assert forwarded.mime_type == "message/rfc822"
    assert forwarded.size > len("Inner body that is not ours.")
    assert len(parsed.attachments) == 6
    assert "Inner body" not in parsed.body_text


def test_an_unboundaried_multipart_is_read_as_text() -> None:
    raw = _message("Content-Type: multipart/alternative;\nSubject: x", b"Blah blah")
    parsed = parse_message(raw)
    assert parsed.body_text == "Blah blah"
    assert parsed.attachments == ()


def test_a_structure_the_parser_cannot_read_falls_back_to_text() -> None:
    # An RFC 2231 boundary in a charset with a NUL makes email's parser raise.
    raw = _message(
        "Subject: broken\nContent-Type: multipart/mixed; boundary*=utf\x008''abc",
        b"--abc\r\nContent-Type: text/plain\r\n\r\nhello\r\n--abc--\r\n",
    )
    parsed = parse_message(raw)
    assert parsed.subject == "broken"
    assert "hello" in parsed.body_text


@pytest.mark.skipif(not CORPUS_MESSAGES, reason="CPython's test_email/data is not installed")
@pytest.mark.parametrize("path", CORPUS_MESSAGES, ids=lambda path: path.name)
def test_cpython_corpus_parses_without_raising(path: Path) -> None:
    parsed = parse_message(path.read_bytes())
    assert isinstance(parsed.body_text, str)
    assert all(attachment.size >= 0 for attachment in parsed.attachments)
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


def test_cpython_corpus_is_complete() -> None:
    if not CORPUS_MESSAGES:
        pytest.skip("CPython's test_email/data is not installed")
    assert len(CORPUS_MESSAGES) == 48


_MUTATIONS = [
    b"=?", b"?=", b"=?utf-8?q?", b"=?x-unknown?b?", b"<", b">", b'"', b"\\", b";",
    b"charset=", b"boundary=", b"\r\n", b"\n\n", b"\xff", b"\x00", b":", b"@", b",",
    b"filename*=utf-8''%FF", b"Content-Type: multipart/mixed; boundary=x\n", b"--x\n",
    b"Content-Transfer-Encoding: base64\n", b"=\n", b"<>", b"\t",
]  # fmt: skip


@pytest.mark.skipif(not CORPUS_MESSAGES, reason="CPython's test_email/data is not installed")
def test_mutated_messages_never_raise() -> None:
    originals = [path.read_bytes() for path in CORPUS_MESSAGES]
    rng = random.Random(20260105)
    for _ in range(1500):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(raw) + 1)
            choice = rng.random()
            if choice < 0.4:
                raw[position:position] = rng.choice(_MUTATIONS)
            elif choice < 0.7:
                del raw[position : position + rng.randint(1, 20)]
            else:
                raw[position : position + 1] = bytes([rng.randrange(256)])
        parsed = parse_message(bytes(raw))
        assert isinstance(parsed.body_text, str)


def test_body_line_endings_are_normalised() -> None:
    raw = _single("text/plain; charset=utf-8", b"line one\r\nline two\rline three\r\n")
    assert parse_message(raw).body_text == "line one\nline two\nline three\n"
