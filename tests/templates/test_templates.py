"""Templates: organization-scoped CRUD and sandboxed rendering, through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import bearer, unique


@pytest.fixture
def rep() -> dict[str, str]:
    return bearer(unique("user"), unique("org"))


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> Any:
    body = {"name": "Intro", "subject": "Hi {{ lead.first_name }}", "body_text": "Hello"}
    body.update(fields)
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_get_update_delete(client: httpx.AsyncClient, rep: dict[str, str]) -> None:
    created = await _create(
        client, rep, body_html="<p>Hello {{ lead.first_name }}</p>", body_text=None
    )
    assert set(created) == {
        "id",
        "name",
        "subject",
        "body_text",
        "body_html",
        "created_at",
        "updated_at",
    }
    assert created["body_text"] is None

    fetched = await client.get(f"/v1/templates/{created['id']}", headers=rep)
    assert fetched.status_code == 200
    assert fetched.json() == created

    patched = await client.patch(
        f"/v1/templates/{created['id']}",
        json={"name": "Intro v2", "body_text": "Plain {{ lead.first_name }}"},
        headers=rep,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Intro v2"
    assert patched.json()["body_text"] == "Plain {{ lead.first_name }}"
    assert patched.json()["body_html"] == created["body_html"]  # untouched

    deleted = await client.delete(f"/v1/templates/{created['id']}", headers=rep)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/templates/{created['id']}", headers=rep)
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")


async def test_list_is_newest_first_and_paginates(
    client: httpx.AsyncClient, rep: dict[str, str]
) -> None:
    ids = [(await _create(client, rep, name=f"t{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/templates", params=params, headers=rep)
        assert page.status_code == 200
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_another_organization_sees_nothing(
    client: httpx.AsyncClient, rep: dict[str, str]
) -> None:
    created = await _create(client, rep)
    stranger = bearer(unique("user"), unique("org"))
    path = f"/v1/templates/{created['id']}"
    assert (await client.get(path, headers=stranger)).status_code == 404
    assert (await client.patch(path, json={"name": "x"}, headers=stranger)).status_code == 404
    assert (await client.delete(path, headers=stranger)).status_code == 404
    render = await client.post(f"{path}/render", json={"variables": {}}, headers=stranger)
    assert render.status_code == 404
    listed = await client.get("/v1/templates", headers=stranger)
    assert listed.json() == {"items": [], "next_cursor": None}
    # ...and the owner still has it.
    assert (await client.get(path, headers=rep)).status_code == 200


async def test_a_colleague_in_the_same_organization_shares_templates(
    client: httpx.AsyncClient,
) -> None:
    org = unique("org")
    created = await _create(client, bearer(unique("user"), org))
    colleague = bearer(unique("user"), org)
    shared = await client.get(f"/v1/templates/{created['id']}", headers=colleague)
    assert shared.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "subject": "s"},  # no body at all
        {"name": "x", "subject": "", "body_text": "b"},
        {"name": "", "subject": "s", "body_text": "b"},
        {"name": "x", "subject": "s", "body_text": "b", "unknown": 1},
        {"name": "x", "subject": "Hi {{ lead.first_name", "body_text": "b"},  # syntax
        {"name": "x", "subject": "s", "body_html": "{% if %}"},
    ],
)
async def test_invalid_templates_are_422(
    client: httpx.AsyncClient, rep: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/v1/templates", json=body, headers=rep)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_updates_that_break_a_template_are_422(
    client: httpx.AsyncClient, rep: dict[str, str]
) -> None:
    created = await _create(client, rep)
    path = f"/v1/templates/{created['id']}"
    for change in ({"body_text": None}, {"subject": None}, {"body_html": "{{ x"}):
        response = await client.patch(path, json=change, headers=rep)
        assert response.status_code == 422, (change, response.text)
    unchanged = (await client.get(path, headers=rep)).json()
    assert unchanged["body_text"] == created["body_text"]
    assert unchanged["subject"] == created["subject"]


async def test_render_substitutes_escapes_html_only_and_derives_text(
    client: httpx.AsyncClient, rep: dict[str, str]
) -> None:
    created = await _create(
        client,
        rep,
        subject="Offer for {{ lead.company }}",
        body_text=None,
        body_html="<p>Dear {{ lead.first_name }},</p><p>see {{ link }}</p>",
    )
    variables = {
        "lead": {"first_name": "<b>Ann</b>", "company": "Tom & Jerry <Ltd>"},
        "link": "https://example.com/?a=1&b=2",
    }
    response = await client.post(
        f"/v1/templates/{created['id']}/render", json={"variables": variables}, headers=rep
    )
    assert response.status_code == 200, response.text
    rendered = response.json()
    # The subject is text: no HTML escaping.
    assert rendered["subject"] == "Offer for Tom & Jerry <Ltd>"
    # HTML autoescapes the variables, never the template's own markup.
    assert "<p>Dear &lt;b&gt;Ann&lt;/b&gt;,</p>" in rendered["body_html"]
    assert "a=1&amp;b=2" in rendered["body_html"]
    # Without a text body, one is derived from the rendered HTML.
    assert "Dear <b>Ann</b>," in rendered["body_text"]
    assert "<p>" not in rendered["body_text"]


async def test_text_bodies_are_not_escaped(client: httpx.AsyncClient, rep: dict[str, str]) -> None:
    created = await _create(client, rep, body_text="Hi {{ name }}!", subject="For {{ name }}")
    response = await client.post(
        f"/v1/templates/{created['id']}/render",
        json={"variables": {"name": "A & B <c>"}},
        headers=rep,
    )
    assert response.json()["body_text"] == "Hi A & B <c>!"
    assert response.json()["body_html"] is None


async def test_a_missing_variable_is_422_naming_it(
    client: httpx.AsyncClient, rep: dict[str, str]
) -> None:
    created = await _create(client, rep, body_text="Hi {{ lead.first_name }}")
    response = await client.post(
        f"/v1/templates/{created['id']}/render",
        json={"variables": {"lead": {"last_name": "Smith"}}},
        headers=rep,
    )
    assert response.status_code == 422
    problem = response.json()
    assert "lead.first_name" in problem["detail"]
    assert problem["variable"] == "lead.first_name"
    assert problem["field"] == "subject"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ lead.__class__.__init__.__globals__ }}",
        "{{ range(10) | list }}",
        "{{ cycler }}",
        "{{ config }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum() }}",
        "{{ 'x' * 1000000000 }}",
        "{{ lead.update({'x': 1}) }}",
    ],
)
async def test_a_template_cannot_reach_past_its_variables(
    client: httpx.AsyncClient, rep: dict[str, str], source: str
) -> None:
    created = await _create(client, rep, subject="s", body_text=source)
    response = await client.post(
        f"/v1/templates/{created['id']}/render",
        json={"variables": {"lead": {"first_name": "Ann"}}},
        headers=rep,
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "body_text"


async def test_templates_need_a_bearer_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/templates")).status_code == 401
    assert (await client.post("/v1/templates", json={})).status_code == 401
