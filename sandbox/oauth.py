"""OAuth 2.0 state: consent codes, grants, refresh and access tokens, revocation (§1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.errors import OAuthError

GMAIL_SCOPE_PREFIX = "https://www.googleapis.com/auth/gmail."
FULL_MAIL_SCOPE = "https://mail.google.com/"
OPENID_SCOPES = {"openid", "email", "profile"}
REFRESH_TOKENS_PER_GRANT = 100
IDLE_LIMIT = 183 * 86400.0
TESTING_LIMIT = 7 * 86400.0
EXPIRED_OR_REVOKED = "Token has been expired or revoked."


def expand_scope(scope: str) -> str:
    """Short names (`gmail.send`) as a convenience for the control API; URIs pass through."""
    if scope.startswith(("https://", "http://")) or scope in OPENID_SCOPES:
        return scope
    return f"https://www.googleapis.com/auth/{scope}"


def is_mail_scope(scope: str) -> bool:
    return scope == FULL_MAIL_SCOPE or scope.startswith(GMAIL_SCOPE_PREFIX)


@dataclass
class Grant:
    """Everything one user granted one client; revoking any token of it ends all of it."""

    id: str
    email: str
    client_id: str
    scopes: list[str]
    created_at: float
    revoked_reason: str | None = None
    refresh_tokens: list[RefreshToken] = field(default_factory=list)


@dataclass
class RefreshToken:
    token: str
    grant: Grant
    scopes: list[str]
    created_at: float
    last_used_at: float
    evicted: bool = False


@dataclass
class AccessToken:
    token: str
    grant: Grant
    scopes: list[str]
    expires_at: float


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    email: str
    scopes: list[str]
    offline: bool
    consent_shown: bool
    challenge: str | None
    challenge_method: str
    expires_at: float
    nonce: str | None
    redeemed: bool = False


@dataclass
class TokenResult:
    access_token: AccessToken
    refresh_token: RefreshToken | None
    expires_in: int

    def json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self.access_token.token,
            "expires_in": self.expires_in,
            "scope": " ".join(self.access_token.scopes),
            "token_type": "Bearer",
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token.token
        return body


class OAuthState:
    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.client_id = config.client_id
        self.client_secret = config.client_secret
        self.redirect_uris = list(config.redirect_uris)
        self.access_token_ttl = config.access_token_ttl
        self.code_ttl = config.code_ttl
        self.rotate_refresh_tokens = config.rotate_refresh_tokens
        self.testing_mode = config.testing_mode
        self._clock = clock
        self.grants: dict[tuple[str, str], Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        # Accounts that consented before: Google then skips the consent screen unless
        # prompt=consent, and without the screen there is no refresh token.
        self.consented: set[tuple[str, str]] = set()

    def reset(self) -> None:
        self.grants.clear()
        self.codes.clear()
        self.refresh_tokens.clear()
        self.access_tokens.clear()
        self.consented.clear()

    # --- clients ------------------------------------------------------------------------------

    def check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if not client_id or client_id != self.client_id:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if client_secret is None or not hmac.compare_digest(client_secret, self.client_secret):
            raise OAuthError(401, "invalid_client", "Unauthorized")

    def redirect_allowed(self, redirect_uri: str) -> bool:
        if self.redirect_uris:
            return redirect_uri in self.redirect_uris
        return redirect_uri.startswith(("http://", "https://"))

    # --- authorization codes -------------------------------------------------------------------

    def issue_code(
        self,
        *,
        email: str,
        redirect_uri: str,
        scopes: list[str],
        offline: bool,
        force_consent: bool,
        include_granted: bool,
        challenge: str | None,
        challenge_method: str,
        nonce: str | None,
    ) -> AuthCode:
        key = (email, self.client_id)
        consent_shown = force_consent or key not in self.consented
        self.consented.add(key)
        granted = list(scopes)
        grant = self.grants.get(key)
        if include_granted and grant is not None and grant.revoked_reason is None:
            granted += [s for s in grant.scopes if s not in granted]
        code = AuthCode(
            code="4/0A" + secrets.token_urlsafe(40),
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            email=email,
            scopes=granted,
            offline=offline,
            consent_shown=consent_shown,
            challenge=challenge,
            challenge_method=challenge_method,
            expires_at=self._clock.now() + self.code_ttl,
            nonce=nonce,
        )
        self.codes[code.code] = code
        return code

    def redeem_code(
        self, code_value: str | None, redirect_uri: str | None, verifier: str | None
    ) -> tuple[TokenResult, AuthCode]:
        if not code_value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: code")
        code = self.codes.get(code_value)
        if code is None:
            malformed = not code_value.startswith("4/")
            raise OAuthError(
                400, "invalid_grant", "Malformed auth code." if malformed else "Bad Request"
            )
        if code.redeemed:
            raise OAuthError(400, "invalid_grant", "Code was already redeemed.")
        if self._clock.now() >= code.expires_at:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if redirect_uri != code.redirect_uri:
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            if not verifier:
                raise OAuthError(400, "invalid_grant", "Missing code verifier.")
            if not hmac.compare_digest(
                _challenge_of(verifier, code.challenge_method), code.challenge
            ):
                raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
        code.redeemed = True
        grant = self._grant_for(code.email, code.scopes)
        refresh = None
        if code.offline and code.consent_shown:
            refresh = self._new_refresh_token(grant, code.scopes)
        access = self._new_access_token(grant, code.scopes)
        return TokenResult(access, refresh, self.access_token_ttl), code

    # --- grants and tokens ----------------------------------------------------------------------

    def _grant_for(self, email: str, scopes: list[str]) -> Grant:
        key = (email, self.client_id)
        grant = self.grants.get(key)
        if grant is None or grant.revoked_reason is not None:
            grant = Grant(
                id=secrets.token_hex(8),
                email=email,
                client_id=self.client_id,
                scopes=[],
                created_at=self._clock.now(),
            )
            self.grants[key] = grant
        grant.scopes += [s for s in scopes if s not in grant.scopes]
        return grant

    def _new_refresh_token(self, grant: Grant, scopes: list[str]) -> RefreshToken:
        now = self._clock.now()
        token = RefreshToken(
            token="1//0" + secrets.token_urlsafe(60),
            grant=grant,
            scopes=list(scopes),
            created_at=now,
            last_used_at=now,
        )
        grant.refresh_tokens.append(token)
        live = [t for t in grant.refresh_tokens if not t.evicted]
        if len(live) > REFRESH_TOKENS_PER_GRANT:
            # The 101st token silently invalidates the oldest one (§1.6).
            live[0].evicted = True
        self.refresh_tokens[token.token] = token
        return token

    def _new_access_token(self, grant: Grant, scopes: list[str]) -> AccessToken:
        token = AccessToken(
            token="ya29.a0" + secrets.token_urlsafe(90),
            grant=grant,
            scopes=list(scopes),
            expires_at=self._clock.now() + self.access_token_ttl,
        )
        self.access_tokens[token.token] = token
        return token

    def grant_directly(self, email: str, scopes: list[str]) -> TokenResult:
        """A consent without the browser: the control API's `grant`."""
        self.consented.add((email, self.client_id))
        grant = self._grant_for(email, scopes)
        refresh = self._new_refresh_token(grant, scopes)
        access = self._new_access_token(grant, scopes)
        return TokenResult(access, refresh, self.access_token_ttl)

    def refresh(self, token_value: str | None, scope: str | None) -> TokenResult:
        if not token_value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        token = self.refresh_tokens.get(token_value)
        if token is None:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        now = self._clock.now()
        grant = token.grant
        if token.evicted or grant.revoked_reason is not None:
            raise OAuthError(400, "invalid_grant", EXPIRED_OR_REVOKED)
        if now - token.last_used_at > IDLE_LIMIT or (
            self.testing_mode and now - token.created_at > TESTING_LIMIT
        ):
            grant.revoked_reason = "expired"
            raise OAuthError(400, "invalid_grant", EXPIRED_OR_REVOKED)
        if grant.client_id != self.client_id:
            raise OAuthError(400, "unauthorized_client", "Unauthorized")
        scopes = token.scopes
        if scope:
            asked = scope.split()
            if any(s not in token.scopes for s in asked):
                raise OAuthError(400, "invalid_scope", "Some requested scopes were invalid.")
            scopes = asked
        token.last_used_at = now
        access = self._new_access_token(grant, scopes)
        new_refresh = None
        if self.rotate_refresh_tokens:
            new_refresh = self._new_refresh_token(grant, token.scopes)
        return TokenResult(access, new_refresh, self.access_token_ttl)

    def revoke(self, token_value: str | None) -> None:
        if not token_value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: token")
        grant: Grant | None = None
        if token_value in self.refresh_tokens:
            grant = self.refresh_tokens[token_value].grant
        elif token_value in self.access_tokens:
            access = self.access_tokens[token_value]
            if access.expires_at > self._clock.now():
                grant = access.grant
        if grant is None or grant.revoked_reason is not None:
            raise OAuthError(400, "invalid_token", "Token expired or revoked")
        grant.revoked_reason = "revoked"

    def revoke_account(self, email: str, reason: str, *, mail_scopes_only: bool = False) -> int:
        count = 0
        for grant in self.grants.values():
            if grant.email != email or grant.revoked_reason is not None:
                continue
            if mail_scopes_only and not any(is_mail_scope(s) for s in grant.scopes):
                continue
            grant.revoked_reason = reason
            count += 1
        return count

    def access_token(self, token_value: str) -> AccessToken | None:
        token = self.access_tokens.get(token_value)
        if token is None or token.grant.revoked_reason is not None:
            return None
        if self._clock.now() >= token.expires_at:
            return None
        return token


def _challenge_of(verifier: str, method: str) -> str:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier
