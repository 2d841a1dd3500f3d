import os
import time
import tracemalloc
from typing import Any

import pytest

from app.mail import (
    RenderedTemplate,
    TemplateError,
    TemplateRenderError,
    TemplateSyntaxInvalid,
    TemplateVariableMissing,
    render_template,
    validate_template,
)

LEAD = {"lead": {"first_name": "Jürgen", "company": {"name": "Müller & Söhne <GmbH>"}}}


def test_variables_are_rendered_in_every_part() -> None:
    rendered = render_template(
        "Offer for {{ lead.company.name }}",
        "Hi {{ lead.first_name }},\nhere it is.",
        "<p>Hi {{ lead.first_name }}</p>",
        LEAD,
    )
    assert rendered == RenderedTemplate(
        subject="Offer for Müller & Söhne <GmbH>",
        body_text="Hi Jürgen,\nhere it is.",
        body_html="<p>Hi Jürgen</p>",
    )


def test_html_autoescapes_variables_but_text_and_subject_do_not() -> None:
    rendered = render_template(
        "{{ lead.company.name }}",
        "{{ lead.company.name }}",
        "<b>{{ lead.company.name }}</b>",
        LEAD,
    )
    assert rendered.subject == "Müller & Söhne <GmbH>"
    assert rendered.body_text == "Müller & Söhne <GmbH>"
    assert rendered.body_html == "<b>Müller &amp; Söhne &lt;GmbH&gt;</b>"


def test_text_is_derived_from_html_when_missing() -> None:
    rendered = render_template(
        "Hi", None, "<p>Hi <b>{{ lead.first_name }}</b>,</p><p>bye</p>", LEAD
    )
    assert rendered.body_text == "Hi Jürgen,\n\nbye"
    assert render_template("Hi", None, None, {}) == RenderedTemplate("Hi", None, None)


@pytest.mark.parametrize(
    ("template", "variables", "name"),
    [
        ("{{ first_name }}", {}, "first_name"),
        ("Hi {{ lead.first_name }}", {"lead": {}}, "lead.first_name"),
        ("Hi {{ lead.first_name }}", {}, "lead"),
        ("{{ lead.company.name }}", {"lead": {"company": {}}}, "lead.company.name"),
        ("{{ lead['company']['name'] }}", {"lead": {"company": {}}}, "lead.company.name"),
        ("{{ lead.first_name }} {{ deal.amount }}", {"lead": {"first_name": "x"}, "deal": {}},
         "deal.amount"),
        ("{% if lead.vip %}VIP{% endif %}", {"lead": {}}, "lead.vip"),
        ("{{ lead.first_name ~ '!' }}", {"lead": {}}, "lead.first_name"),
        ("{% for item in items %}{{ item.price }}{% endfor %}", {"items": [{}]}, "item.price"),
    ],
)  # fmt: skip
def test_a_missing_variable_is_named(template: str, variables: dict[str, Any], name: str) -> None:
    with pytest.raises(TemplateVariableMissing) as caught:
        render_template(template, None, None, variables)
    assert caught.value.name == name
    assert caught.value.field == "subject"
    assert name in str(caught.value)


def test_missing_variable_names_the_field() -> None:
    with pytest.raises(TemplateVariableMissing) as caught:
        render_template("ok", "ok", "<p>{{ lead.last_name }}</p>", LEAD)
    assert caught.value.field == "body_html"
    assert caught.value.name == "lead.last_name"


def test_defaults_and_tests_work_with_missing_variables() -> None:
    rendered = render_template(
        "Hi {{ lead.nickname | default(lead.first_name) }}",
        "{% if lead.vip is defined %}VIP{% else %}regular{% endif %}",
        None,
        LEAD,
    )
    assert rendered.subject == "Hi Jürgen"
    assert rendered.body_text == "regular"


@pytest.mark.parametrize(
    "template",
    ["{{ lead.first_name ", "{% if x %}no end", "{% for %}", "{{ }}", "{% include 'x' %}{{"],
)
def test_syntax_errors_are_reported_by_field(template: str) -> None:
    with pytest.raises(TemplateSyntaxInvalid) as caught:
        validate_template("ok", template, None)
    assert caught.value.field == "body_text"
    with pytest.raises(TemplateSyntaxInvalid):
        render_template("ok", template, None, LEAD)
    with pytest.raises(TemplateSyntaxInvalid) as in_html:
        validate_template("ok", None, template)
    assert in_html.value.field == "body_html"


def test_validate_accepts_good_templates() -> None:
    validate_template("Hi {{ lead.first_name }}", "{% if x %}a{% endif %}", "<p>{{ y }}</p>")
    validate_template("plain", None, None)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lead.__class__.__init__.__globals__ }}",
        "{{ lead|attr('__class__') }}",
        "{{ lead.first_name.__class__.__base__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ lead.company.update({'name': 'x'}) }}",
        "{{ 'x' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ (9 ** 9) ** (9 ** 9) }}",
        "{{ ('{0.__class__}').format(lead) }}",
    ],
)
def test_sandbox_escapes_are_blocked(template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_template(template, None, None, LEAD)
    assert isinstance(caught.value, TemplateRenderError | TemplateVariableMissing)


@pytest.mark.parametrize(
    "name",
    ["config", "os", "environ", "range", "cycler", "lipsum", "joiner", "namespace", "request"],
)
def test_nothing_of_the_process_is_visible(name: str) -> None:
    with pytest.raises(TemplateVariableMissing) as caught:
        render_template(f"{{{{ {name} }}}}", None, None, {})
    assert caught.value.name == name


def test_environment_values_do_not_leak() -> None:
    os.environ["LEADMAIL_TEST_SECRET"] = "s3cret"
    try:
        for template in ["{{ environ }}", "{{ self }}", "{{ self._TemplateReference__context }}"]:
            try:
                rendered = render_template(template, None, None, {})
            except TemplateError:
                continue
            assert "s3cret" not in rendered.subject
    finally:
        del os.environ["LEADMAIL_TEST_SECRET"]


def test_subject_is_one_line_after_rendering() -> None:
    rendered = render_template(
        "Offer\nfor {{ name }}\r\n", None, None, {"name": "Anna\r\nBcc: victim@example.com\x00"}
    )
    assert rendered.subject == "Offer for Anna Bcc: victim@example.com"
    assert "\r" not in rendered.subject and "\n" not in rendered.subject


def test_runtime_errors_are_render_errors() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render_template("{{ 1 / 0 }}", None, None, {})
    assert caught.value.field == "subject"
    with pytest.raises(TemplateRenderError):
        render_template("{{ lead.first_name() }}", None, None, LEAD)


def test_template_errors_are_value_errors() -> None:
    assert issubclass(TemplateError, ValueError)
    for error in (TemplateSyntaxInvalid, TemplateVariableMissing, TemplateRenderError):
        assert issubclass(error, TemplateError)


def test_variables_are_not_mutated() -> None:
    variables = {"lead": {"tags": ["a"]}}
    with pytest.raises(TemplateRenderError):
        render_template("{{ lead.tags.append('b') }}", None, None, variables)
    assert variables == {"lead": {"tags": ["a"]}}


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''|center(1000000000) }}",
        "{{ 'a'|indent(1000000000) }}",
        "{{ 'a'|indent('x' * 99999) }}",
        "{{ 'a'|wordwrap(1000000000) }}",
        "{{ '%1000000000d'|format(1) }}",
        "{{ '%*d'|format(1000000000, 1) }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:{}}'.format('x', 1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ 'x'.zfill(1000000000) }}",
        "{{ '\t'.expandtabs(1000000000) }}",
        "{{ ('x' * 99999)|replace('x', 'y' * 99999) }}",
        "{{ ('x' * 99999).replace('x', 'y' * 99999) }}",
        "{{ (['x' * 99999] * 99)|join }}",
        "{{ ('x' * 60000) ~ ('x' * 60000) }}",
        "{{ ('x' * 60000) + ('x' * 60000) }}",
        "{{ ((9 ** 99) ** 99) ** 99 }}",
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
        "{{ d('x', 64) }}",
        "{% for i in 'x' * 1000 %}{{ 'y' * 99999 }}{% endfor %}",
        "{% for i in 'x' * 99999 %}{% for j in 'x' * 99999 %}{% endfor %}{% endfor %}",
    ],
)
def test_templates_cannot_exhaust_memory_or_time(template: str) -> None:
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(TemplateRenderError) as caught:
            render_template("Hi", None, template, LEAD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.field == "body_html"
    assert "not allowed" in caught.value.message
    # Refused before the big thing was built, not after.
    assert peak < 16 * 1024 * 1024
    assert time.perf_counter() - started < 2


def test_ordinary_templates_stay_within_the_bounds() -> None:
    rendered = render_template(
        "{{ '%s: %05.2f'|format(lead.first_name, 3.14159) }}",
        "{% for tag in tags %}{{ loop.index }}. {{ tag|center(12) }}\n{% endfor %}"
        "{{ lead.first_name.ljust(10, '.') }}{{ '{:>8}'.format('end') }}"
        "{{ tags|join(', ') }} {{ 'a-b'|replace('-', ' ') }} {{ 2 ** 10 }}",
        None,
        {**LEAD, "tags": ["vip", "renewal"]},
    )
    assert rendered.subject == "Jürgen: 03.14"
    assert "1.     vip     \n2.   renewal   \n" in (rendered.body_text or "")
    assert "Jürgen....     end" in (rendered.body_text or "")
    assert (rendered.body_text or "").endswith("vip, renewal a b 1024")


def test_a_long_but_honest_render_is_allowed() -> None:
    rows = [{"name": f"item {index}"} for index in range(5000)]
    rendered = render_template(
        "List", "{% for row in rows %}{{ row.name }}\n{% endfor %}", None, {"rows": rows}
    )
    assert (rendered.body_text or "").count("\n") == 5000
