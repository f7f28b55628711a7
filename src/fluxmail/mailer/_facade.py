"""FluxMail: the object the API page describes.

``create()`` validates everything and freezes a :class:`~fluxmail.message.Message`; ``send()``
composes it and hands the bytes to a transport. The message waiting between ``create()`` and
``send()`` belongs to the context (thread, asyncio task) that created it and is sendable from
any thread (``asyncio.to_thread(mailer.send)``, an executor); ``send_async()`` takes it the
moment it is called. So one FluxMail can be shared by threads and by concurrent asyncio
tasks; the rule is in ``_pending``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._env import settings_from_env
from ..config import EmailInstance, EmailObject, SmtpConfig
from ..envelope import Composed
from ..errors import (
    ConfigurationError,
    InvalidAddressError,
    NoMessageError,
    UnsupportedOperationError,
)
from ..message import Address, Message, build_message, parse_address
from ..message._options import CREATE_OPTIONS, check_option_names
from ..smtp._checks import flag, text
from ._pending import PendingMessages

if TYPE_CHECKING:
    import ssl
    from email.message import EmailMessage
    from os import PathLike

    from ..dkim import DKIM
    from ..message._invite import Invite
    from ..smtp import SendResult
    from ..smtp._tokens import TokenSource
    from ..transports.factory import Switch
    from ..transports.outlook import OutlookTransport

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

SUCCESS = "Email sent successfully via SMTP."
GRAPH_SUCCESS = "Email sent successfully via Microsoft Graph."
OUTLOOK_DISPLAYED = "Outlook compose window opened."
_CREATE_OPTIONS = frozenset(CREATE_OPTIONS)  # the declared schema (message/_options.py)


class SendReceipt(str):
    """The string ``"Email sent successfully via SMTP."``, carrying what the server said.

    ``message_id``, ``accepted`` and ``refused`` (address -> (code, text)) tell which
    recipients the server took; a partly refused message is still sent to the rest.
    """

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]]
    smtp_code: int

    @classmethod
    def from_result(cls, result: SendResult, text: str = SUCCESS) -> SendReceipt:
        receipt = cls(text)
        receipt.message_id = result.message_id
        receipt.accepted = tuple(result.accepted)
        receipt.refused = dict(result.refused)
        receipt.smtp_code = result.smtp_code
        return receipt


def _receipt(result: SendResult, text: str = SUCCESS) -> SendReceipt:
    if result.refused:
        refused = ", ".join(f"{addr} ({code})" for addr, (code, _) in result.refused.items())
        import logging

        logging.getLogger("fluxmail").warning(
            "message %s: some recipients refused: %s", result.message_id, refused
        )
    return SendReceipt.from_result(result, text)


def _check_count(name: str, value: object, *, minimum: float, integer: bool) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)  # type: ignore[arg-type]
        or value < minimum  # type: ignore[operator]
    ):
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name} must be {kind} >= {minimum}, got {value!r}")


class FluxMail:
    """Send email over SMTP, or open it in Outlook on Windows. See the API page."""

    def __init__(
        self,
        object_type: str | EmailObject = EmailObject.SMTP,
        host: str | EmailInstance | None = None,
        port: int = 25,
        use_tls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        sender: str | None = None,
        timeout: float = 30,
        max_retries: int = 0,
        retry_delay: float = 1.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        allow_insecure_auth: bool = False,
        oauth2: TokenSource | None = None,
        outlook_application: Any = None,
        dkim: DKIM | None = None,
        graph_url: str | None = None,
    ) -> None:
        self.object_type = EmailObject.parse(object_type)
        self.dkim = self._check_dkim(dkim)
        if self.object_type is EmailObject.FILE and isinstance(host, os.PathLike):
            host = os.fspath(host)  # the directory of the .eml files
        if host is not None and not isinstance(host, (str, EmailInstance)):
            raise ConfigurationError("host must be a hostname string or an EmailInstance")
        self.relay: str | None = host.relay if isinstance(host, EmailInstance) else host
        self.domain: str | None = host.domain if isinstance(host, EmailInstance) else None
        _check_count("max_retries", max_retries, minimum=0, integer=True)
        _check_count("retry_delay", retry_delay, minimum=0, integer=False)
        self.max_retries = max_retries
        self.retry_delay = float(retry_delay)
        self.username = text("username", username)
        self._default_sender = self._resolve_default_sender(sender, username)
        self._pending = PendingMessages(self)
        self._outlook: OutlookTransport | None = None
        self.transport: Switch | None = None  # None for Outlook, which only displays
        if self.object_type is EmailObject.SMTP:
            self.config = SmtpConfig(
                host=self.relay or "",
                port=port,
                use_tls=use_tls,
                use_ssl=use_ssl,
                username=username,
                password=password,
                timeout=timeout,
                local_hostname=local_hostname or self.domain,
                ssl_context=ssl_context,
                allow_insecure_auth=allow_insecure_auth,
                oauth2=oauth2,
            )
        if graph_url is not None and self.object_type is not EmailObject.GRAPH:
            raise ConfigurationError('graph_url is for object_type="graph"')
        if self.object_type is EmailObject.GRAPH:
            from ..transports.graph import graph_config

            if self.relay or password is not None:  # (EmailInstance("", domain) is fine)
                raise ConfigurationError('object_type="graph" takes no host or password')
            self.graph_config = graph_config(username, oauth2, graph_url, timeout, ssl_context)
        if self.object_type is not EmailObject.OUTLOOK:
            self.transport = self.new_transport()
        else:
            from ..transports.outlook import OutlookTransport

            if sender is not None:  # refused like create(sender=...), not silently dropped
                OutlookTransport.check_options(sender=sender)
            if oauth2 is not None:
                raise UnsupportedOperationError("Outlook signs in by itself: no oauth2=")
            self._outlook = OutlookTransport(outlook_application)

    def __repr__(self) -> str:
        if self.object_type is EmailObject.SMTP:
            where = f"{self.relay}:{self.config.port}"
        elif self.object_type is EmailObject.GRAPH:
            where = self.graph_config.graph_url
        else:
            where = str(self.relay or self.object_type.value)
        return f"FluxMail({self.object_type.value}, {where}, username={self.username!r})"

    # Read-only views of the settings (fluxmail 0.3.3 had these attributes). None for
    # the settings an Outlook, console or file mailer does not have.
    @property
    def host(self) -> EmailInstance:
        """The relay and domain given as ``host``, as an ``EmailInstance``."""
        return EmailInstance(self.relay or "", self.domain)

    @property
    def port(self) -> int | None:
        """The SMTP port (None when the mailer does not use SMTP)."""
        return self.config.port if self.object_type is EmailObject.SMTP else None

    @property
    def timeout(self) -> float | None:
        """Seconds allowed per stage (None when the mailer does not use SMTP)."""
        return self.config.timeout if self.object_type is EmailObject.SMTP else None

    @property
    def use_tls(self) -> bool:
        """Whether STARTTLS is required."""
        return self.object_type is EmailObject.SMTP and self.config.use_tls

    @property
    def use_ssl(self) -> bool:
        """Whether the connection uses implicit TLS."""
        return self.object_type is EmailObject.SMTP and self.config.use_ssl

    def new_transport(self, *, max_retries: int | None = None) -> Switch:
        """A transport with this mailer's settings (the factory's, so a test capture
        applies): the one it holds, or another for a worker thread (``fluxmail.scale``),
        optionally with other retries."""
        from ..transports import factory

        retries = self.max_retries if max_retries is None else max_retries
        return factory.build(
            self.object_type,
            config=getattr(self, "config", None),
            graph=getattr(self, "graph_config", None),
            directory=self.relay,
            max_retries=retries,
            retry_delay=self.retry_delay,
        )

    def _check_dkim(self, dkim: object) -> DKIM | None:
        """Load and check the DKIM key now, so a bad key fails here, not at a send."""
        if dkim is None:
            return None
        from ..dkim import DKIM

        if not isinstance(dkim, DKIM):
            raise ConfigurationError(
                f"dkim must be a fluxmail.DKIM(domain=..., selector=..., private_key=...), "
                f"got {type(dkim).__name__}"
            )
        if self.object_type is EmailObject.OUTLOOK:
            raise UnsupportedOperationError("Outlook signs and sends messages itself: no dkim=")
        if self.object_type is EmailObject.GRAPH:
            raise UnsupportedOperationError("Exchange Online signs what Graph sends: no dkim=")
        dkim.load_key()
        return dkim

    @staticmethod
    def _resolve_default_sender(sender: str | None, username: str | None) -> Address | None:
        if sender is not None:
            return parse_address(sender, field="sender")
        if username and "@" in username:
            try:
                return parse_address(username, field="username")
            except InvalidAddressError:
                return None
        return None

    # --- building a message ---------------------------------------------------------

    def create(
        self,
        subject: str,
        recipients: str | Sequence[str],
        body: str,
        sender: str | None = None,
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        reply_to: str | Sequence[str] | None = None,
        attachments: Sequence[Any] | None = None,
        html_body: bool = False,
        plain_body: str | None = None,
        in_reply_to: str | None = None,
        references: str | Sequence[str] | None = None,
        priority: str | None = None,
        unsubscribe_url: str | None = None,
        inline_images: Mapping[str, str | PathLike[str]] | None = None,
        inline_css: bool = False,
        headers: Mapping[str, str] | None = None,
        auto_text: bool = True,
        invite: Invite | None = None,
    ) -> Self:
        """Validate and hold one message for the next ``send()``; returns ``self``."""
        message = self.build_message(
            subject=subject,
            recipients=recipients,
            body=body,
            sender=sender,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            attachments=attachments,
            html_body=html_body,
            plain_body=plain_body,
            in_reply_to=in_reply_to,
            references=references,
            priority=priority,
            unsubscribe_url=unsubscribe_url,
            inline_images=inline_images,
            inline_css=inline_css,
            headers=headers,
            auto_text=auto_text,
            invite=invite,
        )
        self._pending.put(message)
        return self

    def build_message(self, **options: Any) -> Message:
        """Validate ``create()`` arguments into a Message without keeping it (BulkSender
        uses this). Applies the default sender."""
        if self._outlook is not None:
            self._outlook.check_options(**options)
        check_option_names(options)
        options["sender"] = self._sender_for(options.get("sender"))
        return build_message(**options)

    def _sender_for(self, sender: str | None) -> str | Address:
        if sender is not None:
            return sender
        if self._default_sender is not None:
            return self._default_sender
        if self._outlook is not None:
            from ..transports.outlook import OUTLOOK_SENDER

            return OUTLOOK_SENDER
        from ..smtp._hints import attach, make

        raise attach(InvalidAddressError("no sender"), make("no_sender"))

    @property
    def message(self) -> Message | None:
        """The message a ``send()`` here would send, if any (see ``_pending``)."""
        return self._pending.peek()

    def _take_message(self, *, claim: bool = False) -> Message:
        """The pending message: left in place (dry runs, previews, compose()), or with
        ``claim`` taken for a send, so that no other send() takes it meanwhile (give it
        back with ``self._pending.finish(message, sent=...)``)."""
        message = self._pending.take() if claim else self.message
        if message is None:
            raise NoMessageError("nothing to send: call create() first")
        return message

    def compose(
        self, message: Message | None = None, *, message_id: str | None = None
    ) -> Composed:
        """The exact bytes and envelope ``send()`` would hand to the server (DKIM-signed
        when the mailer has ``dkim=``). ``message_id`` (``<x@y>``) replaces the generated
        one (BulkSender's journal resends a message with its first Message-ID)."""
        from ..compose._composer import compose

        composed = compose(
            message or self._take_message(),
            domain=self.domain,
            message_id=message_id,
            bcc_header=self._graph,  # Graph reads Bcc there and strips it on delivery
        )
        if self.dkim is not None:
            from ..dkim import sign

            composed = sign(composed, self.dkim)
        return composed

    # --- sending --------------------------------------------------------------------

    def send(self, dry_run: bool = False) -> str:
        """Send the message from ``create()``; with ``dry_run`` print and return a preview."""
        flag("dry_run", dry_run)
        if dry_run:
            return self._print_preview(self._take_message())
        message = self._take_message(claim=True)
        sent = False
        try:
            receipt = self._send_now(message)
            sent = True
        finally:  # a failed send can be called again, from here or any thread
            self._pending.finish(message, sent=sent)
        return receipt

    def send_message(
        self,
        message: EmailMessage | bytes,
        *,
        mail_from: str | None = None,
        recipients: Sequence[str] | None = None,
    ) -> str:
        """Send an ``email.message.EmailMessage`` (or raw bytes) you built, through the
        same checks, transports, retries, DKIM and capture as ``send()``; the envelope
        comes from its headers unless given, Bcc is stripped (rules: ``_prebuilt``)."""
        return self._send_now(self._prebuilt(message, mail_from, recipients))

    async def send_message_async(
        self,
        message: EmailMessage | bytes,
        *,
        mail_from: str | None = None,
        recipients: Sequence[str] | None = None,
    ) -> str:
        """Async ``send_message()``: the same checks, envelope rules, DKIM, transports,
        capture and receipt, sent as ``send_async()`` sends (no automatic retry: the API
        page says async sends are not retried; a held ``async with`` connection the server
        closed while idle is reopened once, as for ``send_async()``)."""
        composed = self._prebuilt(message, mail_from, recipients)
        transport = self._transport_for_send()
        result = await transport.send_async(composed)
        return _receipt(result, GRAPH_SUCCESS if self._graph else SUCCESS)

    def _prebuilt(
        self,
        message: EmailMessage | bytes,
        mail_from: str | None,
        recipients: Sequence[str] | None,
    ) -> Composed:
        """``message`` checked and made ready for the wire (DKIM-signed when the mailer
        signs): the one step send_message() and send_message_async() share."""
        from ._prebuilt import prebuilt

        if self._graph:  # Graph reads the recipients from the headers
            from ..transports.graph import check_prebuilt

            check_prebuilt(message, recipients)
        composed = prebuilt(
            message, mail_from=mail_from, recipients=recipients, domain=self.domain
        )
        if self.dkim is not None:
            from ..dkim import sign

            composed = sign(composed, self.dkim)
        return composed

    def _send_now(self, message: Message | Composed) -> SendReceipt:
        """The one sync send path, for send() and send_message()."""
        transport = self._transport_for_send()  # Outlook refuses before composing
        composed = message if isinstance(message, Composed) else self.compose(message)
        result = transport.send(composed)
        return _receipt(result, GRAPH_SUCCESS if self._graph else SUCCESS)

    def send_async(self, dry_run: bool = False) -> Coroutine[Any, Any, str]:
        """Async ``send()``. The message is taken now, so concurrent tasks can share one
        FluxMail. No automatic retry (as the API page says). A dry run, like
        ``send(dry_run=True)``, leaves the message in place."""
        flag("dry_run", dry_run)
        if dry_run:
            return self._send_async(self._take_message(), dry_run)
        message = self._take_message(claim=True)
        self._pending.finish(message, sent=True)
        return self._send_async(message, dry_run)

    async def _send_async(self, message: Message, dry_run: bool) -> str:
        if dry_run:
            return self._print_preview(message)
        transport = self._transport_for_send()
        result = await transport.send_async(self.compose(message))
        return _receipt(result, GRAPH_SUCCESS if self._graph else SUCCESS)

    @property
    def _graph(self) -> bool:
        return self.object_type is EmailObject.GRAPH

    def _transport_for_send(self) -> Switch:
        """The transport, or the refusal for Outlook (shared by send and send_async)."""
        if self.transport is None:
            raise UnsupportedOperationError(
                "Outlook cannot send programmatically: call display() and click Send"
            )
        return self.transport

    def display(self) -> str:
        """Outlook: open the compose window. Graph: save the message as a draft in the
        mailbox, print and return its webLink (a person reviews it in Outlook on the web
        and clicks Send). Otherwise print the preview and return it."""
        if self._graph and self.transport is not None:
            from ..transports.graph import save_draft

            draft = self._take_message(claim=True)
            saved = False
            try:
                link = save_draft(self.transport, self.compose(draft))
                saved = True
            finally:  # as for send(): a draft that failed can be saved again
                self._pending.finish(draft, sent=saved)
            return link
        message = self._take_message()
        if self._outlook is not None:
            self._outlook.display(message)
            return OUTLOOK_DISPLAYED
        return self._print_preview(message)

    def _print_preview(self, message: Message) -> str:
        from ..compose._composer import compose, preview

        composed = compose(message, domain=self.domain, bcc_header=self._graph)
        text = preview(message, composed)
        print(text)
        return text

    # --- connection management --------------------------------------------------------

    def __enter__(self) -> Self:
        if self.transport is not None:
            self.transport.hold()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.transport is not None:
            self.transport.release()

    async def __aenter__(self) -> Self:
        if self.transport is not None:
            self.transport.hold_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.transport is not None:
            await self.transport.release_async()

    def test_connection(self) -> dict[str, Any]:
        """Connect, do TLS and AUTH, send nothing; return diagnostics or raise."""
        if self._graph and self.transport is not None:
            return self.transport.probe()  # a token, and Graph's word on the mailbox
        if self.object_type is not EmailObject.SMTP or self.transport is None:
            raise UnsupportedOperationError("test_connection() is for SMTP mailers")
        started = time.perf_counter()
        info = self.transport.probe()
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return {
            "ok": True,
            "relay": self.relay,
            "port": self.config.port,
            "latency_ms": latency_ms,
            **info,
        }

    # --- configuration from the environment -------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> FluxMail:
        """Build a FluxMail from FLUXMAIL_* variables; keyword arguments override them."""
        env = os.environ if environ is None else environ
        settings = settings_from_env(env)  # the table in fluxmail._env, shared with the CLI
        object_type = settings.get("object_type", EmailObject.SMTP)
        if (
            object_type is EmailObject.SMTP
            and not settings.get("host")
            and "host" not in overrides
        ):
            raise ConfigurationError("FLUXMAIL_HOST is not set (required for SMTP)")
        settings.update(overrides)
        return cls(**settings)
