"""The options of ``FluxMail.create()``, declared once.

:class:`CreateOptions` names every option ``create()`` takes, with its type and default.
It is the one list of option names: ``FluxMail.build_message()`` (and so BulkSender and
the Celery payload, which validate dicts of ``create()`` arguments) refuse a name that is
not here, and the test suite checks that ``create()``'s signature, ``build_message()``'s
keyword arguments, the Outlook transport's SMTP-only list and the table on the guide page
("create(...)") all match it. Adding an option starts here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidMessageError

if TYPE_CHECKING:
    from os import PathLike

    from ._invite import Invite

__all__ = ["CREATE_OPTIONS", "CreateOptions", "check_option_names"]


@dataclass(frozen=True)
class CreateOptions:
    """The arguments of ``FluxMail.create()``: name, type and default of each (the
    guide's "create(...)" table says what each one does)."""

    subject: str
    recipients: str | Sequence[str]
    body: str
    sender: str | None = None
    cc: str | Sequence[str] | None = None
    bcc: str | Sequence[str] | None = None
    reply_to: str | Sequence[str] | None = None
    attachments: Sequence[Any] | None = None
    html_body: bool = False
    plain_body: str | None = None
    in_reply_to: str | None = None
    references: str | Sequence[str] | None = None
    priority: str | None = None
    unsubscribe_url: str | None = None
    inline_images: Mapping[str, str | PathLike[str]] | None = None
    inline_css: bool = False
    headers: Mapping[str, str] | None = None
    auto_text: bool = True
    invite: Invite | None = None


#: Every ``create()`` option name, in ``create()``'s order.
CREATE_OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CreateOptions))

#: The options without a default (``create()`` needs them).
REQUIRED_OPTIONS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(CreateOptions) if f.default is dataclasses.MISSING
)


def check_option_names(names: Iterable[str]) -> None:
    """Raise ``InvalidMessageError`` (``invalid_message``) naming any ``names`` that are
    not ``create()`` options."""
    unknown = set(names).difference(CREATE_OPTIONS)
    if unknown:
        raise InvalidMessageError(f"unknown create() option(s): {', '.join(sorted(unknown))}")
