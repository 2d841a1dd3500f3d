import re

import pytest

from app.mail import (
    MAX_REFERENCES,
    MailInputError,
    build_references,
    make_message_id,
    normalize_subject,
    parse_message_ids,
    reply_subject,
    validate_message_id,
)


def test_message_ids_are_unique_and_well_formed() -> None:
    ids = {make_message_id("mail.example.com") for _ in range(200)}
    assert len(ids) == 200
    for message_id in ids:
        assert re.fullmatch(r"<[0-9a-f]{32}@mail\.example\.com>", message_id)


@pytest.mark.parametrize("domain", ["", "exa mple.com", "example.com>", "a@b", "x\r\ny"])
def test_message_id_domain_must_be_a_hostname(domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(domain)


def test_validate_message_id() -> None:
    assert validate_message_id("in_reply_to", " <a.b@c.d> ") == "<a.b@c.d>"
    for bad in ["a@b", "<a b@c>", "<a@b> <c@d>", "<ab>", "<a@b>\r\nBcc: x@y"]:
        with pytest.raises(MailInputError):
            validate_message_id("in_reply_to", bad)


def test_parse_message_ids_handles_folding_comments_and_bare_ids() -> None:
    assert parse_message_ids("<a@x>\r\n <b@y>\t(comment) <c@z>") == ["<a@x>", "<b@y>", "<c@z>"]
    assert parse_message_ids("<a@x>,<b@y>") == ["<a@x>", "<b@y>"]
    assert parse_message_ids("a@x b@y") == ["<a@x>", "<b@y>"]
    assert parse_message_ids("") == []
    assert parse_message_ids(None) == []
    assert parse_message_ids("no ids here") == []


def test_references_are_the_parents_followed_by_the_parent_id() -> None:
    assert build_references(["<r@x> <s@x>"], "<p@x>") == ["<r@x>", "<s@x>", "<p@x>"]
    assert build_references(["<r@x>", "<s@x>"], "<p@x>") == ["<r@x>", "<s@x>", "<p@x>"]


def test_references_fall_back_to_a_single_in_reply_to() -> None:
    assert build_references([], "<p@x>", parent_in_reply_to=["<q@x>"]) == ["<q@x>", "<p@x>"]
    # Several parents in In-Reply-To are ambiguous: RFC 5322 uses the parent alone.
    assert build_references([], "<p@x>", parent_in_reply_to=["<q@x> <r@x>"]) == ["<p@x>"]
    # References win over In-Reply-To.
    assert build_references(["<r@x>"], "<p@x>", parent_in_reply_to=["<q@x>"]) == [
        "<r@x>",
        "<p@x>",
    ]


def test_references_of_a_first_reply_are_the_parent_alone() -> None:
    assert build_references([], "<p@x>") == ["<p@x>"]


def test_references_drop_duplicates_and_keep_the_parent_last() -> None:
    refs = build_references(["<a@x>", "<p@x>", "<a@x>", "<b@x>"], "<p@x>")
    assert refs == ["<a@x>", "<b@x>", "<p@x>"]


def test_long_references_keep_the_root_and_the_latest() -> None:
    ancestors = [f"<m{i}@x>" for i in range(50)]
    refs = build_references(ancestors, "<parent@x>")
    assert len(refs) == MAX_REFERENCES
    assert refs[0] == "<m0@x>"
    assert refs[-1] == "<parent@x>"
    assert refs[1:-1] == ancestors[-(MAX_REFERENCES - 2) :]
    assert build_references(ancestors, "<parent@x>", limit=3) == ["<m0@x>", "<m49@x>", "<parent@x>"]


def test_references_need_exactly_one_parent_id() -> None:
    with pytest.raises(ValueError):
        build_references([], "not-an-id")
    with pytest.raises(ValueError):
        build_references([], "<a@x>", limit=1)


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Our offer", "Re: Our offer"),
        ("Re: Our offer", "Re: Our offer"),
        ("RE: Our offer", "Re: Our offer"),
        ("re:Our offer", "Re: Our offer"),
        ("AW: Re: RE: Our offer", "Re: Our offer"),
        ("Aw: Unser Angebot", "Re: Unser Angebot"),
        ("Re[2]: Our offer", "Re: Our offer"),
        ("SV: Vårt erbjudande", "Re: Vårt erbjudande"),
        ("Réf : Notre offre", "Re: Notre offre"),
        ("Re\uff1a見積もり", "Re: 見積もり"),
        ("Fwd: Our offer", "Re: Fwd: Our offer"),
        ("  Our   offer  ", "Re: Our offer"),
        ("Regarding our offer", "Re: Regarding our offer"),
        ("Area 51", "Re: Area 51"),
        ("", "Re:"),
    ],
)
def test_reply_subject_does_not_stack_prefixes(original: str, expected: str) -> None:
    assert reply_subject(original) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Fwd: AW: WG: Our offer", "Our offer"),
        ("FW: Our   offer", "Our offer"),
        ("Our offer", "Our offer"),
        ("Re: Re:", ""),
        ("Transport: tomorrow", "Transport: tomorrow"),
    ],
)
def test_normalize_subject_strips_reply_and_forward_prefixes(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected
