"""The automatic text part: HTML newsletters become readable plain text."""

from __future__ import annotations

from fluxmail.message._html2text import html_to_text

NEWSLETTER = """\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Acme weekly</title>
<style>body { font-family: sans-serif } .btn { color: #fff }</style>
<script>window.track = function () {}</script></head>
<body>
<table role="presentation" width="100%"><tr><td>
  <h1><img src="cid:logo" alt="Acme"> Weekly digest</h1>
  <p>Hello Ada,<br>here is what happened this week at <strong>Acme</strong>
     &mdash; thanks for reading!</p>
  <h2>Top stories</h2>
  <ol>
    <li><a href="https://acme.example/launch">We launched Rockets&nbsp;2.0</a></li>
    <li><a href="https://acme.example/blog/roadmap">The 2027 roadmap</a> is out</li>
  </ol>
  <h3>Also</h3>
  <ul><li>Office hours on Friday</li><li>New docs</li></ul>
  <p><a class="btn" href="https://acme.example/account">Manage your account</a></p>
  <!-- tracking pixel below -->
  <img src="https://acme.example/pixel.gif" width="1" height="1" alt="">
  <hr>
  <p style="font-size:11px">You get this because you signed up.
     <a href="https://acme.example/unsubscribe?t=abc">Unsubscribe</a>
     &middot; <a href="#top">Back to top</a></p>
</td></tr></table>
</body></html>
"""


def test_newsletter_reads_well() -> None:
    text = html_to_text(NEWSLETTER)
    assert text == (
        "Acme Weekly digest\n"
        "==================\n"
        "\n"
        "Hello Ada,\n"
        "\n"
        "here is what happened this week at Acme — thanks for reading!\n"
        "\n"
        "Top stories\n"
        "-----------\n"
        "\n"
        "1. We launched Rockets\xa02.0 (https://acme.example/launch)\n"
        "2. The 2027 roadmap (https://acme.example/blog/roadmap) is out\n"
        "\n"
        "Also\n"
        "\n"
        "- Office hours on Friday\n"
        "- New docs\n"
        "\n"
        "Manage your account (https://acme.example/account)\n"
        "\n"
        "--------------------\n"
        "\n"
        "You get this because you signed up. Unsubscribe\n"
        "(https://acme.example/unsubscribe?t=abc) · Back to top\n"
    )


def test_scripts_styles_and_comments_are_dropped() -> None:
    text = html_to_text("<style>p{}</style><script>x()</script><!-- c --><p>kept</p>")
    assert text == "kept\n"


def test_links_whose_text_is_the_url_are_not_repeated() -> None:
    html = (
        '<p><a href="https://x.test/">https://x.test/</a> '
        '<a href="mailto:a@x.test">a@x.test</a></p>'
    )
    assert html_to_text(html) == "https://x.test/ a@x.test\n"


def test_pre_keeps_its_spacing_and_long_paragraphs_wrap() -> None:
    text = html_to_text("<pre>  a\n    b</pre><p>" + "word " * 40 + "</p>")
    assert text.startswith("  a\n    b\n\n")
    assert all(len(line) <= 78 for line in text.splitlines())


def test_empty_html_gives_empty_text() -> None:
    assert html_to_text("") == ""
    assert html_to_text("<p> </p>") == ""
