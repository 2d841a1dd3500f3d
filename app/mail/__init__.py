"""Pure mail handling: building, parsing, quoting, sanitising and templating.

No I/O anywhere in this package; every function is safe to call on the event loop
for ordinary message sizes.
"""

from app.mail.addresses import (
    Address,
    MailInputError,
    parse_address,
    parse_address_list,
    reject_header_injection,
)
from app.mail.compose import build_message, to_bytes
from app.mail.conversation import (
    MAX_REFERENCES,
    build_references,
    make_message_id,
    normalize_subject,
    parse_message_ids,
    reply_subject,
    validate_message_id,
)
from app.mail.html_text import html_to_text
from app.mail.parse import Attachment, ParsedMessage, decode_text, parse_message
from app.mail.quotes import reply_text_from, strip_quoted, strip_quoted_html
from app.mail.render import (
    RenderedTemplate,
    TemplateError,
    TemplateRenderError,
    TemplateSyntaxInvalid,
    TemplateVariableMissing,
    render_template,
    validate_template,
)
from app.mail.sanitize import sanitize_html

__all__ = [
    "MAX_REFERENCES",
    "Address",
    "Attachment",
    "MailInputError",
    "ParsedMessage",
    "RenderedTemplate",
    "TemplateError",
    "TemplateRenderError",
    "TemplateSyntaxInvalid",
    "TemplateVariableMissing",
    "build_message",
    "build_references",
    "decode_text",
    "html_to_text",
    "make_message_id",
    "normalize_subject",
    "parse_address",
    "parse_address_list",
    "parse_message",
    "parse_message_ids",
    "reject_header_injection",
    "render_template",
    "reply_subject",
    "reply_text_from",
    "sanitize_html",
    "strip_quoted",
    "strip_quoted_html",
    "to_bytes",
    "validate_message_id",
    "validate_template",
]
