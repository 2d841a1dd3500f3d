from __future__ import annotations

import base64

import pytest

from app.google.wire import WireFormatError, as_int, b64decode_lenient, b64url_encode

# Bytes whose base64 uses the characters that differ between the alphabets (+/ vs -_).
SAMPLE = bytes([0xFB, 0xFF, 0xBF, 0x00, 0x3E, 0x3F, 0x61])


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(SAMPLE).decode(),  # standard, padded
        base64.b64encode(SAMPLE).decode().rstrip("="),  # standard, unpadded
        base64.urlsafe_b64encode(SAMPLE).decode(),  # url-safe, padded
        base64.urlsafe_b64encode(SAMPLE).decode().rstrip("="),  # url-safe, unpadded
    ],
)
def test_b64_decodes_both_alphabets_with_or_without_padding(encoded: str) -> None:
    assert b64decode_lenient(encoded) == SAMPLE
    assert b64decode_lenient(encoded.encode()) == SAMPLE


@pytest.mark.parametrize("bad", ["a", "abcde", "ab$d", "=abc", "ab==cd"])
def test_b64_rejects_garbage(bad: str) -> None:
    with pytest.raises(WireFormatError):
        b64decode_lenient(bad)


def test_b64url_encode_round_trips() -> None:
    encoded = b64url_encode(SAMPLE)
    assert "+" not in encoded and "/" not in encoded
    assert b64decode_lenient(encoded) == SAMPLE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4467334", 4467334),
        (1710, 1710),
        ("18446744073709551615", 2**64 - 1),
        (2**60 + 1, 2**60 + 1),
    ],
)
def test_as_int_accepts_numbers_and_decimal_strings(value: object, expected: int) -> None:
    assert as_int(value, "x") == expected


@pytest.mark.parametrize("value", [True, None, 1.5, "1e3", "", "12a", [1]])
def test_as_int_rejects_everything_else(value: object) -> None:
    with pytest.raises(WireFormatError):
        as_int(value, "x")
