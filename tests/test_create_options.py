"""The create() options are declared once (``fluxmail.message._options.CreateOptions``);
everything that lists them matches that declaration."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from fluxmail import FluxMail
from fluxmail.errors import InvalidMessageError
from fluxmail.message import build_message
from fluxmail.message._options import CREATE_OPTIONS, REQUIRED_OPTIONS, CreateOptions
from fluxmail.transports import outlook

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
FIELDS = {f.name: f for f in dataclasses.fields(CreateOptions)}


def test_create_signature_is_the_schema() -> None:
    parameters = list(inspect.signature(FluxMail.create).parameters.values())[1:]
    assert [p.name for p in parameters] == list(CREATE_OPTIONS)
    for p in parameters:
        field = FIELDS[p.name]
        assert p.annotation == field.type, p.name
        default = (
            inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
        )
        assert p.default == default, p.name
    assert {"subject", "recipients", "body"} == REQUIRED_OPTIONS


def test_build_message_takes_exactly_the_schema() -> None:
    parameters = inspect.signature(build_message).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    assert [p.name for p in parameters] == list(CREATE_OPTIONS)
    for p in parameters:  # sender has no default there: the mailer resolves it first
        if p.name != "sender":
            assert p.default == FIELDS[p.name].default or (
                p.default is inspect.Parameter.empty and p.name in REQUIRED_OPTIONS
            ), p.name


def test_unknown_options_are_refused_by_name() -> None:
    mailer = FluxMail(host="localhost", sender="a@example.org")
    with pytest.raises(InvalidMessageError, match="unknown create\\(\\) option\\(s\\): colour"):
        mailer.build_message(subject="s", recipients="b@example.org", body="x", colour="red")


def test_outlook_smtp_only_options_are_create_options() -> None:
    assert set(outlook._SMTP_ONLY) <= set(CREATE_OPTIONS)


def test_the_guide_table_lists_every_option_once() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    table = text.split("## create(...)", 1)[1].split("\n\n", 3)[2]
    names = [
        name
        for row in table.splitlines()[2:]
        for name in re.findall(r"`(\w+)`", row.split("|")[1])
    ]
    assert sorted(names) == sorted(CREATE_OPTIONS)
