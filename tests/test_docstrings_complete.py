"""The public API's docstrings are complete (issue #13): each of these says what it
takes, gives and raises, and shows a ```python example (which
tests/test_docstring_examples.py runs)."""

from __future__ import annotations

import inspect

import pytest

from fluxmail import DKIM, BulkSender, EmailInstance, FluxMail
from fluxmail.cli.localserver import LocalSMTPServer
from fluxmail.mailer import SendReceipt
from fluxmail.message import Address, Attachment, Message
from fluxmail.oauth import GoogleOAuth2, MicrosoftOAuth2
from fluxmail.pytest_plugin import fluxmail_outbox
from fluxmail.smtp._options import SmtpConfig
from fluxmail.transports.factory import Switch

DOCUMENTED = {
    "FluxMail": FluxMail,
    "FluxMail.create": FluxMail.create,
    "FluxMail.build_message": FluxMail.build_message,
    "FluxMail.compose": FluxMail.compose,
    "FluxMail.send": FluxMail.send,
    "FluxMail.send_async": FluxMail.send_async,
    "FluxMail.send_message": FluxMail.send_message,
    "FluxMail.send_message_async": FluxMail.send_message_async,
    "FluxMail.from_env": FluxMail.from_env,
    "FluxMail.test_connection": FluxMail.test_connection,
    "FluxMail.display": FluxMail.display,
    "SendReceipt.from_result": SendReceipt.from_result,
    "EmailInstance": EmailInstance,
    "SmtpConfig": SmtpConfig,
    "Address": Address,
    "Attachment": Attachment,
    "Attachment.read_bytes": Attachment.read_bytes,
    "Message": Message,
    "BulkSender": BulkSender,
    "BulkSender.send_batch": BulkSender.send_batch,
    "BulkSender.send_batch_async": BulkSender.send_batch_async,
    "GoogleOAuth2": GoogleOAuth2,
    "MicrosoftOAuth2": MicrosoftOAuth2,
    "DKIM": DKIM,
    "LocalSMTPServer": LocalSMTPServer,
    "fluxmail_outbox": fluxmail_outbox,
    "Switch": Switch,
}


def _takes_arguments(obj: object) -> bool:
    target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(name not in ("self", "cls") for name in parameters)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_docstring_is_complete(name: str) -> None:
    obj = DOCUMENTED[name]
    doc = inspect.getdoc(getattr(obj, "__wrapped__", obj)) or ""
    assert "```python" in doc, f"{name}: no example"
    if inspect.isclass(obj) and name not in ("Message", "Address", "Attachment"):
        assert "Args:" in doc, f"{name}: no Args"
    elif not inspect.isclass(obj):
        if _takes_arguments(obj) and name != "fluxmail_outbox":
            assert "Args:" in doc, f"{name}: no Args"
        assert "Returns:" in doc or "Yields:" in doc, f"{name}: no Returns"
    if name.startswith("FluxMail."):
        assert "Raises:" in doc or name == "FluxMail.build_message", f"{name}: no Raises"


def test_no_rest_literal_blocks_left_in_oauth() -> None:
    import fluxmail.oauth

    assert "::\n" not in (fluxmail.oauth.__doc__ or "")
