import pytest

from app.mail import sanitize_html


def test_script_and_style_are_removed_with_their_content() -> None:
    clean = sanitize_html(
        "<style>body{display:none}</style><p>Hi</p><script>alert(1)</script>"
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>"
    )
    assert clean == "<p>Hi</p>"


@pytest.mark.parametrize(
    "html",
    [
        '<img src="cid:a@b" onerror="alert(1)">',
        '<p onclick="alert(1)" onmouseover="alert(2)">x</p>',
        '<body onload="alert(1)">x</body>',
        '<a href="https://example.com" onfocus="alert(1)">x</a>',
    ],
)
def test_event_handlers_are_removed(html: str) -> None:
    clean = sanitize_html(html)
    assert " on" not in clean.lower()
    assert "alert" not in clean


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java&#x09;script:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "/relative/path",
        "//evil.example/x",
    ],
)
def test_dangerous_and_relative_links_lose_their_href(href: str) -> None:
    clean = sanitize_html(f'<a href="{href}">click</a>')
    assert "href" not in clean
    assert ">click</a>" in clean


def test_normal_links_are_kept_with_rel() -> None:
    clean = sanitize_html(
        '<a href="https://example.com/offer?a=1&amp;b=2" target="_blank" rel="opener">offer</a>'
        '<a href="mailto:anna@example.com">mail</a>'
    )
    assert clean == (
        '<a href="https://example.com/offer?a=1&amp;b=2" rel="noopener noreferrer nofollow">'
        "offer</a>"
        '<a href="mailto:anna@example.com" rel="noopener noreferrer nofollow">mail</a>'
    )


def test_remote_images_and_tracking_pixels_do_not_load() -> None:
    clean = sanitize_html(
        '<img src="https://tracker.example/open.gif?id=42" width="1" height="1">'
        '<img src="http://cdn.example/logo.png" alt="Logo">'
        '<img src="//cdn.example/x.png"><img src="/local.png">'
        '<img srcset="https://cdn.example/a.png 2x" src="cid:x@y">'
    )
    assert "tracker" not in clean
    assert "cdn.example" not in clean
    assert "local.png" not in clean
    assert 'alt="Logo"' in clean
    assert '<img src="cid:x@y">' in clean


def test_inline_and_embedded_images_are_kept() -> None:
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    clean = sanitize_html(f'<img src="cid:logo@example.com" alt="Logo"><img src="{png}">')
    assert 'src="cid:logo@example.com"' in clean
    assert f'src="{png}"' in clean


def test_svg_data_images_are_not_embedded() -> None:
    clean = sanitize_html('<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">')
    assert "svg" not in clean


@pytest.mark.parametrize(
    "style",
    [
        "background:url(https://tracker.example/p.gif)",
        "background-image: URL( 'https://tracker.example/p.gif' )",
        "background:\\75 rl(https://tracker.example/p.gif)",
        "background:u\\rl(https://tracker.example/p.gif)",
        "width:expression(alert(1))",
        "width:expr/**/ession(alert(1))",
        "behavior:url(x.htc)",
        "list-style:image-set('https://tracker.example/a.png' 1x)",
    ],
)
def test_styles_that_load_or_run_are_removed(style: str) -> None:
    clean = sanitize_html(f'<div style="{style}">text</div>')
    assert clean == "<div>text</div>"


def test_formatting_styles_are_kept_but_not_overlays() -> None:
    clean = sanitize_html(
        '<p style="color:#333;font-weight:bold;position:fixed;top:0;z-index:9999">x</p>'
    )
    assert clean == '<p style="color:#333;font-weight:bold">x</p>'


@pytest.mark.parametrize(
    ("html", "forbidden"),
    [
        ('<iframe src="https://evil.example">fallback</iframe>', "iframe"),
        ('<object data="https://evil.example/x.swf">fallback</object>', "object"),
        ('<embed src="https://evil.example/x.swf">', "embed"),
        ('<form action="https://evil.example"><input name="password"></form>', "form"),
        ('<link rel="stylesheet" href="https://evil.example/x.css">', "link"),
        ('<meta http-equiv="refresh" content="0;url=https://evil.example">', "meta"),
        ('<base href="https://evil.example/">', "base"),
        ("<svg><script>alert(1)</script></svg>", "svg"),
        ('<table background="https://tracker.example/bg.png"><tr><td>x</td></tr></table>',
         "background"),
        ('<video src="https://evil.example/v.mp4" poster="https://evil.example/p.png">', "video"),
    ],
)  # fmt: skip
def test_embedding_and_remote_loading_elements_are_removed(html: str, forbidden: str) -> None:
    clean = sanitize_html(html)
    assert forbidden not in clean
    assert "evil.example" not in clean
    assert "tracker.example" not in clean


def test_host_page_cannot_be_targeted() -> None:
    clean = sanitize_html('<div id="app" class="fixed inset-0" name="x">text</div>')
    assert clean == "<div>text</div>"


def test_mail_formatting_survives() -> None:
    html = (
        '<table width="100%" cellpadding="0" bgcolor="#ffffff"><tbody><tr>'
        '<td align="center" style="padding:8px">'
        '<font color="red" face="Arial">Angebot</font> <b>fett</b> <i>kursiv</i></td>'
        "</tr></tbody></table><blockquote>Zitat</blockquote><ul><li>eins</li></ul>"
    )
    assert sanitize_html(html) == html


def test_comments_and_conditional_comments_are_removed() -> None:
    clean = sanitize_html('<!--[if mso]><img src="https://x.example/a.png"><![endif]--><p>x</p>')
    assert clean == "<p>x</p>"
