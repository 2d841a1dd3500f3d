"""Bearer JWT authentication: HS256 tokens issued by the host application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request

from app.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    org_id: str
    email: str | None = None
    name: str | None = None


def decode_bearer(authorization: str | None, secret: str) -> Principal:
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "org", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the bearer token has expired") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid bearer token: {exc}") from None
    sub, org = claims.get("sub"), claims.get("org")
    if not isinstance(sub, str) or not sub or not isinstance(org, str) or not org:
        raise Unauthenticated("the bearer token's sub and org must be non-empty strings")
    email = claims.get("email")
    name = claims.get("name")
    return Principal(
        user_id=sub,
        org_id=org,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
    )


def get_principal(request: Request) -> Principal:
    secret = request.app.state.settings.api_jwt_secret.get_secret_value()
    return decode_bearer(request.headers.get("authorization"), secret)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
