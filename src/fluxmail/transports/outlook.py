"""Outlook on Windows, through COM automation (pywin32, the ``[outlook]`` extra).

Outlook opens a compose window (``display()``); it cannot send programmatically, it chooses
the sender itself, and its COM interface has no Reply-To, so those are refused with a
clear error instead of being dropped. Tests inject a fake COM application object.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, OutlookUnavailableError, UnsupportedOperationError
from ..message import Address, Attachment, Message

# Outlook picks the real From address; this placeholder only fills Message.sender and is
# never sent anywhere (.invalid is reserved by RFC 2606).
OUTLOOK_SENDER = Address("outlook", "sender.invalid")

OL_MAIL_ITEM = 0
OL_IMPORTANCE = {"low": 0, "normal": 1, "high": 2}
_SMTP_ONLY = (
    "reply_to",
    "in_reply_to",
    "references",
    "unsubscribe_url",
    "headers",
    "plain_body",
    "invite",  # a MailItem is not a MeetingItem: COM cannot send it as an iTIP request
)
PR_ATTACH_CONTENT_ID = "http://schemas.microsoft.com/mapi/proptag/0x3712001F"


def _dispatch_outlook() -> Any:
    if sys.platform != "win32":
        raise OutlookUnavailableError(
            "Outlook automation needs Windows with the Outlook desktop app; "
            f"on {sys.platform} use object_type='smtp'"
        )
    try:
        import win32com.client
    except ImportError:
        raise MissingDependencyError("Outlook", "outlook", "pywin32") from None
    try:
        return win32com.client.Dispatch("Outlook.Application")
    except Exception as exc:
        raise OutlookUnavailableError(f"could not start Outlook: {exc}") from exc


class OutlookTransport:
    """Fills an Outlook MailItem from a Message and shows it."""

    def __init__(self, application: Any = None) -> None:
        self._app = application if application is not None else _dispatch_outlook()

    @staticmethod
    def check_options(**options: Any) -> None:
        """Refuse what Outlook cannot carry, rather than dropping it silently."""
        if options.get("sender") is not None:
            raise UnsupportedOperationError(
                "Outlook controls the sender address: remove sender= (or use SMTP)"
            )
        given = [name for name in _SMTP_ONLY if options.get(name)]
        if given:
            raise UnsupportedOperationError(
                f"Outlook's COM interface cannot set {', '.join(given)}: SMTP only"
            )

    def display(self, message: Message) -> None:
        item = self._app.CreateItem(OL_MAIL_ITEM)
        item.Subject = message.subject
        item.To = "; ".join(str(a) for a in message.recipients)
        item.CC = "; ".join(str(a) for a in message.cc)
        item.BCC = "; ".join(str(a) for a in message.bcc)
        if message.priority:
            item.Importance = OL_IMPORTANCE[message.priority]
        if message.html:
            item.HTMLBody = message.body
        else:
            item.Body = message.body
        for attachment in message.attachments:
            item.Attachments.Add(_local_path(attachment))
        for image in message.inline_images:
            added = item.Attachments.Add(_local_path(image))
            added.PropertyAccessor.SetProperty(PR_ATTACH_CONTENT_ID, image.content_id)
        item.Display(False)


def _local_path(attachment: Attachment) -> str:
    """An absolute path Outlook can read; in-memory attachments go to a temp file."""
    if attachment.path is not None:
        return str(Path(attachment.path).resolve())
    folder = Path(tempfile.mkdtemp(prefix="fluxmail-"))
    target = folder / attachment.filename
    target.write_bytes(attachment.read_bytes())
    return str(target)
