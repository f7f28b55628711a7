"""The engine's options (``SmtpConfig``): the default TLS context belongs to one options object.

It used to be built once per process, from whatever ``SSL_CERT_FILE`` said at the first TLS
connection: a later test (or program) trusting another CA got the stale store, so
``pytest tests/test_smtp_engine.py tests/test_spec_examples.py`` failed 27 tests that passed
alone. Now each options object builds its own, once, and reuses it for every connection.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxmail.envelope import Composed, Envelope
from fluxmail.errors import TLSVerifyError
from fluxmail.smtp import SMTPConnection
from fluxmail.smtp._common import tls_context
from fluxmail.smtp._options import SmtpConfig
from servers import PASSWORD, USERNAME, SMTPTestServer, tls_material

MakeServer = Callable[..., SMTPTestServer]


def _message() -> Composed:
    data = b"Subject: ca store\r\n\r\nHello\r\n"
    return Composed(Envelope("me@example.com", ("you@example.com",), False), data, "<ca@x>")


def _config(server: SMTPTestServer) -> SmtpConfig:
    """STARTTLS + AUTH with no ssl_context: the engine's default context decides."""
    return SmtpConfig(
        host="localhost", port=server.port, use_tls=True, username=USERNAME, password=PASSWORD
    )


def test_the_default_context_is_built_once_per_options_object() -> None:
    first = SmtpConfig(host="smtp.example.com", use_tls=True)
    twin = SmtpConfig(host="smtp.example.com", use_tls=True)
    assert tls_context(first) is tls_context(first)  # every connection: the same context
    assert tls_context(twin) is not tls_context(first)  # equal options, own context
    assert first == twin  # the cache is not part of the options


def test_new_options_see_a_changed_ca_store(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = make_server(tls="starttls", auth=True)
    stranger = tmp_path / "other-ca.pem"
    tls_material().other_ca.cert_pem.write_to_path(str(stranger))

    monkeypatch.setenv("SSL_CERT_FILE", str(stranger))
    distrusting = _config(server)
    with pytest.raises(TLSVerifyError) as info, SMTPConnection(distrusting) as conn:
        conn.send(_message())
    assert info.value.code == "tls_verify_failed"

    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_pem))
    trusting = _config(server)
    for _ in range(2):  # two connections, one context
        with SMTPConnection(trusting) as conn:
            assert conn.send(_message()).message_id == "<ca@x>"
    assert len(server.messages) == 2
    with pytest.raises(TLSVerifyError):  # the first options keep the store they were built with
        SMTPConnection(distrusting).open()


def test_options_with_a_built_context_still_pickle_and_copy() -> None:
    config = SmtpConfig(host="smtp.example.com", use_tls=True, username="u", password="p")
    built = tls_context(config)
    for clone in (pickle.loads(pickle.dumps(config)), copy.deepcopy(config)):
        assert clone == config
        assert tls_context(clone) is not built
