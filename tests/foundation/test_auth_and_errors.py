from __future__ import annotations

import io
import json
import logging
import time

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.observability import JsonFormatter
from tests.support import JWT_SECRET, bearer, unique


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return dict(body)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-jwt"},
        bearer("u1", "o1", secret="another-secret-of-sufficient-length!!"),
        bearer("u1", "o1", ttl=-60),
        {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256")
        },
        {"Authorization": "Bearer " + jwt.encode({"sub": "u1", "org": "o1"}, JWT_SECRET, "HS256")},
    ],
    ids=["none", "basic", "garbage", "bad-signature", "expired", "no-org", "no-exp"],
)
async def test_api_refuses_requests_without_a_valid_bearer(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/templates", headers=headers)
    _assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_hs256_only_alg_none_is_refused(client: httpx.AsyncClient) -> None:
    token = jwt.encode(
        {"sub": "u1", "org": "o1", "exp": int(time.time()) + 60}, key="", algorithm="none"
    )
    response = await client.get("/v1/templates", headers={"Authorization": f"Bearer {token}"})
    _assert_problem(response, 401)


async def test_another_organizations_resource_is_404(client: httpx.AsyncClient) -> None:
    owner = bearer(unique("user"), unique("org"))
    created = await client.post(
        "/v1/templates",
        json={"name": "Intro", "subject": "Hello", "body_text": "Hi"},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    stranger = bearer(unique("user"), unique("org"))
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/v1/templates/{template_id}", headers=stranger)
        _assert_problem(response, 404)
    listed = await client.get("/v1/templates", headers=stranger)
    assert listed.json()["items"] == []
    still_there = await client.get(f"/v1/templates/{template_id}", headers=owner)
    assert still_there.status_code == 200


async def test_framework_errors_are_problem_json(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/no/such/route"), 404)
    _assert_problem(await client.put("/healthz"), 405)
    headers = bearer(unique("user"), unique("org"))
    invalid = await client.post("/v1/templates", json={"name": ""}, headers=headers)
    body = _assert_problem(invalid, 422)
    assert isinstance(body["detail"], list)
    assert any(error["loc"][-1] == "name" for error in body["detail"])  # type: ignore[index]
    malformed = await client.post(
        "/v1/templates",
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    _assert_problem(malformed, 422)


async def test_an_unexpected_error_is_a_500_problem_that_keeps_the_request_id(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/v1/_explode", explode)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("leadmail.request").addHandler(handler)
    try:
        response = await client.get("/v1/_explode", headers={"X-Request-ID": "req-boom-1"})
    finally:
        logging.getLogger("leadmail.request").removeHandler(handler)
    body = _assert_problem(response, 500)
    assert response.headers["x-request-id"] == "req-boom-1"
    assert "secret internals" not in response.text  # details go to the log only
    assert body["detail"] == "an unexpected error occurred"
    [line] = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert line["event"] == "request.unhandled_error"
    assert line["request_id"] == "req-boom-1"
    assert "secret internals" in line["exc"]


async def test_an_invented_http_method_does_not_mint_a_metric_series(
    client: httpx.AsyncClient,
) -> None:
    response = await client.request("FROBNICATE", "/healthz")
    assert response.status_code == 405
    metrics = (await client.get("/metrics")).text
    assert 'method="FROBNICATE"' not in metrics
    assert 'leadmail_http_requests_total{method="OTHER",route="/healthz",status="405"}' in metrics
