"""Rendering message templates in Jinja2's sandbox.

A template sees its variables and nothing else of the process: no globals
(``range``, ``cycler``, ``lipsum`` … are removed), no dunder or internal attributes
(the sandbox raises on ``''.__class__`` and the like), no mutation of the
variables, and nothing that would build a huge string or number or run for long:
operators, ``~``, width and padding arguments of filters and string methods, format
specs, each part's output and the lines a template may execute are all bounded.
Missing variables are errors naming the variable (``lead.first_name``), not blanks.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from app.mail.html_text import html_to_text

TraceFunction = Callable[[FrameType, str, Any], Any]

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
MAX_INT_BITS = 10_000  # ``(9 ** 99) ** 99`` and the like
# Widths and paddings: ``center``, ``indent``, ``ljust``, ``'%9999999d'``, ``'{:>9999999}'``.
MAX_WIDTH = 1_000
# Per rendered part: characters out, and template lines executed (nested loops).
MAX_OUTPUT = 1_000_000
MAX_STEPS = 200_000

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}|\{[^{}]*\{")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH_FILTERS = {"center": 1, "indent": 1, "wordwrap": 1}  # filter -> position of the width


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


class _BoundedCodeGenerator(CodeGenerator):
    """``a ~ b`` is not an operator the sandbox intercepts: have the template check
    the joined string's length."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_length(")
        super().visit_Concat(node, frame)
        self.write(")")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(undefined=_RecordingUndefined, autoescape=autoescape)
        self.globals.clear()
        for name, position in _WIDTH_FILTERS.items():
            self.filters[name] = _width_bounded(self.filters[name], position)
        self.filters["format"] = _format_bounded(self.filters["format"])
        self.filters["replace"] = _replace_bounded(self.filters["replace"])
        self.filters["join"] = _join_bounded(self.filters["join"])

    @staticmethod
    def checked_length(value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_SEQUENCE_LENGTH:
            raise SecurityError("result too large")
        return value

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError("exponent too large")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left).bit_length() * right > MAX_INT_BITS
            ):
                raise SecurityError("number too large")
            return operator.pow(left, right)
        if operator_name == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            return operator.mul(left, right)
        if operator_name == "+":
            if (
                isinstance(left, str | list | tuple)
                and isinstance(right, str | list | tuple)
                and len(left) + len(right) > MAX_SEQUENCE_LENGTH
            ):
                raise SecurityError("result too large")
            return operator.add(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                _check_printf(left)
            return operator.mod(left, right)
        return super().call_binop(context, operator_name, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja wraps `str.format` when the attribute is read, so check the spec then.
        if getattr(value, "__name__", "") in ("format", "format_map"):
            owner = getattr(value, "__self__", None)
            if isinstance(owner, str):
                _check_format(owner)
        return super().wrap_str_format(value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _WIDTH_METHODS:
                _check_widths(*args, *kwargs.values())
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
            elif name == "join" and args:
                _check_join(owner, args[0])
        return super().call(__context, __obj, *args, **kwargs)


def _check_widths(*values: Any) -> None:
    if any(isinstance(value, int) and abs(value) > MAX_WIDTH for value in values):
        raise SecurityError(f"a width above {MAX_WIDTH}")
    if any(isinstance(value, str) and len(value) > MAX_WIDTH for value in values):
        raise SecurityError(f"a padding longer than {MAX_WIDTH}")


def _check_printf(template: str) -> None:
    for width, precision in _PRINTF_SPEC.findall(template):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise SecurityError(f"a format width above {MAX_WIDTH}")


def _check_format(template: str) -> None:
    for match in _FORMAT_SPEC.finditer(template):
        spec = match.group(1)
        if spec is None:  # a replacement field nested in another: a width from the data
            raise SecurityError("nested format fields")
        if any(int(number) > MAX_WIDTH for number in re.findall(r"\d+", spec)):
            raise SecurityError(f"a format width above {MAX_WIDTH}")


def _check_replace(value: Any, old: Any, new: Any) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str) and old:
        grown = len(value) + value.count(old) * (len(new) - len(old))
        if grown > MAX_SEQUENCE_LENGTH:
            raise SecurityError("result too large")


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(items, list | tuple) and items:
        size = len(str(separator)) * (len(items) - 1)
        size += sum(len(item if isinstance(item, str) else str(item)) for item in items)
        if size > MAX_SEQUENCE_LENGTH:
            raise SecurityError("result too large")


Filter = Callable[..., Any]


def _width_bounded(original: Filter, position: int) -> Filter:
    # A filter that takes the context or environment first has its width one further on.
    first_width = position + (1 if getattr(original, "jinja_pass_arg", None) is not None else 0)

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_widths(*args[first_width:], *kwargs.values())
        return original(*args, **kwargs)

    return bounded


def _format_bounded(original: Filter) -> Filter:
    @functools.wraps(original)
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            _check_printf(value)
        return original(value, *args, **kwargs)

    return bounded


def _replace_bounded(original: Filter) -> Filter:
    @functools.wraps(original)
    def bounded(eval_ctx: Any, value: Any, old: Any, new: Any, *args: Any) -> Any:
        _check_replace(str(value), old, new)
        return original(eval_ctx, value, old, new, *args)

    return bounded


def _join_bounded(original: Filter) -> Filter:
    @functools.wraps(original)
    def bounded(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value) if attribute is None else value
        if attribute is None:
            _check_join(d, items)
        return original(eval_ctx, items, d, attribute)

    return bounded


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
        return _bounded_render(template, dict(variables))
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


def _bounded_render(template: Template, variables: dict[str, Any]) -> str:
    """Render with a cap on the output and on the template lines executed: a loop in a
    loop need not build anything to keep the process busy."""
    steps = 0

    def count_lines(frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        nonlocal steps
        if event == "line":
            steps += 1
            if steps > MAX_STEPS:
                raise SecurityError("the template runs too long")
        return count_lines

    def trace_templates(frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        # Only the template's own code is counted, not the functions it calls.
        return count_lines if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(trace_templates)
    try:
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError("the rendered text is too long")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        sys.settrace(previous)


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
