"""Mailbox syntax: the strict subset of RFC 5322 / RFC 6531 that fluxmail accepts.

One string is exactly one mailbox, in one of these forms::

    local@example.com
    <local@example.com>
    Display Name <local@example.com>
    "Doe, John" <local@example.com>

Refused on purpose, although RFC 5322 allows them: quoted local parts (``"a b"@x``),
comments (``(...)``), group syntax (``team: a@x, b@y;``), domain literals
(``[192.0.2.1]``), source routes, and several mailboxes in one string. Programs disagree
about how to read them: ``"a@x.test y"@internal.test`` or ``a@x.test (comment)@y`` is a
mailbox at one domain for one parser and at another domain for the next. Refusing them
means the domain you read is the domain the message is delivered to.

Domains are kept in their ASCII form: lowercased, and IDNA-encoded (UTS-46) when they
contain non-ASCII text. Local parts are kept exactly as given; non-ASCII local parts are
allowed (RFC 6531) and make the message need SMTPUTF8.

:class:`Address` and :func:`parse_address` live here, below the message model and the
invite (both use them); :mod:`fluxmail.message` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from ..envelope import ascii_domain
from ..errors import (
    FluxMailException,
    HeaderInjectionError,
    InvalidAddressError,
    InvalidMessageError,
)

__all__ = [
    "Address",
    "check_mailbox",
    "check_text",
    "normalize_domain",
    "parse_address",
    "parse_addresses",
    "split_mailbox",
]

_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_PHRASE_SPECIALS = frozenset('<>@,;:"[]\\()')
_INJECTION = ("\r", "\n", "\x00")
# Unicode categories refused inside a non-ASCII local part: controls, format characters
# (zero-width joiners and direction marks), surrogates, private use, unassigned, spaces.
_BAD_LOCAL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})

MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
MAX_DOMAIN_OCTETS = 253


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``domain`` is kept in ASCII (IDNA/punycode) form; ``local`` as given.

    Made by ``create()`` and :func:`parse_address` (which check it); ``str()`` gives
    ``Name <local@domain>``.

    Attributes:
        local: the local part, as given (non-ASCII needs an SMTPUTF8 server).
        domain: the domain, in ASCII (``bücher.example`` -> ``xn--bcher-kva.example``).
        display_name: the name shown, or ``""``.

    Example:
        ```python
        from fluxmail.message import parse_address

        address = parse_address("Ada <ada@bücher.example>", field="to")
        assert address.addr_spec == "ada@xn--bcher-kva.example"
        assert str(address) == "Ada <ada@xn--bcher-kva.example>"
        ```
    """

    local: str
    domain: str
    display_name: str = ""

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        return not self.local.isascii()

    def __str__(self) -> str:
        if self.display_name:
            return f"{self.display_name} <{self.addr_spec}>"
        return self.addr_spec


def parse_address(value: str | Address, *, field: str) -> Address:
    """Validate one mailbox (``a@b.c``, ``Name <a@b.c>``, ``"Doe, J" <a@b.c>``).

    The rules (one mailbox per string, no quoted local parts, no comments, no groups,
    no domain literals, IDNA domains) are described in :mod:`fluxmail.message._address`.
    An :class:`Address` is re-checked the same way. Raises InvalidAddressError,
    HeaderInjectionError (CR/LF/NUL) or InvalidMessageError (wrong type).
    """
    if isinstance(value, Address):
        parts = (value.display_name, value.local, value.domain)
        if all(type(part) is str for part in parts) and _valid_parts(*parts) == parts[:2]:
            if type(value) is Address:
                return value  # checked before, and immutable: itself
            display, local, domain = parts  # checked before: the same answer
        else:
            display, local, domain = check_mailbox(*parts, field)
    elif type(value) is str and (known := _valid_mailbox(value)) is not None:
        return known
    else:
        display, local, domain = split_mailbox(value, field)
    return Address(local, domain, display)


# The checks are pure: an address seen before (the sender of every message of a batch, a
# recipient written again) gets its answer from here. Only valid ones are remembered; an
# invalid one is checked again, so that its error names the field it came in.
_SEEN = 4096


@lru_cache(maxsize=_SEEN)
def _valid_mailbox(value: str) -> Address | None:
    """The Address of a valid ``value`` (one object per value: it is immutable)."""
    try:
        display, local, domain = split_mailbox(value, "")
    except FluxMailException:
        return None
    return Address(local, domain, display)


@lru_cache(maxsize=_SEEN)
def _valid_parts(display: str, local: str, domain: str) -> tuple[str, str] | None:
    """``(display, local)`` when the parts pass :func:`check_mailbox` with ``domain``
    already in its ASCII form (an Address as fluxmail makes it), else None."""
    try:
        checked = check_mailbox(display, local, domain, "")
    except FluxMailException:
        return None
    return checked[:2] if checked[2] == domain else None


def parse_addresses(
    value: str | Address | Iterable[str | Address] | None, *, field: str
) -> tuple[Address, ...]:
    """A list of mailboxes; a bare string is exactly one mailbox (never split on commas).

    Errors name the entry: ``recipients[1]: ...``.
    """
    if value is None:
        return ()
    if isinstance(value, (str, Address)):
        return (parse_address(value, field=field),)
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidMessageError(
            f"{field}: expected a list of email addresses, got {type(value).__name__}"
        )
    return tuple(
        parse_address(item, field=f"{field}[{index}]") for index, item in enumerate(value)
    )


def check_text(
    value: str,
    field: str,
    *,
    allow_tab: bool = True,
    error: type[InvalidMessageError] = InvalidMessageError,
) -> None:
    """Refuse text that cannot sit on one header line.

    CR, LF and NUL raise :class:`HeaderInjectionError` (never stripped). Other C0 controls
    and DEL raise ``error``, as does a lone surrogate (it cannot be encoded as UTF-8).
    TAB is allowed unless ``allow_tab`` is false.
    """
    if value.isprintable():
        return
    for bad in _INJECTION:
        if bad in value:
            raise HeaderInjectionError(f"{field}: contains {bad!r} (CR, LF and NUL are refused)")
    for char in value:
        code = ord(char)
        if (code < 0x20 and not (allow_tab and char == "\t")) or code == 0x7F:
            raise error(f"{field}: contains the control character {char!r}")
        if 0xD800 <= code <= 0xDFFF:
            raise error(f"{field}: contains a lone surrogate {char!r}, which is not valid text")


def split_mailbox(value: object, field: str) -> tuple[str, str, str]:
    """Parse one mailbox string into ``(display_name, local, ascii_domain)``."""
    if not isinstance(value, str):
        raise InvalidMessageError(
            f"{field}: expected an email address string, got {type(value).__name__}"
        )
    check_text(value, field, error=InvalidAddressError)
    text = value.strip(" \t")
    if not text:
        raise InvalidAddressError(f"{field}: empty address")
    display = ""
    spec = text
    if text.endswith(">"):
        display, spec = _split_angle_addr(text, field)
    elif text.startswith("<"):
        raise InvalidAddressError(f"{field}: {text!r} has '<' without a closing '>'")
    local, domain = split_addr_spec(spec, field)
    return display, local, domain


def check_mailbox(display: str, local: str, domain: str, field: str) -> tuple[str, str, str]:
    """Validate the parts of an already built Address; returns them with the domain
    in ASCII form."""
    for part in (display, local, domain):
        if not isinstance(part, str):
            raise InvalidMessageError(f"{field}: address parts must be strings")
    check_text(display, field, allow_tab=False, error=InvalidAddressError)
    spec = f"{local}@{domain}"
    check_text(spec, field, error=InvalidAddressError)
    if spec.count("@") != 1:
        raise InvalidAddressError(f"{field}: {spec!r} has several '@'")
    local, domain = split_addr_spec(spec, field)
    return display, local, domain


def _split_angle_addr(text: str, field: str) -> tuple[str, str]:
    """``Name <spec>`` -> ``(name, spec)``; the name is unquoted when it was quoted."""
    start = text.rfind("<")
    if start < 0:
        raise InvalidAddressError(f"{field}: {text!r} has '>' without '<'")
    spec = text[start + 1 : -1]
    head = text[:start].strip()
    if head.startswith('"'):
        display = _unquote(head, field)
    else:
        bad = sorted(set(head) & _PHRASE_SPECIALS)
        if bad:
            raise InvalidAddressError(
                f"{field}: {text!r} is not one mailbox: the display name contains "
                f"{''.join(bad)!r}; put a single address per entry and quote names that "
                f'need these characters, as in "Doe, John" <john@example.com>'
            )
        display = head
    if "\t" in display:
        raise InvalidAddressError(f"{field}: the display name contains a TAB")
    return display, spec


def _unquote(head: str, field: str) -> str:
    """The content of a quoted-string that must fill ``head`` exactly."""
    out: list[str] = []
    index = 1
    while index < len(head):
        char = head[index]
        if char == "\\" and index + 1 < len(head):
            out.append(head[index + 1])
            index += 2
            continue
        if char == '"':
            if index != len(head) - 1:
                raise InvalidAddressError(
                    f"{field}: unexpected text after the quoted display name in {head!r}"
                )
            return "".join(out)
        out.append(char)
        index += 1
    raise InvalidAddressError(f"{field}: unterminated quoted display name {head!r}")


def split_addr_spec(spec: str, field: str) -> tuple[str, str]:
    """Validate ``local@domain`` and return ``(local, ascii_domain)``."""
    if not spec:
        raise InvalidAddressError(f"{field}: empty address")
    if any(char.isspace() for char in spec):
        raise InvalidAddressError(f"{field}: whitespace inside the address {spec!r}")
    if '"' in spec or "(" in spec or ")" in spec:
        raise InvalidAddressError(
            f"{field}: quoted local parts and comments are not accepted ({spec!r})"
        )
    count = spec.count("@")
    if count == 0:
        raise InvalidAddressError(f"{field}: {spec!r} has no '@'")
    if count > 1:
        raise InvalidAddressError(f"{field}: {spec!r} has several '@'")
    local, domain = spec.split("@")
    _check_local(local, spec, field)
    domain = normalize_domain(domain, field)
    if len(local.encode("utf-8")) + 1 + len(domain) > MAX_ADDRESS_OCTETS:
        raise InvalidAddressError(f"{field}: {spec!r} is longer than {MAX_ADDRESS_OCTETS} octets")
    return local, domain


def _check_local(local: str, spec: str, field: str) -> None:
    if not local:
        raise InvalidAddressError(f"{field}: {spec!r} has an empty local part")
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
        raise InvalidAddressError(
            f"{field}: the local part of {spec!r} is longer than {MAX_LOCAL_OCTETS} octets"
        )
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddressError(f"{field}: misplaced '.' in the local part of {spec!r}")
    if local.isascii():
        bad = set(local) - _ATEXT - {"."}
        if bad:
            raise InvalidAddressError(
                f"{field}: {''.join(sorted(bad))!r} is not allowed in the local part of {spec!r}"
            )
        return
    import unicodedata

    for char in local:
        if char.isascii():
            if char not in _ATEXT and char != ".":
                raise InvalidAddressError(
                    f"{field}: {char!r} is not allowed in the local part of {spec!r}"
                )
        elif unicodedata.category(char) in _BAD_LOCAL_CATEGORIES:
            raise InvalidAddressError(
                f"{field}: the invisible or control character {char!r} is not allowed "
                f"in the local part of {spec!r}"
            )


def normalize_domain(domain: str, field: str) -> str:
    """Return the lowercase ASCII form of ``domain`` (IDNA 2008 with UTS-46 mapping)."""
    if not domain:
        raise InvalidAddressError(f"{field}: empty domain")
    if domain.startswith("["):
        raise InvalidAddressError(
            f"{field}: domain literals such as {domain!r} are not accepted; use a host name"
        )
    ascii_domain = domain.lower() if domain.isascii() else _idna_encode(domain, field)
    _check_labels(ascii_domain, domain, field)
    return ascii_domain


def _idna_encode(domain: str, field: str) -> str:
    try:
        return ascii_domain(domain)
    except ValueError as exc:
        raise InvalidAddressError(
            f"{field}: invalid international domain {domain!r}: {exc}"
        ) from exc


def _check_labels(ascii_domain: str, original: str, field: str) -> None:
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise InvalidAddressError(f"{field}: the domain {original!r} is too long")
    labels = ascii_domain.split(".")
    for label in labels:
        if not label:
            raise InvalidAddressError(f"{field}: empty label in the domain {original!r}")
        if len(label) > 63:
            raise InvalidAddressError(
                f"{field}: a label of the domain {original!r} is longer than 63 octets"
            )
        if not _LDH.issuperset(label) or label[0] == "-" or label[-1] == "-":
            raise InvalidAddressError(
                f"{field}: invalid domain {original!r} (letters, digits and inner '-' only)"
            )
    if len(labels) > 1 and labels[-1].isdigit():
        raise InvalidAddressError(
            f"{field}: {original!r} looks like an IP address; use a host name"
        )
