"""Markdown from guidelines authors becomes HTML with no way to run script or set attributes."""

from html.parser import HTMLParser

import pytest
from django.template import Context, Template

from labeling.html import TAGS, render_markdown, sanitize


class Elements(HTMLParser):
    """Every start tag of a fragment with its attributes, as a browser's parser would see them."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.found = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def assert_inert(html):
    """No tag outside the allow-list, no event handler, no URL that runs or embeds code."""
    for tag, attrs in Elements(html).found:
        assert tag in TAGS, f"<{tag}> in {html!r}"
        assert not [name for name in attrs if name.startswith("on")], f"handler on <{tag}> in {html!r}"
        assert "style" not in attrs, f"style on <{tag}> in {html!r}"
        for name in ("href", "src"):
            url = (attrs.get(name) or "").strip().lower()
            assert not url.startswith(("javascript:", "data:", "vbscript:")), f"{name}={url!r} in {html!r}"


# Each Markdown feature, with an attempt to smuggle in a handler or a script URL.
MARKDOWN_PAYLOADS = {
    "heading with attr_list": '# Title {: onclick="alert(1)" }',
    "paragraph with attr_list": 'Text\n{: onmouseover="alert(1)" style="color:red" }',
    "link with attr_list": '[x](https://example.com){: onclick="alert(1)" }',
    "fenced code with attributes": '```{ .python onclick="alert(1)" }\nprint(1)\n```',
    "table with attr_list": '| a {: onclick="alert(1)" } | b |\n|---|---|\n| <img src=x onerror=alert(1)> | 2 |',
    "link title breakout": '[x](https://example.com "t\\" onclick=\\"alert(1)")',
    "image alt breakout": '![x" onerror="alert(1)](https://example.com/a.png)',
    "image with attr_list": '![x](https://example.com/a.png){: onerror="alert(1)" }',
    "reference link": '[x][ref]\n\n[ref]: javascript:alert(1) "title"',
    "autolink": "<javascript:alert(1)> <https://example.com/\" onclick=\"alert(1)>",
    "abbreviation": '*[HTML]: Hyper" onmouseover="alert(1)\n\nSome HTML here.',
    "footnote": 'Text[^1]\n\n[^1]: <img src=x onerror=alert(1)> note',
    "definition list": 'Term\n: <svg onload=alert(1)>',
    "raw html block": '<div onclick="alert(1)">hi</div>\n\n<script>alert(1)</script>',
    "raw inline html": 'Hi <img src=x onerror=alert(1)> and <a href="javascript:alert(1)">x</a>',
    "markdown inside html": '<div markdown="1" onclick="alert(1)">**bold**</div>',
    "svg": '<svg onload="alert(1)"><script>alert(1)</script></svg>',
    "attribute breakout": '"><script>alert(1)</script><img src=x onerror=alert(1)>',
    "entity-encoded tag": "&lt;script&gt;alert(1)&lt;/script&gt;",
}


@pytest.mark.parametrize("source", MARKDOWN_PAYLOADS.values(), ids=MARKDOWN_PAYLOADS.keys())
def test_no_markdown_feature_lets_an_author_add_a_handler_or_a_script(source):
    html = render_markdown(source)
    assert_inert(html)
    assert "<script" not in html and "<svg" not in html


SCRIPT_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "&#106;avascript:alert(1)",
    "&#x6A;&#x61;&#x76;&#x61;script:alert(1)",
    "java&#x09;script:alert(1)",
    "javascript&colon;alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:image/svg+xml,<svg onload=alert(1)>",
]


@pytest.mark.parametrize("url", SCRIPT_URLS)
@pytest.mark.parametrize("form", ["[x]({})", "![x]({})", "[x][r]\n\n[r]: {}", "<{}>"])
def test_links_and_images_lose_urls_of_other_schemes(form, url):
    html = render_markdown(form.format(url))
    assert_inert(html)
    assert [attrs for _, attrs in Elements(html).found if "href" in attrs or "src" in attrs] == []


@pytest.mark.parametrize("url", ["https://example.com/a?b=1", "http://example.com/", "mailto:team@example.com",
                                 "/work/", "#fn:1"])
def test_links_of_allowed_schemes_keep_their_url_and_get_a_safe_rel(url):
    html = render_markdown(f"[x]({url})")
    [(tag, attrs)] = Elements(html).found[1:]
    assert (tag, attrs["href"]) == ("a", url)
    assert attrs["rel"] == "noopener noreferrer nofollow"


def test_the_formatting_guidelines_use_survives():
    html = render_markdown(
        "## Ranking\n\nPrefer **honest** and *harmless* answers.[^why]\n\n"
        "1. First\n2. Second\n\n"
        "| Rating | Meaning |\n|:--|--:|\n| 7 | ideal |\n\n"
        "```python\nprint('hi')\n```\n\n"
        "Flag\n: a yes/no mark\n\n"
        "[^why]: See the paper.\n"
    )
    assert "<h2>Ranking</h2>" in html
    assert "<strong>honest</strong>" in html and "<em>harmless</em>" in html
    assert "<ol>\n<li>First</li>" in html
    assert '<th align="left">Rating</th>' in html and '<td align="right">ideal</td>' in html
    assert '<code class="language-python">' in html
    assert "<dt>Flag</dt>" in html
    assert '<sup id="fnref:why"><a class="footnote-ref" href="#fn:why"' in html


def test_raw_html_in_markdown_is_shown_as_text():
    assert render_markdown("Use <b>bold</b>, not <script>x()</script>.") == (
        "<p>Use &lt;b&gt;bold&lt;/b&gt;, not &lt;script&gt;x()&lt;/script&gt;.</p>"
    )


@pytest.mark.parametrize("html", [
    '<img src=x onerror="alert(1)">',
    '<svg><circle onload="alert(1)"/></svg>',
    '<a href="javascript:alert(1)" onclick="alert(1)">x</a>',
    '<p style="background:url(javascript:alert(1))">x</p>',
    '<iframe src="https://example.com"></iframe><object data="x"></object><embed src="x">',
    '<form action="https://example.com"><input name=q><button formaction="javascript:alert(1)">go</button></form>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<details open ontoggle="alert(1)"><summary>x</summary></details>',
    '<base href="https://example.com/"><meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
])
def test_the_sanitizer_refuses_markup_markdown_never_writes(html):
    assert_inert(sanitize(html))


def test_the_sanitizer_keeps_only_ids_and_classes_markdown_writes():
    # An id like "task-form" on guidelines could shadow the page's own elements for its scripts.
    cleaned = sanitize('<p id="task-form" class="card">x</p><li id="fn:1">y</li>'
                       '<code class="language-py evil">z</code>')
    assert cleaned == '<p>x</p><li id="fn:1">y</li><code class="language-py">z</code>'


def test_the_markdown_template_filter_renders_through_the_sanitizer():
    template = Template("{% load labeling_extras %}<div>{{ body|markdown }}</div>")
    html = template.render(Context({"body": '**Be kind** {: onclick="alert(1)" }\n\n[x](javascript:alert(1))'}))
    assert '<p><strong>Be kind</strong> {: onclick="alert(1)" }</p>' in html  # the syntax stays text
    assert '<p><a rel="noopener noreferrer nofollow">x</a></p>' in html
    assert_inert(html)
