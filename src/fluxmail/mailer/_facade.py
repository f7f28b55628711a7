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
from ..compose._composer import compose
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
from ._receipt import GRAPH_SUCCESS, OUTLOOK_DISPLAYED, SUCCESS, SendReceipt, _receipt

if TYPE_CHECKING:
    import ssl
    from email.message import EmailMessage
    from os import PathLike

    from ..dkim import DKIM
    from ..message._invite import Invite
    from ..smtp._tokens import TokenSource
    from ..transports.factory import Switch
    from ..transports.outlook import OutlookTransport

    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

_CREATE_OPTIONS = frozenset(CREATE_OPTIONS)  # the declared schema (message/_options.py)


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
    """Send email over SMTP (or Microsoft Graph), or open it in Outlook on Windows.

    One FluxMail holds its settings and one transport; it may be shared by threads and
    asyncio tasks (each ``create()`` belongs to the context that made it). Everything is
    checked here, before any connection.

    Args:
        object_type: ``"smtp"`` (default), ``"graph"``, ``"outlook"``, ``"console"``
            (print instead of sending) or ``"file"`` (write ``.eml`` files into the
            directory given as ``host``).
        host: the relay's hostname, or ``EmailInstance(relay, domain)`` (``domain``
            names the Message-IDs and the EHLO). Never ``host:port`` (use ``port``).
        port: the SMTP port (25, 587 with ``use_tls``, 465 with ``use_ssl``).
        use_tls: require STARTTLS (fail closed if the server does not offer it).
        use_ssl: implicit TLS from the first byte (port 465).
        username: the AUTH user (also the default sender when it is an address).
        password: the AUTH password; never logged or shown.
        sender: the default From address of every message.
        timeout: seconds allowed per stage (connect, each reply).
        max_retries: how often ``send()`` retries what the delivery policy calls
            transient (async sends never retry).
        retry_delay: seconds before the first retry (doubled each time).
        ssl_context: your own ``ssl.SSLContext`` (verification is on by default).
        local_hostname: the EHLO name (default: the domain of ``host``, or the machine's).
        allow_insecure_auth: allow AUTH on a connection without TLS.
        oauth2: XOAUTH2 tokens: ``GoogleOAuth2``, ``MicrosoftOAuth2`` or a callable.
        outlook_application: the Outlook COM object (tests and special setups).
        dkim: sign every message with this ``DKIM`` key (checked now).
        graph_url: the Graph endpoint (``object_type="graph"`` only).

    Raises:
        ConfigurationError: ``invalid_option``: a bad or contradictory setting.
        InvalidAddressError: ``invalid_address``: ``sender`` is not one address.
        UnsupportedOperationError: ``unsupported_operation``: e.g. ``oauth2`` on Outlook.
        MissingDependencyError: ``missing_dependency``: an extra is not installed.

    Example:
        ```python
        mailer = FluxMail(host="127.0.0.1", port=1025, sender="app@example.com")
        mailer.create(subject="Hello", recipients=["ada@example.org"], body="Hi Ada").send()
        ```
    """

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
        """Validate and hold one message for the next ``send()``; returns ``self``.

        Nothing touches the network. The message belongs to the calling thread or task
        (see the guide, "One mailer, many threads and tasks"); a second ``create()`` there
        replaces it. The guide's "create(...)" table says what each option does; their
        names, types and defaults are declared once in ``CreateOptions``.

        Args:
            subject: the Subject (non-ASCII is RFC 2047-encoded).
            recipients: To: one address, or a list of them (a string is never split).
            body: the text, or the HTML when ``html_body=True``.
            sender: From for this message (default: the mailer's ``sender``).
            cc: Cc addresses.
            bcc: Bcc addresses (in the envelope only, never in the bytes).
            reply_to: Reply-To addresses.
            attachments: file paths, ``(filename, bytes, mime_type)`` tuples, open files.
            html_body: ``body`` is HTML.
            plain_body: with ``html_body``: the text/plain alternative.
            in_reply_to: a Message-ID, for threading.
            references: Message-IDs, for threading.
            priority: ``"high"``, ``"normal"`` or ``"low"``.
            unsubscribe_url: an ``https://`` one-click unsubscribe URL (RFC 8058).
            inline_images: ``{cid: path}`` for ``<img src="cid:...">`` (needs HTML).
            inline_css: inline ``<style>`` rules (the ``css`` extra).
            headers: extra headers; those fluxmail controls are refused.
            auto_text: make a text alternative from HTML when none is given.
            invite: a calendar ``Invite`` (request, update or cancellation).

        Returns:
            The mailer itself, so ``create(...).send()`` chains.

        Raises:
            InvalidAddressError: ``invalid_address``: an address is malformed, or there
                is no sender.
            HeaderInjectionError: ``header_injection``: CR/LF/NUL in a header value.
            AttachmentNotFoundError: ``attachment_not_found``: a file is missing.
            InvalidMessageError: ``invalid_message``: any other invalid option.
            UnsupportedOperationError: ``unsupported_operation``: an SMTP-only option on
                an Outlook mailer.

        Example:
            ```python
            mailer.create(
                subject="Report",
                recipients=["ada@example.org"],
                body="<p>See <b>attached</b></p>",
                html_body=True,
                attachments=[("report.csv", b"a,b\\r\\n1,2\\r\\n", "text/csv")],
            )
            assert mailer.message.subject == "Report"
            mailer.send()
            ```
        """
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
        """Validate ``create()`` arguments into a Message without keeping it.

        What BulkSender does for each dict it is given; the default sender applies.

        Args:
            **options: ``create()``'s arguments, by name (``CreateOptions``).

        Returns:
            The frozen :class:`~fluxmail.message.Message`.

        Raises:
            InvalidMessageError: ``invalid_message``: an unknown option name, or any of
                ``create()``'s refusals (``invalid_address``, ``header_injection``, ...).

        Example:
            ```python
            message = mailer.build_message(subject="Hi", recipients="ada@example.org", body=".")
            assert message.sender.addr_spec == "app@example.com"
            assert mailer.message is None  # nothing was kept for send()
            ```
        """
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
        """The exact bytes and envelope ``send()`` would hand to the server.

        DKIM-signed when the mailer has ``dkim=``. Sends nothing and leaves the pending
        message in place.

        Args:
            message: a Message from ``build_message()``; default: the pending one.
            message_id: a Message-ID (``<x@y>``) to use instead of a new one (BulkSender's
                journal resends a message with its first Message-ID).

        Returns:
            The :class:`~fluxmail.envelope.Composed` message (envelope and bytes).

        Raises:
            NoMessageError: ``no_message``: no message given and none pending.
            InvalidMessageError: ``invalid_message``: e.g. a bad ``message_id``.

        Example:
            ```python
            mailer.create(subject="Hi", recipients=["ada@example.org"], bcc=["audit@example.net"],
                          body="Hello")
            composed = mailer.compose()
            assert composed.envelope.rcpt_to == ("ada@example.org", "audit@example.net")
            assert b"audit@example.net" not in composed.data  # Bcc is never in the bytes
            ```
        """
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
        """Send the message from ``create()``; with ``dry_run`` print and return a preview.

        Retries what the delivery policy calls transient, up to ``max_retries``; the
        error raised after the last try keeps the original as ``__cause__``. A message
        that failed stays pending and can be sent again.

        Args:
            dry_run: print and return the preview (headers, parts, attachments), connect
                to nothing, keep the message.

        Returns:
            A :class:`SendReceipt` (the string ``"Email sent successfully via SMTP."``),
            or the preview text for a dry run.

        Raises:
            NoMessageError: ``no_message``: ``create()`` was not called.
            ConnectError: ``connection_failed``, ``timeout``, ``tls_required``,
                ``tls_verify_failed`` or ``protocol_error``.
            AuthenticationError: ``authentication_failed``.
            SMTPResponseError: ``sender_refused``, ``recipients_refused`` (every recipient),
                ``message_refused``, ``message_too_large``, ``smtputf8_unsupported``.
            OutcomeUnknownError: ``outcome_unknown``: the connection broke after the final
                dot; the message may have been delivered, so it is not retried.
            UnsupportedOperationError: ``unsupported_operation``: an Outlook mailer.

        Example:
            ```python
            mailer.create(subject="Hi", recipients=["ada@example.org"], body="Hello")
            preview = mailer.send(dry_run=True)  # printed, nothing sent
            assert "Subject: Hi" in preview
            assert mailer.send() == "Email sent successfully via SMTP."
            ```
        """
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
        """Send an ``email.message.EmailMessage`` (or raw bytes) you built.

        The same checks, transports, retries, DKIM and capture as ``send()``. The envelope
        comes from its headers unless given (``Sender`` or the one ``From``; ``To``, ``Cc``,
        ``Bcc``); Bcc is taken out of the bytes; Message-ID and Date are added if missing.

        Args:
            message: an ``email.message.EmailMessage`` (any ``email.message.Message``) or
                the bytes of one.
            mail_from: the envelope sender, instead of the headers'.
            recipients: the envelope recipients, instead of the headers'.

        Returns:
            A :class:`SendReceipt`.

        Raises:
            InvalidMessageError: ``invalid_message``: not a message, a bare CR, a NUL, a
                line over 998 octets, over 100 MB.
            HeaderInjectionError: ``header_injection``: a header line that is not
                ``Name: value``.
            InvalidAddressError: ``invalid_address``: no sender or no recipients, or a
                malformed address.
            FluxMailException: whatever ``send()`` raises once connected (same codes).

        Example:
            ```python
            from email.message import EmailMessage

            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "app@example.com", "ada@example.org", "Hi"
            msg.set_content("Hello")
            receipt = mailer.send_message(msg)
            assert receipt.accepted == ("ada@example.org",)
            ```
        """
        return self._send_now(self._prebuilt(message, mail_from, recipients))

    async def send_message_async(
        self,
        message: EmailMessage | bytes,
        *,
        mail_from: str | None = None,
        recipients: Sequence[str] | None = None,
    ) -> str:
        """Async ``send_message()``.

        The same checks, envelope rules, DKIM, transports, capture and receipt, sent as
        ``send_async()`` sends: no automatic retry (the API page says async sends are not
        retried); a held ``async with`` connection that the server closed while idle is
        reopened once.

        Args:
            message: an ``email.message.EmailMessage`` or the bytes of one.
            mail_from: the envelope sender, instead of the headers'.
            recipients: the envelope recipients, instead of the headers'.

        Returns:
            A :class:`SendReceipt`.

        Raises:
            InvalidMessageError: ``invalid_message`` (and ``header_injection``,
                ``invalid_address``), as ``send_message()``.
            FluxMailException: whatever ``send_async()`` raises once connected.

        Example:
            ```python
            import asyncio

            raw = b"From: app@example.com\\r\\nTo: ada@example.org\\r\\n\\r\\nHello\\r\\n"
            assert asyncio.run(mailer.send_message_async(raw)).accepted == ("ada@example.org",)
            ```
        """
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
        """Async ``send()``: call it, then await what it returns.

        The message is taken when ``send_async()`` is called (not when awaited), so
        concurrent tasks can share one FluxMail if each does ``create()`` then
        ``send_async()``. No automatic retry (as the API page says). A dry run, like
        ``send(dry_run=True)``, leaves the message in place.

        Args:
            dry_run: print and return the preview instead of sending.

        Returns:
            A coroutine that gives a :class:`SendReceipt` (or the preview).

        Raises:
            NoMessageError: ``no_message``, at the call: ``create()`` was not called.
            FluxMailException: when awaited, the codes ``send()`` raises.

        Example:
            ```python
            import asyncio

            async def main() -> str:
                mailer.create(subject="Hi", recipients=["ada@example.org"], body="Hello")
                return await mailer.send_async()

            assert asyncio.run(main()) == "Email sent successfully via SMTP."
            ```
        """
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
        """Show the pending message instead of sending it.

        Outlook: open the compose window. Graph: save the message as a draft in the
        mailbox, print and return its webLink (a person reviews it in Outlook on the web
        and clicks Send). Otherwise (SMTP, console, file): print the preview and return
        it, as fluxmail 0.3.3 did. The message stays pending, except a Graph draft.

        Returns:
            The preview text, the draft's webLink, or ``"Outlook compose window opened."``.

        Raises:
            NoMessageError: ``no_message``: ``create()`` was not called.
            OutlookUnavailableError: ``outlook_unavailable``: no Outlook on this machine.
            GraphError: ``graph_error``: Graph refused the draft.

        Example:
            ```python
            mailer.create(subject="Check me", recipients=["ada@example.org"], body="Draft")
            assert "Subject: Check me" in mailer.display()
            assert mailer.message is not None  # still pending
            ```
        """
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
        from ..compose._composer import preview

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
        """Connect, do TLS and AUTH, send nothing; return diagnostics or raise.

        Over Graph: get a token and ask Graph about the mailbox.

        Returns:
            ``{"ok": True, "relay", "port", "latency_ms", ...}`` plus what the server
            said (its greeting, extensions, TLS version, the AUTH mechanism used).

        Raises:
            UnsupportedOperationError: ``unsupported_operation``: not an SMTP or Graph
                mailer.
            ConnectError: ``connection_failed``, ``timeout``, ``tls_required``,
                ``tls_verify_failed``, ``protocol_error``.
            AuthenticationError: ``authentication_failed``.

        Example:
            ```python
            info = mailer.test_connection()
            assert info["ok"] and info["port"] == 1025
            ```
        """
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
        """Build a FluxMail from ``FLUXMAIL_*`` variables; keyword arguments override them.

        The variables are the CLI's (one parser serves both; docs/cli.md lists them):
        ``FLUXMAIL_HOST``, ``FLUXMAIL_PORT``, ``FLUXMAIL_TLS``, ``FLUXMAIL_SSL``,
        ``FLUXMAIL_USERNAME``, ``FLUXMAIL_PASSWORD``, ``FLUXMAIL_SENDER``,
        ``FLUXMAIL_TIMEOUT``, ``FLUXMAIL_TYPE``, ...

        Args:
            environ: where to read them (default: ``os.environ``).
            **overrides: FluxMail arguments that win over the environment.

        Returns:
            The configured FluxMail.

        Raises:
            ConfigurationError: ``invalid_option``: ``FLUXMAIL_HOST`` missing for SMTP, or
                a value that does not parse (``FLUXMAIL_PORT=abc``).

        Example:
            ```python
            env = {"FLUXMAIL_HOST": "127.0.0.1", "FLUXMAIL_PORT": "1025",
                   "FLUXMAIL_SENDER": "app@example.com"}
            mailer = FluxMail.from_env(env, timeout=10)
            assert mailer.port == 1025 and mailer.timeout == 10
            ```
        """
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
