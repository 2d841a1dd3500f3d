"""Refresh tokens at rest: Fernet, with MultiFernet for key rotation.

The first key in TOKEN_ENCRYPTION_KEYS encrypts; every listed key decrypts. To
rotate, put a new key first, deploy, run `python -m app rotate-keys`, then drop
the old key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class TokenCipherError(Exception):
    """A stored token cannot be decrypted with any configured key."""


class TokenCipher:
    def __init__(self, keys: Sequence[SecretStr | str]) -> None:
        if not keys:
            raise ValueError("TOKEN_ENCRYPTION_KEYS needs at least one Fernet key")
        fernets = []
        for index, key in enumerate(keys):
            raw = key.get_secret_value() if isinstance(key, SecretStr) else key
            try:
                fernets.append(Fernet(raw.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(
                    f"TOKEN_ENCRYPTION_KEYS entry {index + 1} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        self._multi = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> bytes:
        return self._multi.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._multi.decrypt(ciphertext).decode("utf-8")
        except InvalidToken:
            raise TokenCipherError("no configured key decrypts this token") from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt under the first key (a no-op in effect if it already is)."""
        try:
            return self._multi.rotate(ciphertext)
        except InvalidToken:
            raise TokenCipherError("no configured key decrypts this token") from None


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")
