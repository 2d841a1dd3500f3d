"""Google's OAuth endpoints: consent page, token, revoke, certs and OpenID discovery (§1, §5.5)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.errors import OAuthError
from sandbox.faults import TOKEN_METHOD, token_error
from sandbox.oauth import AuthCode, TokenResult
from sandbox.state import Sandbox

_PKCE_S256 = re.compile(r"^[A-Za-z0-9\-_]{43}$")
_PROMPTS = {"none", "consent", "select_account"}
_AUTH_FIELDS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "access_type",
    "prompt",
    "state",
    "login_hint",
    "include_granted_scopes",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)
DEFAULT_USER = "user@sandbox.test"


async def read_form(request: Request) -> FormData:
    """An application/x-www-form-urlencoded body (all Google's endpoints take), without needing
    python-multipart."""
    body = (await request.body()).decode("utf-8", errors="replace")
    pairs: list[tuple[str, str | UploadFile]] = list(parse_qsl(body, keep_blank_values=True))
    return FormData(pairs)


class _ConsentError(Exception):
    """Shown on Google's own error page, never redirected (e.g. redirect_uri_mismatch)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail

    def response(self) -> HTMLResponse:
        page = (
            "<!doctype html><html><head><title>Error</title></head><body>"
            "<h1>Access blocked: authorization error</h1>"
            f"<p>{html.escape(self.detail)}</p>"
            f"<p>Error {self.status}: {html.escape(self.error)}</p></body></html>"
        )
        return HTMLResponse(page, status_code=self.status)


def _redirect(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    joiner = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(redirect_uri + joiner + urlencode(params), status_code=302)


def _validate(sandbox: Sandbox, params: dict[str, str]) -> Response | None:
    """Raise for errors shown on Google's page; return a redirect for errors sent back."""
    if params.get("client_id") != sandbox.oauth.client_id:
        raise _ConsentError(401, "invalid_client", "The OAuth client was not found.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or not sandbox.oauth.redirect_allowed(redirect_uri):
        raise _ConsentError(
            400,
            "redirect_uri_mismatch",
            "You can't sign in because this app sent an invalid request. "
            f"redirect_uri={redirect_uri} does not match a registered redirect URI.",
        )
    state = {"state": params["state"]} if params.get("state") else {}
    if params.get("response_type") != "code":
        return _redirect(redirect_uri, {"error": "unsupported_response_type", **state})
    if not params.get("scope", "").split():
        raise _ConsentError(400, "invalid_request", "Missing required parameter: scope")
    if params.get("access_type", "online") not in ("online", "offline"):
        raise _ConsentError(400, "invalid_request", "Invalid access_type")
    prompts = set(params.get("prompt", "").split())
    if not prompts <= _PROMPTS or ("none" in prompts and len(prompts) > 1):
        raise _ConsentError(400, "invalid_request", "Invalid prompt")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method") or ("plain" if challenge else "")
    if method and not challenge:
        raise _ConsentError(400, "invalid_request", "Missing code_challenge")
    if method not in ("", "S256", "plain"):
        raise _ConsentError(400, "invalid_request", "Invalid code_challenge_method")
    if method == "S256" and challenge and not _PKCE_S256.match(challenge):
        raise _ConsentError(400, "invalid_request", "Invalid code_challenge")
    return None


def _decide(
    sandbox: Sandbox,
    params: dict[str, str],
    *,
    decision: str,
    email: str,
    granted: list[str] | None,
) -> Response:
    redirect_uri = params["redirect_uri"]
    state = {"state": params["state"]} if params.get("state") else {}
    if decision != "allow":
        return _redirect(redirect_uri, {"error": "access_denied", **state})
    asked = params["scope"].split()
    scopes = [s for s in asked if granted is None or s in granted]
    if not scopes:
        return _redirect(redirect_uri, {"error": "access_denied", **state})
    sandbox.mail.create_account(email)
    prompts = params.get("prompt", "").split()
    if "none" in prompts and (email, sandbox.oauth.client_id) not in sandbox.oauth.consented:
        return _redirect(redirect_uri, {"error": "consent_required", **state})
    challenge = params.get("code_challenge") or None
    code = sandbox.oauth.issue_code(
        email=email,
        redirect_uri=redirect_uri,
        scopes=scopes,
        offline=params.get("access_type") == "offline",
        force_consent="consent" in prompts,
        include_granted=params.get("include_granted_scopes") == "true",
        challenge=challenge,
        challenge_method=params.get("code_challenge_method") or "plain",
        nonce=params.get("nonce"),
    )
    return _redirect(
        redirect_uri,
        {
            **state,
            "code": code.code,
            "scope": " ".join(code.scopes),
            "authuser": "0",
            "prompt": "consent" if code.consent_shown else "none",
            "iss": "https://accounts.google.com",
        },
    )


def _default_email(sandbox: Sandbox, params: dict[str, str]) -> str:
    hint = params.get("login_hint", "").strip().lower()
    if "@" in hint:
        return hint
    if sandbox.consent.email:
        return sandbox.consent.email
    if sandbox.mail.accounts:
        return list(sandbox.mail.accounts)[-1]
    return DEFAULT_USER


async def authorize(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    form: FormData | None = await read_form(request) if request.method == "POST" else None
    source: Any = form if form is not None else request.query_params
    params = {name: str(source[name]) for name in _AUTH_FIELDS if source.get(name)}
    async with sandbox.lock:
        try:
            early = _validate(sandbox, params)
        except _ConsentError as exc:
            return exc.response()
        if early is not None:
            return early
        if form is not None:
            email = str(form.get("email") or _default_email(sandbox, params)).strip().lower()
            chosen = [str(v) for v in form.getlist("granted_scope")]
            return _decide(
                sandbox, params, decision=str(form.get("decision")), email=email, granted=chosen
            )
        if sandbox.consent.auto:
            return _decide(
                sandbox,
                params,
                decision=sandbox.consent.decision,
                email=_default_email(sandbox, params),
                granted=sandbox.consent.scopes,
            )
        return HTMLResponse(_consent_page(params, _default_email(sandbox, params)))


def _consent_page(params: dict[str, str], email: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in params.items()
    )
    scopes = "".join(
        f'<li><label><input type="checkbox" name="granted_scope" value="{html.escape(s)}" checked> '
        f"{html.escape(s)}</label></li>"
        for s in params["scope"].split()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in - Google Accounts (sandbox)</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:3em auto}}
button{{font-size:1em;padding:.5em 1.5em;margin-right:1em}}</style></head>
<body><h1>Sandbox Google</h1>
<form method="post" action="/o/oauth2/v2/auth">{hidden}
<p><label>Account
<input type="email" name="email" value="{html.escape(email)}" required></label></p>
<p>The app <code>{html.escape(params["client_id"])}</code> wants to:</p><ul>{scopes}</ul>
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form></body></html>"""


def _client_credentials(request: Request, form: FormData) -> tuple[str | None, str | None]:
    value = request.headers.get("authorization", "")
    if value[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(value[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError(401, "invalid_client", "Unauthorized") from exc
        basic_id, _, basic_secret = decoded.partition(":")
        return unquote(basic_id), unquote(basic_secret)
    return _text(form.get("client_id")), _text(form.get("client_secret"))


def _id_token(sandbox: Sandbox, email: str, code: AuthCode | None) -> str:
    issued = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "azp": sandbox.oauth.client_id,
        "aud": sandbox.oauth.client_id,
        "sub": str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21],
        "email": email,
        "email_verified": True,
        "iat": issued,
        "exp": issued + 3600,
    }
    if code is not None and code.nonce:
        claims["nonce"] = code.nonce
    return sandbox.keys.sign(claims)


async def token(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    try:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request", "Invalid content type")
        form = await read_form(request)
        async with sandbox.lock:
            client_id, secret = _client_credentials(request, form)
            grant_type = form.get("grant_type")
            account = _account_of(sandbox, form)
            fault = sandbox.faults.take(TOKEN_METHOD, account)
            if fault is not None:
                raise token_error(fault)
            sandbox.oauth.check_client(client_id, secret)
            code: AuthCode | None = None
            result: TokenResult
            if grant_type == "authorization_code":
                redirect = form.get("redirect_uri")
                verifier = form.get("code_verifier")
                result, code = sandbox.oauth.redeem_code(
                    _text(form.get("code")),
                    str(redirect) if redirect is not None else None,
                    _text(verifier),
                )
            elif grant_type == "refresh_token":
                result = sandbox.oauth.refresh(
                    _text(form.get("refresh_token")), _text(form.get("scope"))
                )
            elif grant_type is None:
                raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
            else:
                raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
            body = result.json()
            if "openid" in result.access_token.scopes:
                body["id_token"] = _id_token(sandbox, result.access_token.grant.email, code)
            return JSONResponse(body, headers={"Cache-Control": "no-cache, no-store, max-age=0"})
    except OAuthError as exc:
        return exc.response()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _account_of(sandbox: Sandbox, form: FormData) -> str | None:
    refresh = sandbox.oauth.refresh_tokens.get(str(form.get("refresh_token") or ""))
    if refresh is not None:
        return refresh.grant.email
    code = sandbox.oauth.codes.get(str(form.get("code") or ""))
    return code.email if code is not None else None


async def revoke(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    value = request.query_params.get("token")
    if value is None and request.method == "POST":
        form = await read_form(request)
        raw = form.get("token")
        value = str(raw) if raw is not None else None
    async with sandbox.lock:
        try:
            sandbox.oauth.revoke(value)
        except OAuthError as exc:
            return exc.response()
    return Response(b"", status_code=200, media_type="application/json")


def _cache_headers(sandbox: Sandbox) -> dict[str, str]:
    max_age = sandbox.config.certs_max_age
    return {
        "Cache-Control": f"public, max-age={max_age}, must-revalidate, no-transform",
        "Expires": formatdate(time.time() + max_age, usegmt=True),
    }


async def certs_v1(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    return JSONResponse(sandbox.keys.pem_map(), headers=_cache_headers(sandbox))


async def certs_v3(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    return JSONResponse(sandbox.keys.jwks(), headers=_cache_headers(sandbox))


async def openid_configuration(request: Request) -> Response:
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "issuer": "https://accounts.google.com",
            "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
            "token_endpoint": f"{base}/token",
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/oauth2/v3/certs",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        }
    )


def routes() -> list[Route]:
    return [
        Route("/o/oauth2/v2/auth", authorize, methods=["GET", "POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/revoke", revoke, methods=["GET", "POST"]),
        Route("/oauth2/v1/certs", certs_v1, methods=["GET"]),
        Route("/oauth2/v3/certs", certs_v3, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    ]
