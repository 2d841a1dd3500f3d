import time

import pytest

from app.mail import reply_text_from, strip_quoted, strip_quoted_html

GMAIL = """\
Thanks Anna, Tuesday works for me.

Best,
Tom

On Mon, Jan 5, 2026 at 10:00\u202fAM Anna Schmidt <anna@example.com> wrote:

> Hi Tom,
>
> would Tuesday suit you for a call?
>
> Anna
>
"""

GMAIL_WRAPPED = """\
Sounds good, see you then.

On Mon, Jan 5, 2026 at 10:00 AM Anna Katharina Schmidt-Oberhausen <
anna.schmidt@example-company.com> wrote:

> Hi Tom,
> would Tuesday suit you?
"""

GMAIL_GERMAN = """\
Passt, danke!

Am Mo., 5. Jan. 2026 um 10:00 Uhr schrieb Anna Schmidt <anna@example.com>:

> Hallo Jürgen,
> passt Dienstag?
"""

GMAIL_FRENCH = """\
Bonjour Anna,

Merci, je suis disponible mardi.

Cordialement,
Pierre

Le lun. 5 janv. 2026 à 10:00, Anna Schmidt <anna@example.com> a écrit :

> Bonjour Pierre,
> seriez-vous disponible mardi ?
"""

OUTLOOK = """\
Hi Anna,

Yes, please send the offer.

Kind regards
Tom

From: Anna Schmidt <anna@example.com>
Sent: Monday, January 5, 2026 10:00 AM
To: Tom Baker <tom@customer.example>
Cc: Sales <sales@example.com>
Subject: Our offer

Hi Tom,
here is the offer.
"""

OUTLOOK_WEB = """\
Yes, please send it.

________________________________
From: Anna Schmidt <anna@example.com>
Sent: Monday, January 5, 2026 10:00
To: Tom Baker <tom@customer.example>
Subject: Our offer

Hi Tom,
"""

OUTLOOK_ORIGINAL_MESSAGE = """\
Please call me tomorrow.

-----Original Message-----
From: Anna Schmidt [mailto:anna@example.com]
Sent: Monday, January 05, 2026 10:00 AM
To: Tom Baker
Subject: Our offer

Hi Tom, here is the offer.
"""

OUTLOOK_GERMAN = """\
Hallo Anna,

danke, das passt mir gut.

Viele Grüße
Jürgen

Von: Anna Schmidt <anna@example.com>
Gesendet: Montag, 5. Januar 2026 10:00
An: Jürgen Müller <juergen@kunde.example>
Betreff: Unser Angebot

Hallo Jürgen,
anbei unser Angebot.
"""

OUTLOOK_GERMAN_ORIGINAL = """\
Bitte rufen Sie mich an.

-----Ursprüngliche Nachricht-----
Von: Anna Schmidt
Gesendet: Montag, 5. Januar 2026 10:00
An: Jürgen Müller
Betreff: Unser Angebot
"""

OUTLOOK_BOLD = """\
Yes.

*From:* Anna Schmidt <anna@example.com>
*Sent:* Monday, January 5, 2026 10:00 AM
*To:* Tom Baker <tom@customer.example>
*Subject:* Our offer
"""

APPLE_MAIL = """\
Perfect, thank you!

> On 5 Jan 2026, at 10:00, Anna Schmidt <anna@example.com> wrote:
>
> Hi Tom, here is the offer.
"""

APPLE_MAIL_UNQUOTED_ATTRIBUTION = """\
Perfect, thank you!

Sent from my iPhone

On 5 Jan 2026, at 10:00, Anna Schmidt <anna@example.com> wrote:

> Hi Tom, here is the offer.
"""

THUNDERBIRD = """\
Agreed.

On 05.01.26 10:00, Anna Schmidt wrote:
> Hi Tom, here is the offer.
"""

PLAIN_QUOTE = """\
I agree with the first point.

> Point one: we ship in March.
> Point two: we bill in April.
"""

SIGNATURE = """\
Let's do it.

-- \n\
Tom Baker
Head of Purchasing, Customer Ltd.
+49 30 1234567
"""

BOTTOM_POSTED = """\
On Mon, Jan 5, 2026 at 10:00 AM Anna Schmidt <anna@example.com> wrote:
> Would Tuesday suit you?

Tuesday is fine.
"""

INLINE_REPLY = """\
> Would Tuesday suit you?
Yes.

> And shall I bring the contract?
Please do.
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GMAIL, "Thanks Anna, Tuesday works for me.\n\nBest,\nTom"),
        (GMAIL_WRAPPED, "Sounds good, see you then."),
        (GMAIL_GERMAN, "Passt, danke!"),
        (GMAIL_FRENCH, "Bonjour Anna,\n\nMerci, je suis disponible mardi.\n\nCordialement,\n"
                       "Pierre"),
        (OUTLOOK, "Hi Anna,\n\nYes, please send the offer.\n\nKind regards\nTom"),
        (OUTLOOK_WEB, "Yes, please send it."),
        (OUTLOOK_ORIGINAL_MESSAGE, "Please call me tomorrow."),
        (OUTLOOK_GERMAN, "Hallo Anna,\n\ndanke, das passt mir gut.\n\nViele Grüße\nJürgen"),
        (OUTLOOK_GERMAN_ORIGINAL, "Bitte rufen Sie mich an."),
        (OUTLOOK_BOLD, "Yes."),
        (APPLE_MAIL, "Perfect, thank you!"),
        (APPLE_MAIL_UNQUOTED_ATTRIBUTION, "Perfect, thank you!\n\nSent from my iPhone"),
        (THUNDERBIRD, "Agreed."),
        (PLAIN_QUOTE, "I agree with the first point."),
        (SIGNATURE, "Let's do it."),
        (BOTTOM_POSTED, "Tuesday is fine."),
        (INLINE_REPLY, "Yes.\n\nPlease do."),
    ],
    ids=[
        "gmail", "gmail-wrapped", "gmail-de", "gmail-fr", "outlook", "outlook-web",
        "outlook-original-message", "outlook-de", "outlook-de-original", "outlook-bold",
        "apple", "apple-unquoted", "thunderbird", "plain-quote", "signature", "bottom-posted",
        "inline",
    ],
)  # fmt: skip
def test_quoted_history_is_cut(text: str, expected: str) -> None:
    assert strip_quoted(text) == expected
    assert strip_quoted(text.replace("\n", "\r\n")) == expected


@pytest.mark.parametrize(
    "text",
    [
        "On second thought, I wrote the draft myself.\nSee attached.",
        "On Tuesday I wrote:\nthe plan is ready.",  # no date: prose, not an attribution
        "From: the warehouse we got 3 pallets.\nTo be honest, fine.",
        "Items:\n- one\n- two\nok",
        "Price -- 100 EUR",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert strip_quoted(text) == text


def test_a_reply_with_nothing_new_is_empty() -> None:
    assert strip_quoted("> only a quote\n> nothing else\n") == ""
    assert strip_quoted("") == ""


GMAIL_HTML = """\
<div dir="ltr">Thanks Anna,<div>Tuesday works.</div><div><br></div></div><br>\
<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Mon, Jan 5, \
2026 at 10:00\u202fAM Anna Schmidt &lt;<a href="mailto:anna@example.com">anna@example.com</a>\
&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;\
border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">Hi Tom,<div>would \
Tuesday suit you?</div></div></blockquote></div>
"""

OUTLOOK_HTML = """\
<html><head><style>p.MsoNormal{margin:0cm}</style></head><body lang=DE>\
<div class=WordSection1><p class=MsoNormal>Yes, please.<o:p></o:p></p>\
<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Tom<o:p></o:p></p>\
<p class=MsoNormal><o:p>&nbsp;</o:p></p><div><div style='border:none;border-top:solid #E1E1E1 \
1.0pt;padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal><b>From:</b> Anna Schmidt \
&lt;anna@example.com&gt; <br><b>Sent:</b> Monday, January 5, 2026 10:00 AM<br><b>To:</b> Tom\
<br><b>Subject:</b> Offer<o:p></o:p></p></div></div><p class=MsoNormal>Hi Tom</p></div>\
</body></html>
"""

OUTLOOK_WEB_GERMAN_HTML = """\
<div dir="ltr"><div style="font-family:Calibri">Danke, passt.</div></div>\
<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">\
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt"><b>Von:</b> \
Anna Schmidt &lt;anna@example.com&gt;<br><b>Gesendet:</b> Montag, 5. Januar 2026 10:00<br>\
<b>An:</b> Jürgen Müller<br><b>Betreff:</b> Unser Angebot</font><div>&nbsp;</div></div>\
<div>Hallo Jürgen</div>
"""

APPLE_HTML = """\
<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>\
<body dir="auto"><div dir="ltr">Perfect, thank you!</div><div dir="ltr"><br></div>\
<div dir="ltr"><br><blockquote type="cite">On 5 Jan 2026, at 10:00, Anna Schmidt \
&lt;anna@example.com&gt; wrote:<br><br></blockquote></div><blockquote type="cite">\
<div dir="ltr">Hi Tom, here is the offer.</div></blockquote></body></html>
"""

FRENCH_GMAIL_HTML = """\
<div dir="ltr">Merci, mardi me convient.</div><br><div class="gmail_quote"><div dir="ltr" \
class="gmail_attr">Le lun. 5 janv. 2026 à 10:00, Anna Schmidt &lt;anna@example.com&gt; a \
écrit&nbsp;:<br></div><blockquote class="gmail_quote">Bonjour</blockquote></div>
"""

THUNDERBIRD_HTML = """\
<p>Agreed.</p><div class="moz-cite-prefix">On 05.01.26 10:00, Anna Schmidt wrote:<br></div>\
<blockquote type="cite" cite="mid:abc@example.com">Hi Tom</blockquote>
"""

NO_MARKER_HTML = """\
<div>Yes, please.</div><div><br></div><div>From: Anna Schmidt</div><div>Sent: Monday</div>\
<div>To: Tom</div><div>Subject: Offer</div><div>Hi Tom</div>
"""

BOTTOM_POSTED_HTML = """\
<blockquote type="cite">Would Tuesday suit you?</blockquote><div>Tuesday is fine.</div>
"""


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (GMAIL_HTML, "Thanks Anna,\nTuesday works."),
        (OUTLOOK_HTML, "Yes, please.\n\nTom"),
        (OUTLOOK_WEB_GERMAN_HTML, "Danke, passt."),
        (APPLE_HTML, "Perfect, thank you!"),
        (FRENCH_GMAIL_HTML, "Merci, mardi me convient."),
        (THUNDERBIRD_HTML, "Agreed."),
        (NO_MARKER_HTML, "Yes, please."),
        (BOTTOM_POSTED_HTML, "Tuesday is fine."),
    ],
    ids=["gmail", "outlook", "outlook-web-de", "apple", "gmail-fr", "thunderbird",
         "header-block-as-text", "bottom-posted"],
)  # fmt: skip
def test_quoted_history_is_cut_from_html(html: str, expected: str) -> None:
    assert strip_quoted_html(html) == expected


def test_reply_text_prefers_the_text_part_and_falls_back_to_html() -> None:
    assert reply_text_from(GMAIL, GMAIL_HTML) == "Thanks Anna, Tuesday works for me.\n\nBest,\nTom"
    assert reply_text_from(None, GMAIL_HTML) == "Thanks Anna,\nTuesday works."
    assert reply_text_from("  \n", GMAIL_HTML) == "Thanks Anna,\nTuesday works."
    assert reply_text_from(None, None) == ""
    assert reply_text_from("> all quoted", None) == ""


def test_cost_is_linear_on_hostile_input() -> None:
    hostile = [
        ("On a line that goes on 12 and on " * 12 + "\n") * 5000,
        ("Am 5. schrieb " * 28 + "\n") * 5000,
        "From: x\n" * 20000,
        ("Le 5 a écrit " * 25 + "\n") * 5000,
        ("\nOn 1 Jan 2026 x wrote:\n") * 20000,
        "a " * 500_000,
    ]
    for text in hostile:
        started = time.perf_counter()
        strip_quoted(text)
        assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "history",
    [
        "El lun, 5 ene 2026 a las 10:00, Anna Schmidt (<anna@example.com>) escribió:\n> Hola",
        "Il giorno lun 5 gen 2026 alle ore 10:00 Anna Schmidt <anna@example.com> ha scritto:\n> x",
        "Op ma 5 jan. 2026 om 10:00 schreef Anna Schmidt <anna@example.com>:\n> Hallo",
        "Em seg., 5 de jan. de 2026 às 10:00, Anna Schmidt <anna@example.com> escreveu:\n> Olá",
        "---------- Forwarded message ---------\nFrom: Anna <anna@example.com>\nHi",
        "Begin forwarded message:\n\nFrom: Anna <anna@example.com>",
        "De : Anna Schmidt <anna@example.com>\nEnvoyé : lundi 5 janvier 2026 10:00\n"
        "À : Pierre\nObjet : Offre",
        "-----Message d'origine-----\nDe : Anna",
    ],
    ids=[
        "es",
        "it",
        "nl",
        "pt",
        "gmail-forward",
        "apple-forward",
        "outlook-fr",
        "outlook-fr-original",
    ],
)
def test_other_languages_and_forward_markers_end_the_reply(history: str) -> None:
    assert strip_quoted(f"New text.\n\n{history}\n") == "New text."
