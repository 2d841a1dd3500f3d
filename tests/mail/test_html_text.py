from app.mail import html_to_text


def test_blocks_become_lines_and_paragraphs() -> None:
    html = (
        "<div>Hi <b>Tom</b>,</div><div><br></div><div>thanks &amp; bye</div>"
        "<p>Para one</p><p>Para two</p><h2>Title</h2>text"
    )
    assert html_to_text(html) == "Hi Tom,\n\nthanks & bye\n\nPara one\n\nPara two\n\nTitle\n\ntext"


def test_inline_whitespace_collapses_like_a_browser() -> None:
    assert html_to_text("<p>  Hello\n   world\t&nbsp; </p>") == "Hello world"


def test_links_keep_their_text() -> None:
    assert html_to_text('See <a href="https://example.com/x">the offer</a>.') == "See the offer."


def test_hidden_content_is_dropped() -> None:
    html = (
        "<html><head><title>Newsletter</title><style>p{color:red}</style></head>"
        "<body><script>var x = 1;</script><p>Visible</p></body></html>"
    )
    assert html_to_text(html) == "Visible"


def test_lists_tables_and_pre() -> None:
    html = (
        "<ul><li>one</li><li> two </li></ul>"
        "<table><tr><td>Price</td><td>100 EUR</td></tr><tr><td>Tax</td><td>19 EUR</td></tr></table>"
        "<pre>a  b\n  c</pre>"
    )
    assert html_to_text(html) == "- one\n- two\n\nPrice 100 EUR\nTax 19 EUR\n\na  b\n  c"


def test_blockquotes_are_prefixed_per_level() -> None:
    html = (
        "<div>Answer</div><blockquote><div>quoted</div>"
        "<blockquote><p>deeper</p></blockquote></blockquote><div>after</div>"
    )
    assert html_to_text(html) == "Answer\n\n> quoted\n>\n> > deeper\n\nafter"


def test_outlook_paragraphs_are_lines() -> None:
    html = (
        "<p class=MsoNormal>Line one<o:p></o:p></p><p class=MsoNormal>Line two</p>"
        "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>After a blank</p>"
    )
    assert html_to_text(html) == "Line one\nLine two\n\nAfter a blank"


def test_malformed_html_does_not_raise() -> None:
    assert html_to_text("<div><p>unclosed <b>bold <blockquote>q") == "unclosed bold\n\n> q"
    assert html_to_text("</div></blockquote></pre>text<") == "text<"
    assert html_to_text("") == ""
