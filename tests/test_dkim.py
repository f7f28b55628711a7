"""DKIM signing: what the local server receives verifies with dkimpy against the public key.

Keys are generated here with ``cryptography`` (installed with trustme); the DNS lookup is
injected into ``dkim.verify`` and answers with the TXT record built from the public key
by ``cryptography``, not by fluxmail.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from fluxmail import (
    DKIM,
    BulkSender,
    ConfigurationError,
    EmailObject,
    FluxMail,
    MissingDependencyError,
    UnsupportedOperationError,
)
from fluxmail.dkim import SIGNED_HEADERS, present_headers, sign
from fluxmail.envelope import Composed, Envelope
from servers import SMTPTestServer

DOMAIN = "example.com"
SELECTOR = "s1"
_PKCS8 = serialization.PrivateFormat.PKCS8
_PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL
_PEM = serialization.Encoding.PEM


class Key:
    """A private key in PEM and the DNS TXT record of its public half."""

    def __init__(self, kind: str, pem: bytes, record: bytes) -> None:
        self.kind = kind
        self.pem = pem
        self.record = record

    def dnsfunc(self, selector: str = SELECTOR, domain: str = DOMAIN) -> Callable[..., bytes]:
        expected = f"{selector}._domainkey.{domain}.".encode()

        def lookup(name: bytes, timeout: float = 5) -> bytes:
            return self.record if name == expected else b""

        return lookup

    def verifies(self, data: bytes) -> bool:
        return bool(dkimpy.verify(data, dnsfunc=self.dnsfunc()))


def _rsa_key(fmt: serialization.PrivateFormat = _PKCS1, bits: int = 2048) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = private.private_bytes(_PEM, fmt, serialization.NoEncryption())
    return Key("rsa", pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki))


def _ed25519_key() -> Key:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = private.private_bytes(_PEM, _PKCS8, serialization.NoEncryption())
    return Key("ed25519", pem, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw))


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"rsa": _rsa_key(), "rsa-pkcs8": _rsa_key(_PKCS8), "ed25519": _ed25519_key()}


@pytest.fixture(params=["rsa", "rsa-pkcs8", "ed25519"])
def key(request: pytest.FixtureRequest, keys: dict[str, Key]) -> Key:
    return keys[request.param]


def mailer(server: SMTPTestServer, key: Key, **overrides: Any) -> FluxMail:
    dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=key.pem)
    options: dict[str, Any] = {"sender": "News <news@example.com>", "dkim": dkim}
    options.update(overrides)
    return FluxMail(**server.fluxmail_kwargs(**options))


RICH = {
    "subject": "Relevé de compte — mai",
    "recipients": ["Ada <ada@example.org>"],
    "cc": ["cc@example.org"],
    "bcc": ["hidden@example.org"],
    "reply_to": ["support@example.com"],
    "body": "<h1>Hello</h1><p>Your statement is attached.</p>",
    "html_body": True,
    "attachments": [("relevé.csv", b"a,b\r\n1,2\r\n", "text/csv")],
    "in_reply_to": "<prev@example.com>",
    "references": ["<first@example.com>", "<prev@example.com>"],
    "unsubscribe_url": "https://example.com/unsub?t=1",
}


def signature_tags(data: bytes) -> dict[str, str]:
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("DKIM-Signature: ")
    value = header.split("\r\n", 1)[0][len("DKIM-Signature: ") :]
    for line in header.split("\r\n")[1:]:
        if not line.startswith((" ", "\t")):
            break
        value += line
    tags = {}
    for item in value.split(";"):
        if item.strip():
            name, _, tag_value = item.strip().partition("=")
            tags[name] = "".join(tag_value.split())
    return tags


# --- end to end through a real server -----------------------------------------------------


def test_received_message_verifies(smtp_server: SMTPTestServer, key: Key) -> None:
    mailer(smtp_server, key).create(**RICH).send()
    received = smtp_server.messages[0]
    assert key.verifies(received.data)
    tags = signature_tags(received.data)
    assert tags["a"] == ("ed25519-sha256" if key.kind == "ed25519" else "rsa-sha256")
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == DOMAIN
    assert tags["s"] == SELECTOR
    # Every header of the list that this message has (a multipart message has no
    # top-level Content-Transfer-Encoding), and nothing else.
    expected = [name.lower() for name in SIGNED_HEADERS if name != "Content-Transfer-Encoding"]
    assert tags["h"].split(":") == expected
    # No Bcc header (matching "bcc" anywhere in the head also hit base64 signatures).
    head = received.data.decode().split("\r\n\r\n")[0]
    names = {line.split(":")[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"}
    assert "bcc" not in names
    assert "hidden@example.org" not in head
    assert sorted(received.rcpt_tos) == sorted(
        ["ada@example.org", "cc@example.org", "hidden@example.org"]
    )


def test_one_changed_body_byte_breaks_the_signature(smtp_server: SMTPTestServer, key: Key) -> None:
    mailer(smtp_server, key).create(
        subject="Hello", recipients=["friend@example.org"], body="Hi there, friend!"
    ).send()
    data = smtp_server.messages[0].data
    assert key.verifies(data)
    assert b"friend!" in data
    assert not key.verifies(data.replace(b"friend!", b"friend?"))
    assert not key.verifies(data.replace(b"Subject: Hello", b"Subject: Hellp"))


def test_only_present_headers_are_signed(
    smtp_server: SMTPTestServer, keys: dict[str, Key]
) -> None:
    key = keys["ed25519"]
    mailer(smtp_server, key).create(
        subject="Plain", recipients=["friend@example.org"], body="Hi"
    ).send()
    data = smtp_server.messages[0].data
    tags = signature_tags(data)
    assert tags["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ]
    assert key.verifies(data)


def test_send_async_and_bulk_are_signed(smtp_server: SMTPTestServer, keys: dict[str, Key]) -> None:
    key = keys["rsa"]
    sender = mailer(smtp_server, key)

    async def run() -> None:
        sender.create(subject="async", recipients=["a@example.org"], body="one")
        await sender.send_async()
        await BulkSender(sender).send_batch_async(
            [{"subject": "bulk async", "recipients": ["b@example.org"], "body": "two"}],
            progress=False,
        )

    asyncio.run(run())
    BulkSender(sender).send_batch(
        [{"subject": f"bulk {i}", "recipients": ["c@example.org"], "body": "x"} for i in range(2)],
        progress=False,
    )
    with sender:  # a held connection
        sender.create(subject="held", recipients=["d@example.org"], body="y").send()
    assert len(smtp_server.messages) == 5
    for received in smtp_server.messages:
        assert received.data.startswith(b"DKIM-Signature: ")
        assert key.verifies(received.data)


def test_smtputf8_message_verifies(smtp_server: SMTPTestServer, keys: dict[str, Key]) -> None:
    key = keys["ed25519"]
    mailer(smtp_server, key).create(
        subject="Grüße", recipients=["jörg@example.org"], body="Hallo Jörg"
    ).send()
    assert key.verifies(smtp_server.messages[0].data)


def test_compose_is_signed_and_dry_run_is_not(
    capsys: pytest.CaptureFixture[str], keys: dict[str, Key]
) -> None:
    key = keys["ed25519"]
    dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=key.pem)
    sender = FluxMail(host="127.0.0.1", sender="me@example.com", dkim=dkim)
    sender.create(subject="Hi", recipients=["a@example.org"], body="x")
    assert key.verifies(sender.compose().data)
    text = sender.send(dry_run=True)
    assert "DKIM" not in text
    assert "DKIM" not in capsys.readouterr().out


# --- sign() on its own --------------------------------------------------------------------


def test_sign_is_a_pure_function_of_composed(keys: dict[str, Key]) -> None:
    key = keys["rsa"]
    data = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\nX-Other: 1\r\n"
        b"MIME-Version: 1.0\r\n\r\nbody\r\n"
    )
    composed = Composed(Envelope("a@example.com", ("b@example.org",)), data, "<m@example.com>")
    signed = sign(composed, DKIM(domain=DOMAIN, selector=SELECTOR, private_key=key.pem))
    assert signed.data.endswith(data)
    assert signed.envelope == composed.envelope
    assert signed.message_id == composed.message_id
    assert composed.data == data  # unchanged
    assert present_headers(data) == ["From", "To", "Subject", "MIME-Version"]
    assert key.verifies(signed.data)


# --- keys -----------------------------------------------------------------------------------


def test_txt_record_matches_the_public_key(key: Key) -> None:
    dkim = DKIM(domain="Example.COM", selector=SELECTOR, private_key=key.pem)
    assert dkim.domain == "example.com"
    assert dkim.dns_name == "s1._domainkey.example.com"
    assert dkim.txt_record().encode() == key.record
    assert dkim.algorithm == ("ed25519-sha256" if key.kind == "ed25519" else "rsa-sha256")


def test_key_from_a_path(
    tmp_path: Path, keys: dict[str, Key], smtp_server: SMTPTestServer
) -> None:
    key = keys["rsa-pkcs8"]
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(key.pem.replace(b"\n", b"\r\n"))  # CRLF files work too
    for source in (key_file, str(key_file), key.pem.decode()):
        dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=source)
        FluxMail(**smtp_server.fluxmail_kwargs(sender="a@example.com", dkim=dkim)).create(
            subject="x", recipients=["b@example.org"], body="y"
        ).send()
        assert key.verifies(smtp_server.messages[-1].data)


def test_dknewkey_ed25519_seed_is_accepted(keys: dict[str, Key]) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=base64.b64encode(seed) + b"\n")
    assert dkim.txt_record() == f"v=DKIM1; k=ed25519; p={base64.b64encode(raw_public).decode()}"


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "dkim.pem"
    dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=missing)
    with pytest.raises(ConfigurationError, match="not found") as info:
        FluxMail(host="127.0.0.1", dkim=dkim)
    assert str(missing) in str(info.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, tmp_path))  # a directory


def _secret_parts(pem: bytes) -> list[str]:
    lines = [line for line in pem.decode().splitlines() if not line.startswith("-----")]
    return [line for line in lines if len(line) > 20]


@pytest.mark.parametrize(
    "bad",
    [
        b"not a key at all",
        b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_bad_pem_is_a_configuration_error(bad: bytes) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, bad))
    assert "AAAA" not in str(info.value)


def test_truncated_key_never_shows_in_the_error(keys: dict[str, Key], tmp_path: Path) -> None:
    pem = keys["rsa"].pem
    lines = pem.splitlines()
    broken = b"\n".join([*lines[:5], *lines[-1:]]) + b"\n"  # a valid PEM shape, cut DER
    key_file = tmp_path / "broken.pem"
    key_file.write_bytes(broken)
    for source in (broken, key_file):
        with pytest.raises(ConfigurationError) as info:
            FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, source))
        for part in _secret_parts(pem):
            assert part not in str(info.value)
            assert part not in repr(info.value)


def test_unsupported_keys_are_refused() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        _PEM, _PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigurationError, match="RSA or Ed25519"):
        DKIM(DOMAIN, SELECTOR, ec_pem).load_key()
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        _PEM, _PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(ConfigurationError, match="encrypted"):
        DKIM(DOMAIN, SELECTOR, encrypted).load_key()


def test_short_rsa_keys_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.pem"
    result = subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", str(short), "512"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("openssl cannot make a 512-bit key here")
    with pytest.raises(ConfigurationError, match="512-bit"):
        DKIM(DOMAIN, SELECTOR, short).load_key()


@pytest.mark.parametrize(
    ("domain", "selector"),
    [
        ("", "s1"),
        ("exa mple.com", "s1"),
        ("example.com", ""),
        ("example.com", "s_1"),
        ("example.com", "s1;x=y"),
        ("example.com", "-s1"),
    ],
)
def test_bad_domain_or_selector(domain: str, selector: str) -> None:
    with pytest.raises(ConfigurationError):
        DKIM(domain, selector, b"key")


def test_repr_and_logs_never_show_the_key(
    smtp_server: SMTPTestServer, keys: dict[str, Key], caplog: pytest.LogCaptureFixture
) -> None:
    key = keys["rsa"]
    dkim = DKIM(domain=DOMAIN, selector=SELECTOR, private_key=key.pem)
    assert repr(dkim) == "DKIM(domain='example.com', selector='s1', private_key=<hidden>)"
    assert "BEGIN" not in str(dkim)
    sender = mailer(smtp_server, key)
    assert "BEGIN" not in repr(sender)
    with caplog.at_level(logging.DEBUG):
        sender.create(subject="x", recipients=["b@example.org"], body="y").send()
    for part in _secret_parts(key.pem):
        assert part not in caplog.text
    assert "BEGIN" not in caplog.text


def test_wrong_types_and_outlook() -> None:
    with pytest.raises(ConfigurationError, match=r"fluxmail\.DKIM"):
        FluxMail(host="127.0.0.1", dkim=("example.com", "s1", b"k"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        DKIM(DOMAIN, SELECTOR, 42)  # type: ignore[arg-type]
    key = _ed25519_key()
    with pytest.raises(UnsupportedOperationError):
        FluxMail(
            object_type=EmailObject.OUTLOOK,
            outlook_application=object(),
            dkim=DKIM(DOMAIN, SELECTOR, key.pem),
        )


def test_missing_dkimpy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "dkim", None)
    key = _ed25519_key()
    with pytest.raises(MissingDependencyError, match=r"fluxmail\[dkim\]") as info:
        FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, key.pem))
    assert "dkimpy" in str(info.value)


def test_dkim_is_imported_lazily() -> None:
    code = (
        "import sys, fluxmail; fluxmail.FluxMail(host='h', sender='a@b.example');"
        "assert 'dkim' not in sys.modules and 'fluxmail.dkim' not in sys.modules"
    )
    done = subprocess.run(
        [__import__("sys").executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# --- from_env ---------------------------------------------------------------------------


def test_from_env(tmp_path: Path, keys: dict[str, Key], smtp_server: SMTPTestServer) -> None:
    key = keys["ed25519"]
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(key.pem)
    env = {
        "FLUXMAIL_HOST": smtp_server.host,
        "FLUXMAIL_PORT": str(smtp_server.port),
        "FLUXMAIL_SENDER": "a@example.com",
        "FLUXMAIL_DKIM_DOMAIN": DOMAIN,
        "FLUXMAIL_DKIM_SELECTOR": SELECTOR,
        "FLUXMAIL_DKIM_KEY_FILE": str(key_file),
    }
    sender = FluxMail.from_env(env)
    assert sender.dkim == DKIM(DOMAIN, SELECTOR, str(key_file))
    sender.create(subject="env", recipients=["b@example.org"], body="z").send()
    assert key.verifies(smtp_server.messages[0].data)
    assert FluxMail.from_env({"FLUXMAIL_HOST": "h"}).dkim is None


def test_from_env_needs_all_three() -> None:
    env = {"FLUXMAIL_HOST": "h", "FLUXMAIL_DKIM_DOMAIN": DOMAIN, "FLUXMAIL_DKIM_SELECTOR": "s1"}
    with pytest.raises(ConfigurationError, match="FLUXMAIL_DKIM_KEY_FILE"):
        FluxMail.from_env(env)
    env = {"FLUXMAIL_HOST": "h", "FLUXMAIL_DKIM_KEY_FILE": "/nonexistent/k.pem"}
    with pytest.raises(ConfigurationError, match="FLUXMAIL_DKIM_DOMAIN, FLUXMAIL_DKIM_SELECTOR"):
        FluxMail.from_env(env)
    env = {
        "FLUXMAIL_HOST": "h",
        "FLUXMAIL_DKIM_DOMAIN": DOMAIN,
        "FLUXMAIL_DKIM_SELECTOR": "s1",
        "FLUXMAIL_DKIM_KEY_FILE": "/nonexistent/k.pem",
    }
    with pytest.raises(ConfigurationError, match=r"/nonexistent/k\.pem"):
        FluxMail.from_env(env)


def test_local_fleet_signs_too(smtp_server: SMTPTestServer, keys: dict[str, Key]) -> None:
    from fluxmail.scale import LocalFleet

    key = keys["ed25519"]
    fleet = LocalFleet(lambda: mailer(smtp_server, key))
    spec = {"sender": "news@example.com", "recipients": ["a@example.org"], "body": "x"}
    try:
        ids = fleet.enqueue_batch([{**spec, "subject": f"fleet {i}"} for i in range(2)])
    finally:
        fleet.close()
    assert all(ids)
    assert len(smtp_server.messages) == 2
    assert all(key.verifies(received.data) for received in smtp_server.messages)


def _seed_and_record() -> tuple[bytes, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return seed, f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


def test_every_documented_key_form_is_accepted(tmp_path: Path, keys: dict[str, Key]) -> None:
    """PEM (text or bytes), an Ed25519 seed (base64 as dknewkey writes it, as str or
    bytes, or the raw 32 bytes) and a path to a file holding any of them."""
    seed, record = _seed_and_record()
    b64 = base64.b64encode(seed).decode()
    seed_file = tmp_path / "s1.private"  # what dknewkey writes: the base64 and a newline
    seed_file.write_text(b64 + "\n")
    for source in (b64, b64 + "\n", f"  {b64}\r\n", b64.encode(), seed, seed_file, str(seed_file)):
        assert DKIM(DOMAIN, SELECTOR, source).txt_record() == record, repr(type(source))
    pem = keys["rsa"].pem
    pem_file = tmp_path / "rsa.pem"
    pem_file.write_bytes(pem)
    for pem_source in (pem, pem.decode(), pem_file, str(pem_file)):
        assert DKIM(DOMAIN, SELECTOR, pem_source).txt_record().encode() == keys["rsa"].record


def test_key_material_never_appears_in_errors_or_logs(
    tmp_path: Path, keys: dict[str, Key], caplog: pytest.LogCaptureFixture
) -> None:
    """Strings that are keys in a form we do not take are taken as paths, and the "file
    not found" error does not show them; other refusals never quote the key either."""
    caplog.set_level(logging.DEBUG)
    seed, _ = _seed_and_record()
    b64 = base64.b64encode(seed).decode()
    der = base64.b64encode(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.DER, _PKCS8, serialization.NoEncryption()
        )
    ).decode()
    refused: list[tuple[object, str, str]] = [
        (b64.rstrip("="), "not found", b64.rstrip("=")),  # a seed without its padding
        (base64.urlsafe_b64encode(seed).decode().rstrip("="), "not found", b64[:20]),
        (der, "not found", der),  # PKCS#8 base64 without the PEM armour
        (f"{b64}\n{b64}", "not found", b64),  # two lines of key
        (seed[:31], "not a PEM private key", b64[:20]),  # 31 raw bytes
        (b64[:-2].encode() + b"==", "not a PEM private key", b64[:20]),  # a 31-byte seed
    ]
    for source, why, material in refused:
        with pytest.raises(ConfigurationError, match=why) as info:
            FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, source))  # type: ignore[arg-type]
        text = f"{info.value} {info.value!r}"
        assert material not in text
        assert seed.hex() not in text
        if why == "not found":
            assert "looks like key material" in text
    assert b64[:20] not in caplog.text
    assert der[:20] not in caplog.text
    # A path that cannot be a key is named, so that the operator can fix it.
    with pytest.raises(ConfigurationError, match="not found") as info:
        FluxMail(host="127.0.0.1", dkim=DKIM(DOMAIN, SELECTOR, "keys/s1.private"))
    assert "'keys/s1.private'" in str(info.value)
