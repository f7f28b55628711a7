"""Hypothesis properties: whatever goes in either raises a FluxMailException subclass, or
comes back out of Python's email parser exactly.

"Exactly" means: headers decoded equal the input; bodies equal the input after the body
normalisation rule (each CRLF, lone CR and lone LF becomes CRLF, and a non-empty body
that does not end with a line break gets a final CRLF; see ``crlf`` in test_compose).
Every output has CRLF line ends only and no line over 998 octets (checked by ``parse``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxmail.compose._composer import compose
from fluxmail.errors import ConfigurationError, FluxMailException
from fluxmail.message import Address, Message, build_message, parse_address
from helpers import TEXT, crlf, filename_param, must_accept, parse, refused

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(**overrides: Any) -> Message:
    options: dict[str, Any] = {
        "subject": "s",
        "recipients": ["to@example.com"],
        "body": "b",
        "sender": "me@example.com",
    }
    options.update(overrides)
    return build_message(**options)


@must_accept(0.05)
@SETTINGS
@given(TEXT)
def test_subject_round_trips(subject: str) -> None:
    try:
        built = message(subject=subject)
    except FluxMailException as exc:
        return refused(exc)
    assert parse(compose(built))["Subject"] == subject


@must_accept(0.05)
@SETTINGS
@given(TEXT)
def test_display_name_round_trips(name: str) -> None:
    try:
        built = message(recipients=[Address("to", "example.com", name)])
    except FluxMailException as exc:
        return refused(exc)
    (parsed,) = parse(compose(built))["To"].addresses
    assert parsed.display_name == name
    assert parsed.addr_spec == "to@example.com"


@must_accept(0.05)
@SETTINGS
@given(TEXT)
def test_quoted_display_name_parses_back(name: str) -> None:
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        address = parse_address(f"{quoted} <to@example.com>", field="to")
    except FluxMailException as exc:
        return refused(exc)
    assert address.display_name == name


@must_accept(0.5)
@SETTINGS
@given(TEXT, st.booleans())
def test_body_round_trips(body: str, html: bool) -> None:
    try:
        built = message(body=body, html_body=html, auto_text=False)
    except FluxMailException as exc:
        return refused(exc)
    assert parse(compose(built)).get_content() == crlf(body)


@must_accept(0.5)
@SETTINGS
@given(TEXT, TEXT)
def test_alternative_bodies_round_trip(html: str, plain: str) -> None:
    try:
        built = message(body=html, html_body=True, plain_body=plain)
    except FluxMailException as exc:
        return refused(exc)
    plain_part, html_part = parse(compose(built)).iter_parts()
    assert plain_part.get_content() == crlf(plain)
    assert html_part.get_content() == crlf(html)


@must_accept(0.05)
@SETTINGS
@given(TEXT, st.binary(max_size=300))
def test_attachment_filename_and_data_round_trip(filename: str, data: bytes) -> None:
    try:
        built = message(attachments=[(filename, data, "application/octet-stream")])
    except FluxMailException as exc:
        return refused(exc)
    _, attachment = parse(compose(built)).iter_parts()
    assert filename_param(attachment) == filename
    assert attachment.get_content() == data


ADDRESS_PIECES = st.sampled_from(
    ["a", "b.c", "x+y", "é", "用户", "@", "@", ".", "..", '"', "(", ")", "<", ">", ",", ";",
     ":", " ", "\\", "[", "]", "example.com", "bücher.de", "xn--bcher-kva.de", "-", "EX.COM"]
)  # fmt: skip
# Any mix of pieces (mostly refused), or pieces around one "@" before a real domain (often
# accepted, so the property has addresses to check).
LOCAL_PIECES = st.sampled_from(["a", "b.c", "x+y", "é", "用户", "-", "EX", ".", '"', " "])
ADDRESS_TEXT = st.lists(ADDRESS_PIECES, max_size=8).map("".join) | st.tuples(
    st.lists(LOCAL_PIECES, min_size=1, max_size=3).map("".join),
    st.sampled_from(["example.com", "bücher.de", "xn--bcher-kva.de", "EX.COM"]),
).map("@".join)


@must_accept(0.05)
@SETTINGS
@given(ADDRESS_TEXT)
def test_accepted_address_is_what_parsers_read(text: str) -> None:
    """No string gets a domain past validation that a header parser reads differently."""
    try:
        built = message(recipients=[text])
    except FluxMailException as exc:
        return refused(exc)
    composed = compose(built)
    (parsed,) = parse(composed)["To"].addresses
    (rcpt,) = composed.envelope.rcpt_to
    assert rcpt.count("@") == 1
    assert parsed.addr_spec == rcpt
    assert parsed.domain == built.recipients[0].domain


def test_must_accept_fails_a_property_that_refuses_everything() -> None:
    @must_accept(0.1)
    @SETTINGS
    @given(TEXT)
    def refuses_all(text: str) -> None:
        refused(ConfigurationError("no"))

    with pytest.raises(AssertionError, match="were accepted"):
        refuses_all()
