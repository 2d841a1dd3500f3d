"""Making received mail HTML safe to show inside the CRM.

Policy: formatting survives; nothing runs (no script, no event handlers, no
``javascript:``), nothing loads from the network when the mail is opened (remote
images and tracking pixels lose their ``src``, CSS ``url()`` goes, no
iframe/object/link/meta/form), and nothing can reach into the host page
(no ``id``, ``name`` or ``class``, so the CRM's own CSS and scripts cannot be
targeted). Inline images (``cid:``) and embedded raster images (``data:image/...``)
are kept; links get ``rel="noopener noreferrer nofollow"``.
"""

from __future__ import annotations

import re

import nh3

__all__ = ["sanitize_html"]

_TAGS = frozenset(
    {
        "a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote", "br",
        "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div",
        "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
        "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span",
        "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
        "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip
# Removed together with their content: code, styles, and embedding elements whose
# "content" is fallback markup that would otherwise surface as text.
_DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "title", "template", "iframe", "object", "embed", "noembed",
     "noframes", "xmp", "svg", "math", "select", "textarea", "button"}
)  # fmt: skip
_LAYOUT_ATTRIBUTES = frozenset(
    {"style", "title", "dir", "lang", "align", "valign", "width", "height", "bgcolor",
     "border", "cellpadding", "cellspacing", "colspan", "rowspan", "span", "nowrap"}
)  # fmt: skip
_ATTRIBUTES: dict[str, set[str]] = {
    "*": set(_LAYOUT_ATTRIBUTES),
    "a": {"href"},
    "img": {"src", "alt"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "hr": {"size", "noshade"},
}
# Formatting only: no position/z-index (a mail must not overlay the CRM's own UI),
# no background-image, no content/cursor/filter tricks.
_STYLE_PROPERTIES = frozenset(
    {
        "color", "background", "background-color", "font", "font-family", "font-size",
        "font-style", "font-variant", "font-weight", "line-height", "letter-spacing",
        "word-spacing", "text-align", "text-decoration", "text-indent", "text-transform",
        "white-space", "word-break", "word-wrap", "overflow-wrap", "vertical-align",
        "direction", "display", "float", "clear", "width", "height", "min-width",
        "max-width", "min-height", "max-height", "margin", "margin-top", "margin-right",
        "margin-bottom", "margin-left", "padding", "padding-top", "padding-right",
        "padding-bottom", "padding-left", "border", "border-top", "border-right",
        "border-bottom", "border-left", "border-color", "border-style", "border-width",
        "border-radius", "border-collapse", "border-spacing", "table-layout",
        "list-style", "list-style-type", "list-style-position",
    }
)  # fmt: skip
_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid", "data"})
_LINK_RELATION = "noopener noreferrer nofollow"

_LINK_TARGET = re.compile(r"^(?:https?://|mailto:|tel:|#)", re.IGNORECASE)
_INLINE_IMAGE = re.compile(
    r"^(?:cid:[^\s\"'<>]+|data:image/(?:png|gif|jpe?g|webp|bmp);base64,[A-Za-z0-9+/=\s]+)$",
    re.IGNORECASE,
)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_HEX_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
# Anything in a style attribute that can load a resource or run code.
_CSS_DANGER = re.compile(
    r"url\(|image-set\(|expression\(|@import|javascript:|vbscript:|behavior:|-moz-binding|"
    r"binding:|-o-link|src\(",
    re.IGNORECASE,
)


def sanitize_html(html: str) -> str:
    """Return ``html`` with everything unsafe removed (see the module docstring)."""
    return str(
        nh3.clean(
            html,
            tags=set(_TAGS),
            clean_content_tags=set(_DROPPED_WITH_CONTENT),
            attributes=_ATTRIBUTES,
            attribute_filter=_filter_attribute,
            url_schemes=set(_URL_SCHEMES),
            link_rel=_LINK_RELATION,
            filter_style_properties=set(_STYLE_PROPERTIES),
            strip_comments=True,
        )
    )


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if _LINK_TARGET.match(value.strip()) else None
    if attribute == "src":
        return value if tag == "img" and _INLINE_IMAGE.match(value.strip()) else None
    if attribute == "style":
        return None if _is_dangerous_css(value) else value
    return value


def _is_dangerous_css(style: str) -> bool:
    # CSS escapes ("\\75 rl(", "u\\rl(") and comments ("u/**/rl(") are ways around a
    # plain search, so look at the declarations as the browser would read them.
    normalized = _CSS_COMMENT.sub("", style)
    normalized = _CSS_HEX_ESCAPE.sub(_unescape_css_hex, normalized).replace("\\", "")
    normalized = re.sub(r"\s+", "", normalized)
    return bool(_CSS_DANGER.search(normalized))


def _unescape_css_hex(match: re.Match[str]) -> str:
    code_point = int(match.group(1), 16)
    return chr(code_point) if 0 < code_point <= 0x10FFFF else "\ufffd"
