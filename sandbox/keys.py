"""RSA keys that sign push OIDC tokens (and id_tokens), published like Google's certs."""

from __future__ import annotations

import base64
import datetime
import functools
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str
    certificate_pem: str
    n: int
    e: int

    def jwk(self) -> dict[str, str]:
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": _b64url_uint(self.n),
            "e": _b64url_uint(self.e),
        }


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def generate_key() -> SigningKey:
    """A fresh 2048-bit key with a self-signed certificate, as Google's v1 certs carry."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox.googleapis.local")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    numbers = private.public_key().public_numbers()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return SigningKey(
        kid=secrets.token_hex(20),
        private_pem=private_pem,
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        n=numbers.n,
        e=numbers.e,
    )


@functools.cache
def _first_key() -> SigningKey:
    # Key generation takes tens of milliseconds; many sandboxes in one test process share it.
    return generate_key()


class KeyRing:
    """Published keys, one of which signs; rotation publishes a new key, then retires the old."""

    def __init__(self) -> None:
        first = _first_key()
        self._keys: dict[str, SigningKey] = {first.kid: first}
        self._active = first.kid

    @property
    def active_kid(self) -> str:
        return self._active

    def kids(self) -> list[str]:
        return list(self._keys)

    def pem_map(self) -> dict[str, str]:
        return {kid: key.certificate_pem for kid, key in self._keys.items()}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.jwk() for key in self._keys.values()]}

    def rotate(self, *, activate: bool = True) -> str:
        key = generate_key()
        self._keys[key.kid] = key
        if activate:
            self._active = key.kid
        return key.kid

    def activate(self, kid: str) -> None:
        if kid not in self._keys:
            raise KeyError(kid)
        self._active = kid

    def retire(self, kid: str | None = None) -> str:
        """Unpublish `kid`, or the oldest key that is not signing."""
        if kid is None:
            candidates = [k for k in self._keys if k != self._active]
            if not candidates:
                raise KeyError("no inactive key to retire")
            kid = candidates[0]
        if kid == self._active:
            raise ValueError("cannot retire the signing key; rotate first")
        del self._keys[kid]
        return kid

    def reset(self) -> None:
        first = _first_key()
        self._keys = {first.kid: first}
        self._active = first.kid

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        key = self._keys[kid or self._active]
        return sign_with(key, claims)


def sign_with(key: SigningKey, claims: dict[str, Any]) -> str:
    signer = crypt.RSASigner.from_string(key.private_pem, key_id=key.kid)  # type: ignore[no-untyped-call]
    token: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
    return token.decode("ascii")
