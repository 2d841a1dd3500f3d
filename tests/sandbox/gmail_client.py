"""Google's own Gmail client (google-api-python-client) pointed at the sandbox.

`build(..., client_options={"api_endpoint": url})` re-points ordinary calls, but media uploads
keep the discovery document's https scheme (`_fix_up_media_path_base_url` swaps only the host),
so against a plain-http sandbox the client is built from the shipped static document with its
`rootUrl` replaced instead. Both ways are exercised in the tests.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import googleapiclient
from googleapiclient.discovery import build, build_from_document

from sandbox.testing import RunningSandbox
from tests.sandbox.conftest import credentials

DISCOVERY_PATH = (
    Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "gmail.v1.json"
)


@functools.cache
def discovery_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DISCOVERY_PATH.read_text())
    return document


def gmail_service(google: RunningSandbox, tokens: dict[str, Any]) -> Any:
    document = dict(discovery_document())
    document["rootUrl"] = f"{google.base_url}/"
    return build_from_document(document, credentials=credentials(google, tokens))


def gmail_service_by_endpoint(google: RunningSandbox, tokens: dict[str, Any]) -> Any:
    return build(
        "gmail",
        "v1",
        credentials=credentials(google, tokens),
        static_discovery=True,
        client_options={"api_endpoint": f"{google.base_url}/"},
        cache_discovery=False,
    )


def raw_of(message: bytes) -> str:
    return base64.urlsafe_b64encode(message).decode()


def simple_mail(
    sender: str,
    to: str,
    subject: str,
    body: str = "Hello there",
    *,
    extra: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
