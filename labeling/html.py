"""Text that people write, turned into HTML that is safe to put on a page.

Markdown runs first with the extensions that only add structure (none lets an author set an
attribute, as `attr_list` and `md_in_html` would), and raw HTML in the source is shown as text.
Then nh3 keeps only the tags, attributes and URL schemes listed here, whatever Markdown produced:
the allow-list is the guarantee, the Markdown settings only make it rarely needed.
"""

import re

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

EXTENSIONS = ["tables", "fenced_code", "sane_lists", "def_list", "footnotes", "abbr"]
# `align` rather than an inline style, which the Content-Security-Policy would refuse.
EXTENSION_CONFIGS = {"tables": {"use_align_attribute": True}}

TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "code", "pre", "blockquote",
    "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "a", "img", "abbr", "sup",
    "div",
}
ATTRIBUTES = {
    "a": {"href", "title", "class"},
    "img": {"src", "alt", "title"},
    "abbr": {"title"},
    "ol": {"start"},
    "code": {"class"},
    "div": {"class"},
    "sup": {"id"},
    "li": {"id"},
}
ATTRIBUTE_VALUES = {"th": {"align": {"left", "right", "center"}}, "td": {"align": {"left", "right", "center"}}}
URL_SCHEMES = {"http", "https", "mailto"}
# Classes and ids Markdown itself writes: a fenced block's language and the footnotes' links.
CLASS = re.compile(r"language-[\w+#.-]+|footnote|footnote-ref|footnote-backref")
ID = re.compile(r"fn(ref)?:[\w.-]+")


def _keep(tag, name, value):
    if name == "class":
        kept = " ".join(word for word in value.split() if CLASS.fullmatch(word))
        return kept or None
    if name == "id":
        return value if ID.fullmatch(value) else None
    if name == "start":
        return value if value.isdigit() else None
    return value


def sanitize(html: str) -> str:
    """Only the allow-listed tags, attributes and URL schemes of `html`; links get a safe `rel`."""
    return nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style"},
        attributes=ATTRIBUTES,
        tag_attribute_values=ATTRIBUTE_VALUES,
        attribute_filter=_keep,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def render_markdown(text: str) -> SafeString:
    """Markdown to sanitized HTML, marked safe for templates."""
    converter = markdown.Markdown(extensions=EXTENSIONS, extension_configs=EXTENSION_CONFIGS)
    # Raw HTML in the source becomes text on the page rather than markup.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return mark_safe(sanitize(converter.convert(text or "")))
