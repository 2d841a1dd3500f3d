"""Readers for Google's JSON conventions.

Gmail sends 64-bit integers as JSON strings, omits empty arrays, and encodes bytes as
base64url that may or may not be padded; Pub/Sub uses standard base64 (GOOGLE.md §2.1,
§4, §5.1). These helpers turn that into Python values and raise :class:`WireFormatError`
on anything else, so each caller decides what a malformed document means for it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

JsonObject = Mapping[str, Any]

_INTEGER = re.compile(r"-?[0-9]+")
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")
_TO_STANDARD = str.maketrans("-_", "+/")


class WireFormatError(ValueError):
    """A document from Google does not have the documented shape."""


def as_object(value: object, what: str) -> JsonObject:
    if not isinstance(value, Mapping):
        raise WireFormatError(f"{what}: expected a JSON object")
    return value


def as_int(value: object, what: str) -> int:
    """An integer sent as a JSON number or as a decimal string (int64/uint64 fields)."""
    # bool is an int subclass: `true` is never a valid count or id.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise WireFormatError(f"{what}: expected an integer, got {type(value).__name__}")


def req_str(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise WireFormatError(f"{key}: expected a non-empty string")
    return value


def opt_str(obj: JsonObject, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireFormatError(f"{key}: expected a string")
    return value


def req_int(obj: JsonObject, key: str) -> int:
    if obj.get(key) is None:
        raise WireFormatError(f"{key}: missing")
    return as_int(obj[key], key)


def opt_int(obj: JsonObject, key: str) -> int | None:
    value = obj.get(key)
    return None if value is None else as_int(value, key)


def str_tuple(obj: JsonObject, key: str) -> tuple[str, ...]:
    """A repeated string field; Google omits it when empty."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WireFormatError(f"{key}: expected a list of strings")
    return tuple(value)


def object_tuple(obj: JsonObject, key: str) -> tuple[JsonObject, ...]:
    """A repeated object field; Google omits it when empty."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise WireFormatError(f"{key}: expected a list")
    return tuple(as_object(item, key) for item in value)


def ms_to_datetime(milliseconds: int) -> datetime:
    """Epoch milliseconds (``internalDate``, ``expiration``) as an aware UTC datetime."""
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def b64decode_lenient(data: str | bytes) -> bytes:
    """Decode base64 in either alphabet (standard or url-safe), padding optional."""
    text = data.decode("ascii", errors="replace") if isinstance(data, bytes) else data
    text = "".join(text.split())
    if not _B64_ALPHABET.fullmatch(text):
        raise WireFormatError("not base64")
    text = text.rstrip("=").translate(_TO_STANDARD)
    if len(text) % 4 == 1:
        raise WireFormatError("truncated base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise WireFormatError("not base64") from exc


def b64url_encode(data: bytes) -> str:
    """base64url with padding, the form Google's own client libraries send."""
    return base64.urlsafe_b64encode(data).decode("ascii")
