import pytest

from app.mail import (
    Address,
    MailInputError,
    parse_address,
    parse_address_list,
    reject_header_injection,
)


def test_bare_address_is_accepted_and_domain_lowercased() -> None:
    assert parse_address("to", " anna@Example.COM ") == Address("anna@example.com")


def test_name_and_address_are_split() -> None:
    assert parse_address("to", "Anna Schmidt <anna@example.com>") == Address(
        "anna@example.com", "Anna Schmidt"
    )


def test_quoted_display_name_is_unquoted() -> None:
    parsed = parse_address("to", '"Müller, Jürgen \\"JM\\"" <j@example.de>')
    assert parsed == Address("j@example.de", 'Müller, Jürgen "JM"')


def test_internationalised_domain_is_sent_as_punycode() -> None:
    assert parse_address("to", "info@münchen.de").address == "info@xn--mnchen-3ya.de"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not an address",
        "anna@",
        "@example.com",
        "a@b@example.com",
        "anna@example.com, tom@example.com",
        "Anna <>",
        "Anna <anna@example.com",
        "A<b> <anna@example.com>",
        "jürgen@example.de",  # non-ASCII local part would need SMTPUTF8
    ],
)
def test_invalid_addresses_are_rejected_naming_the_field(value: str) -> None:
    with pytest.raises(MailInputError) as caught:
        parse_address("cc", value)
    assert caught.value.field == "cc"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "value",
    [
        "anna@example.com\r\nBcc: victim@example.com",
        "Anna\n <anna@example.com>",
        "anna@example.com\r",
        "Anna\x00 <anna@example.com>",
    ],
)
def test_line_breaks_and_nul_are_header_injection(value: str) -> None:
    with pytest.raises(MailInputError, match="line breaks"):
        parse_address("to", value)


def test_reject_header_injection_passes_clean_values_through() -> None:
    assert reject_header_injection("subject", "Grüße \u2013 山田") == "Grüße \u2013 山田"
    with pytest.raises(MailInputError) as caught:
        reject_header_injection("subject", "Hello\nBcc: x@example.com")
    assert caught.value.field == "subject"


def test_address_list_validates_every_item_and_accepts_address_objects() -> None:
    parsed = parse_address_list("to", ["a@example.com", Address("B@Example.com", "Bee")])
    assert parsed == [Address("a@example.com"), Address("B@example.com", "Bee")]
    with pytest.raises(MailInputError):
        parse_address_list("to", [Address("b@example.com", "Evil\r\nBcc: x")])


def test_str_quotes_display_names_only_where_needed() -> None:
    assert str(Address("j@example.de", "Jürgen Müller")) == "Jürgen Müller <j@example.de>"
    assert str(Address("j@example.de", "Müller, Jürgen")) == '"Müller, Jürgen" <j@example.de>'
    assert str(Address("j@example.de", 'Say "hi"')) == '"Say \\"hi\\"" <j@example.de>'
    assert str(Address("j@example.de")) == "j@example.de"
