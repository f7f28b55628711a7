"""``Composed.clean`` switches off the engine's CRLF and line-length checks, so only
fluxmail's composer may set it: a Composed built anywhere else keeps every check."""

from __future__ import annotations

import dataclasses

import pytest

from fluxmail import DKIM, FluxMail
from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import InvalidMessageError
from fluxmail.smtp._protocol import plan_message
from fluxmail.smtp._replies import Capabilities

ENVELOPE = Envelope("a@example.org", ("b@example.org",))
LONG_LINE = b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n"


def test_callers_cannot_construct_a_clean_composed() -> None:
    with pytest.raises(TypeError):
        Composed(ENVELOPE, LONG_LINE, "<m@example.org>", clean=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Composed(ENVELOPE, LONG_LINE, "<m@example.org>", True)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Composed(ENVELOPE, LONG_LINE, "<m@example.org>").clean = True  # type: ignore[misc]


def test_replace_cannot_carry_or_set_clean() -> None:
    mailer = FluxMail(host="localhost", sender="a@example.org")
    composed = mailer.compose(
        mailer.build_message(subject="s", recipients="b@example.org", body="x")
    )
    assert composed.clean  # the composer checked its own output
    with pytest.raises(ValueError, match="init=False"):
        dataclasses.replace(composed, clean=True)
    swapped = dataclasses.replace(composed, data=LONG_LINE)  # other bytes: checked again
    assert not swapped.clean
    with pytest.raises(InvalidMessageError):
        plan_message(Capabilities(), swapped, host="h")


def test_the_composer_output_still_skips_the_recheck() -> None:
    mailer = FluxMail(host="localhost", sender="a@example.org")
    composed = mailer.compose(
        mailer.build_message(subject="s", recipients="b@example.org", body="x")
    )
    assert composed.clean
    plan = plan_message(Capabilities(), composed, host="h")
    assert plan.payload + plan.tail == composed.data + b".\r\n"


def test_dkim_signing_keeps_the_composer_verdict() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    dkim = DKIM(domain="example.org", selector="s1", private_key=pem)
    mailer = FluxMail(host="localhost", sender="a@example.org", dkim=dkim)
    composed = mailer.compose(
        mailer.build_message(subject="s", recipients="b@example.org", body="x")
    )
    assert composed.data.startswith(b"DKIM-Signature:")
    assert composed.clean
