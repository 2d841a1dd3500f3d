"""Push OIDC verification: every forgery, and the certs cache (GOOGLE.md §5.5)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from app.google.errors import PushForbidden, PushUnauthenticated, Unavailable
from app.google.pubsub import PushTokenVerifier

CERTS_URL = "https://certs.test/oauth2/v1/certs"
AUDIENCE = "https://leadmail.example.com/v1/webhooks/gmail"
SERVICE_ACCOUNT = "gmail-push@project.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Key:
    kid: str
    private_pem: bytes
    cert_pem: str  # what the v1 certs endpoint publishes

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        signer = crypt.RSASigner.from_string(self.private_pem, key_id=kid or self.kid)  # type: ignore[no-untyped-call]
        token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()


@cache
def make_key(kid: str, *, as_certificate: bool = True) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if as_certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=14))
            .sign(private, hashes.SHA256())
        )
        public_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    else:
        public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    return Key(kid, private_pem, public_pem)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@dataclass
class CertsServer:
    keys: list[Key]
    cache_control: str | None = "public, max-age=600, must-revalidate, no-transform"
    failure: httpx.Response | Exception | None = None
    fetches: int = 0
    extra_headers: dict[str, str] = field(default_factory=dict)

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == CERTS_URL
        self.fetches += 1
        if isinstance(self.failure, Exception):
            raise self.failure
        if self.failure is not None:
            return self.failure
        headers = dict(self.extra_headers)
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        return httpx.Response(
            200, json={key.kid: key.cert_pem for key in self.keys}, headers=headers
        )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> Key:
    return make_key("kid-1")


@pytest.fixture
def certs(key: Key) -> CertsServer:
    return CertsServer(keys=[key, make_key("kid-0", as_certificate=False)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(certs: CertsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(certs.handler)) as client:
        yield client


@pytest.fixture
def verifier(http: httpx.AsyncClient, clock: FakeClock) -> PushTokenVerifier:
    return PushTokenVerifier(http, CERTS_URL, AUDIENCE, SERVICE_ACCOUNT, clock=clock)


async def test_genuine_token_verifies(verifier: PushTokenVerifier, key: Key) -> None:
    now = int(time.time())
    result = await verifier.verify(f"Bearer {key.sign(claims(iat=now, exp=now + 3600))}")
    assert result.email == SERVICE_ACCOUNT
    assert result.audience == AUDIENCE
    assert result.issuer == "https://accounts.google.com"
    assert result.subject == "113774264463038321964"
    assert result.expires_at == datetime.fromtimestamp(now + 3600, tz=UTC)


async def test_bare_public_key_pem_and_short_issuer_verify(
    verifier: PushTokenVerifier,
) -> None:
    token = make_key("kid-0", as_certificate=False).sign(claims(iss="accounts.google.com"))
    assert (await verifier.verify(f"bearer {token}")).issuer == "accounts.google.com"


async def test_any_service_account_when_none_is_configured(
    http: httpx.AsyncClient, key: Key
) -> None:
    open_verifier = PushTokenVerifier(http, CERTS_URL, AUDIENCE, None)
    token = key.sign(claims(email="someone@else.iam.gserviceaccount.com"))
    assert (await open_verifier.verify(f"Bearer {token}")).email.startswith("someone")


def test_an_empty_audience_is_refused(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError):
        PushTokenVerifier(http, CERTS_URL, "", None)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer   ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer abc",
        "Bearer a.b.c",
        "Bearer e30.e30.e30",
    ],
)
async def test_missing_or_garbled_authorization_is_401(
    verifier: PushTokenVerifier, header: str | None
) -> None:
    with pytest.raises(PushUnauthenticated) as caught:
        await verifier.verify(header)
    assert caught.value.status_code == 401


async def test_forged_signature_with_a_known_kid_is_401(verifier: PushTokenVerifier) -> None:
    forger = make_key("forger")
    token = forger.sign(claims(), kid="kid-1")  # claims the real kid, signed by another key
    with pytest.raises(PushUnauthenticated, match="signature"):
        await verifier.verify(f"Bearer {token}")


async def test_tampered_payload_is_401(verifier: PushTokenVerifier, key: Key) -> None:
    header, _, signature = key.sign(claims()).split(".")
    other_payload = key.sign(claims(email="attacker@evil.example")).split(".")[1]
    with pytest.raises(PushUnauthenticated):
        await verifier.verify(f"Bearer {header}.{other_payload}.{signature}")


async def test_unsigned_alg_none_token_is_401(verifier: PushTokenVerifier) -> None:
    import base64

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    token = f"{segment({'alg': 'none', 'kid': 'kid-1'})}.{segment(claims())}."
    with pytest.raises(PushUnauthenticated):
        await verifier.verify(f"Bearer {token}")


async def test_unknown_kid_is_401(verifier: PushTokenVerifier, certs: CertsServer) -> None:
    token = make_key("forger").sign(claims(), kid="stranger")
    with pytest.raises(PushUnauthenticated, match="unknown key"):
        await verifier.verify(f"Bearer {token}")


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://evil.example.com"},
        {"iss": None},
        {"email_verified": False},
        {"email_verified": "true"},
        {"email_verified": None},
        {"email": None},
    ],
)
async def test_untrustworthy_claims_are_401(
    verifier: PushTokenVerifier, key: Key, overrides: dict[str, Any]
) -> None:
    with pytest.raises(PushUnauthenticated):
        await verifier.verify(f"Bearer {key.sign(claims(**overrides))}")


async def test_wrong_audience_is_403(verifier: PushTokenVerifier, key: Key) -> None:
    token = key.sign(claims(aud="https://other.example.com/push"))
    with pytest.raises(PushForbidden) as caught:
        await verifier.verify(f"Bearer {token}")
    assert caught.value.status_code == 403


async def test_wrong_service_account_is_403(verifier: PushTokenVerifier, key: Key) -> None:
    token = key.sign(claims(email="intruder@other-project.iam.gserviceaccount.com"))
    with pytest.raises(PushForbidden):
        await verifier.verify(f"Bearer {token}")


async def test_service_account_compare_ignores_case(verifier: PushTokenVerifier, key: Key) -> None:
    token = key.sign(claims(email=SERVICE_ACCOUNT.upper()))
    assert (await verifier.verify(f"Bearer {token}")).email == SERVICE_ACCOUNT.upper()


async def test_expired_token_is_401(verifier: PushTokenVerifier, key: Key) -> None:
    now = int(time.time())
    with pytest.raises(PushUnauthenticated, match="expired"):
        await verifier.verify(f"Bearer {key.sign(claims(iat=now - 3700, exp=now - 100))}")


async def test_just_expired_within_skew_is_accepted(verifier: PushTokenVerifier, key: Key) -> None:
    now = int(time.time())
    await verifier.verify(f"Bearer {key.sign(claims(iat=now - 3610, exp=now - 10))}")


async def test_issued_in_the_future_beyond_skew_is_401(
    verifier: PushTokenVerifier, key: Key
) -> None:
    now = int(time.time())
    with pytest.raises(PushUnauthenticated, match="future"):
        await verifier.verify(f"Bearer {key.sign(claims(iat=now + 120, exp=now + 3720))}")


async def test_issued_slightly_ahead_within_skew_is_accepted(
    verifier: PushTokenVerifier, key: Key
) -> None:
    now = int(time.time())
    await verifier.verify(f"Bearer {key.sign(claims(iat=now + 10, exp=now + 3610))}")


async def test_missing_exp_is_401(verifier: PushTokenVerifier, key: Key) -> None:
    with pytest.raises(PushUnauthenticated):
        await verifier.verify(f"Bearer {key.sign(claims(exp=None))}")


async def test_certs_are_fetched_once_within_max_age(
    verifier: PushTokenVerifier, certs: CertsServer, key: Key, clock: FakeClock
) -> None:
    token = f"Bearer {key.sign(claims())}"
    for _ in range(5):
        await verifier.verify(token)
    clock.now += 599
    await verifier.verify(token)
    assert certs.fetches == 1
    clock.now += 2  # past max-age=600
    await verifier.verify(token)
    assert certs.fetches == 2


async def test_age_header_shortens_the_cache(
    verifier: PushTokenVerifier, certs: CertsServer, key: Key, clock: FakeClock
) -> None:
    certs.extra_headers["Age"] = "500"
    token = f"Bearer {key.sign(claims())}"
    await verifier.verify(token)
    clock.now += 101
    await verifier.verify(token)
    assert certs.fetches == 2


async def test_without_cache_control_the_default_ttl_applies(
    http: httpx.AsyncClient, certs: CertsServer, key: Key, clock: FakeClock
) -> None:
    certs.cache_control = None
    verifier = PushTokenVerifier(
        http, CERTS_URL, AUDIENCE, SERVICE_ACCOUNT, default_ttl_seconds=60, clock=clock
    )
    token = f"Bearer {key.sign(claims())}"
    await verifier.verify(token)
    clock.now += 59
    await verifier.verify(token)
    assert certs.fetches == 1
    clock.now += 2
    await verifier.verify(token)
    assert certs.fetches == 2


async def test_no_store_means_fetch_every_time(
    verifier: PushTokenVerifier, certs: CertsServer, key: Key
) -> None:
    certs.cache_control = "no-store"
    token = f"Bearer {key.sign(claims())}"
    await verifier.verify(token)
    await verifier.verify(token)
    assert certs.fetches == 2


async def test_key_rotation_refetches_on_unknown_kid_at_most_once_per_interval(
    verifier: PushTokenVerifier, certs: CertsServer, key: Key, clock: FakeClock
) -> None:
    await verifier.verify(f"Bearer {key.sign(claims())}")
    assert certs.fetches == 1

    clock.now += 31  # beyond min_refetch_seconds=30, well within max-age
    new_key = make_key("kid-2")
    certs.keys = [key, new_key]  # Google publishes the next key next to the current one
    await verifier.verify(f"Bearer {new_key.sign(claims())}")
    assert certs.fetches == 2

    # A flood of random kids must not turn into a flood of certs fetches.
    for name in ("junk-1", "junk-2", "junk-3"):
        with pytest.raises(PushUnauthenticated):
            await verifier.verify(f"Bearer {make_key('forger').sign(claims(), kid=name)}")
    assert certs.fetches == 2

    clock.now += 31
    certs.keys = [new_key]  # the old key retires
    with pytest.raises(PushUnauthenticated):
        await verifier.verify(f"Bearer {make_key('forger').sign(claims(), kid='junk-1')}")
    assert certs.fetches == 3
    with pytest.raises(PushUnauthenticated, match="unknown key"):
        await verifier.verify(f"Bearer {key.sign(claims())}")
    await verifier.verify(f"Bearer {new_key.sign(claims())}")


async def test_concurrent_first_verifications_share_one_fetch(
    verifier: PushTokenVerifier, certs: CertsServer, key: Key
) -> None:
    import asyncio

    token = f"Bearer {key.sign(claims())}"
    await asyncio.gather(*(verifier.verify(token) for _ in range(10)))
    assert certs.fetches == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, content=b"unavailable"),
        httpx.Response(404, content=b"no such page"),
        httpx.ConnectError("refused"),
        httpx.Response(200, content=b"<html>"),
        httpx.Response(200, json={"keys": [{"kid": "k", "kty": "RSA"}]}),
        httpx.Response(200, json={}),
    ],
)
async def test_certs_fetch_failure_is_unavailable(
    verifier: PushTokenVerifier,
    certs: CertsServer,
    key: Key,
    failure: httpx.Response | Exception,
) -> None:
    certs.failure = failure
    with pytest.raises(Unavailable):
        await verifier.verify(f"Bearer {key.sign(claims())}")


async def test_the_token_never_appears_in_the_error(verifier: PushTokenVerifier) -> None:
    token = make_key("forger").sign(claims(), kid="kid-1")
    for header in (f"Bearer {token}", f"Bearer {token[:-5]}", "Bearer x.y"):
        with pytest.raises(PushUnauthenticated) as caught:
            await verifier.verify(header)
        text = f"{caught.value} {caught.value!r}"
        assert token[:20] not in text
        assert "x.y" not in text
