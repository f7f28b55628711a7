"""What ``send()`` returns: :class:`SendReceipt`, the success string carrying what the
server said, and the texts it equals."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..smtp import SendResult

__all__ = ["GRAPH_SUCCESS", "OUTLOOK_DISPLAYED", "SUCCESS", "SendReceipt"]

SUCCESS = "Email sent successfully via SMTP."
GRAPH_SUCCESS = "Email sent successfully via Microsoft Graph."
OUTLOOK_DISPLAYED = "Outlook compose window opened."


class SendReceipt(str):
    """The string ``"Email sent successfully via SMTP."``, carrying what the server said.

    ``message_id``, ``accepted`` and ``refused`` (address -> (code, text)) tell which
    recipients the server took; a partly refused message is still sent to the rest.

    Attributes:
        message_id: the Message-ID header of the message sent, with angle brackets.
        accepted: the envelope recipients the server accepted.
        refused: each refused recipient's ``(code, text)`` reply.
        smtp_code: the server's reply to the final dot (``250``; ``202`` over Graph).

    Example:
        ```python
        receipt = mailer.create(subject="Hi", recipients=["ada@example.org"], body=".").send()
        assert receipt == "Email sent successfully via SMTP."
        assert receipt.accepted == ("ada@example.org",) and not receipt.refused
        ```
    """

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]]
    smtp_code: int

    @classmethod
    def from_result(cls, result: SendResult, text: str = SUCCESS) -> SendReceipt:
        """The receipt for an engine or transport result.

        Args:
            result: what a transport's ``send()`` returned.
            text: the string the receipt is equal to.

        Returns:
            A ``SendReceipt`` equal to ``text`` with ``result``'s fields copied.

        Example:
            ```python
            from fluxmail.smtp import SendResult

            result = SendResult("<1@example.com>", ("ada@example.org",), {}, 250, "OK")
            receipt = SendReceipt.from_result(result)
            assert receipt.message_id == "<1@example.com>" and receipt.smtp_code == 250
            ```
        """
        receipt = cls(text)
        receipt.message_id = result.message_id
        receipt.accepted = tuple(result.accepted)
        receipt.refused = dict(result.refused)
        receipt.smtp_code = result.smtp_code
        return receipt


def _receipt(result: SendResult, text: str = SUCCESS) -> SendReceipt:
    if result.refused:
        refused = ", ".join(f"{addr} ({code})" for addr, (code, _) in result.refused.items())
        logging.getLogger("fluxmail").warning(
            "message %s: some recipients refused: %s", result.message_id, refused
        )
    return SendReceipt.from_result(result, text)
