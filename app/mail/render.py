"""Rendering message templates in Jinja2's sandbox.

A template sees its variables and nothing else of the process: no globals
(``range``, ``cycler``, ``lipsum`` … are removed), no dunder or internal attributes
(the sandbox raises on ``''.__class__`` and the like), no mutation of the
variables, and no operator that would build a huge string or number. Missing
variables are errors naming the variable (``lead.first_name``), not blanks.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from jinja2 import (
    StrictUndefined,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from app.mail.html_text import html_to_text

__all__ = [
    "RenderedTemplate",
    "TemplateError",
    "TemplateRenderError",
    "TemplateSyntaxInvalid",
    "TemplateVariableMissing",
    "render_template",
    "validate_template",
]

# Bounds on what one expression may build, e.g. ``{{ 'x' * 10**9 }}``.
MAX_SEQUENCE_LENGTH = 100_000
MAX_EXPONENT = 100


class TemplateError(ValueError):
    """Base of everything a template can do wrong (a `422` for the API)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TemplateSyntaxInvalid(TemplateError):
    """The template does not parse."""


class TemplateVariableMissing(TemplateError):
    """The template uses a variable the send did not supply; ``name`` is its dotted path."""

    def __init__(self, field: str, name: str) -> None:
        super().__init__(field, f"variable {name!r} is missing")
        self.name = name


class TemplateRenderError(TemplateError):
    """The template parsed but failed while rendering (a forbidden access, a type error)."""


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    subject: str
    body_text: str | None
    body_html: str | None


class _MissingVariable(UndefinedError):
    def __init__(self, message: str | None, name: str, owner: Any) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


class _RecordingUndefined(StrictUndefined):
    """StrictUndefined whose error says which name was missing, and on which object."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError and name is not None:
            # Every operation on an undefined raises self._undefined_exception(message).
            exc = cast(
                "type[TemplateRuntimeError]",
                functools.partial(_MissingVariable, name=name, owner=obj),
            )
        super().__init__(hint, obj, name, exc)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=_RecordingUndefined, autoescape=autoescape)
        self.globals.clear()

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        if operator_name == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def _check_repeat(sequence: Any, count: Any) -> None:
    if (
        isinstance(sequence, str | list | tuple)
        and isinstance(count, int)
        and len(sequence) * count > MAX_SEQUENCE_LENGTH
    ):
        raise SecurityError("result too large")


_PLAIN = _Sandbox(autoescape=False)
_HTML = _Sandbox(autoescape=True)


def validate_template(subject: str, body_text: str | None, body_html: str | None) -> None:
    """Raise `TemplateSyntaxInvalid` (naming the field) if any part does not parse."""
    for field, source, environment in _parts(subject, body_text, body_html):
        _compile(field, source, environment)


def render_template(
    subject: str,
    body_text: str | None,
    body_html: str | None,
    variables: Mapping[str, Any],
) -> RenderedTemplate:
    """Render every part with ``variables``.

    HTML autoescapes variables; the subject and text do not. The rendered subject
    has its whitespace (line breaks included) collapsed to single spaces, so it
    can go into a header. Without a text template the text is derived from the
    rendered HTML.
    """
    rendered: dict[str, str | None] = {"subject": None, "body_text": None, "body_html": None}
    for field, source, environment in _parts(subject, body_text, body_html):
        rendered[field] = _render(field, source, environment, variables)
    rendered_subject = " ".join((rendered["subject"] or "").replace("\x00", "").split())
    text = rendered["body_text"]
    html = rendered["body_html"]
    if text is None and html is not None:
        text = html_to_text(html)
    return RenderedTemplate(subject=rendered_subject, body_text=text, body_html=html)


def _parts(
    subject: str, body_text: str | None, body_html: str | None
) -> Iterator[tuple[str, str, _Sandbox]]:
    yield "subject", subject, _PLAIN
    if body_text is not None:
        yield "body_text", body_text, _PLAIN
    if body_html is not None:
        yield "body_html", body_html, _HTML


def _compile(field: str, source: str, environment: _Sandbox) -> nodes.Template:
    try:
        return environment.parse(source)
    except TemplateSyntaxError as error:
        raise TemplateSyntaxInvalid(field, f"line {error.lineno}: {error.message}") from None


def _render(field: str, source: str, environment: _Sandbox, variables: Mapping[str, Any]) -> str:
    tree = _compile(field, source, environment)
    try:
        template = environment.from_string(tree)
        return template.render(dict(variables))
    except _MissingVariable as error:
        raise TemplateVariableMissing(field, _variable_path(tree, error, variables)) from None
    except SecurityError as error:
        raise TemplateRenderError(field, f"not allowed: {error}") from None
    except UndefinedError as error:
        raise TemplateRenderError(field, str(error)) from None
    except TemplateSyntaxError as error:
        raise TemplateSyntaxInvalid(field, f"line {error.lineno}: {error.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as error:
        raise TemplateRenderError(field, f"{type(error).__name__}: {error}") from None


def _variable_path(
    tree: nodes.Template, error: _MissingVariable, variables: Mapping[str, Any]
) -> str:
    """The dotted path of the missing variable, as the template wrote it.

    Jinja only knows the last name and the object it was looked up on, so find the
    template's paths ending in that name and take the one whose prefix resolves
    to that very object (loop variables resolve to nothing: then the first path).
    """
    if error.owner is missing:
        return error.name
    candidates = [path for path in _paths(tree) if path[-1] == error.name and len(path) > 1]
    for path in candidates:
        if _resolve(variables, path[:-1]) is error.owner:
            return ".".join(path)
    return ".".join(candidates[0]) if candidates else error.name


def _paths(tree: nodes.Template) -> Iterator[list[str]]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        path = _path_of(node)
        if path:
            yield path


def _path_of(node: nodes.Node) -> list[str] | None:
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        base = _path_of(node.node)
        return None if base is None else [*base, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path_of(node.node)
        return None if base is None else [*base, str(node.arg.value)]
    return None


def _resolve(variables: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = variables
    for name in path:
        lookup: Callable[[str], Any] | None = getattr(value, "get", None)
        if lookup is None:
            return missing
        value = lookup(name)
        if value is None:
            return missing
    return value
