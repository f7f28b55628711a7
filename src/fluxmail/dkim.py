"""DKIM signing (RFC 6376) of composed messages, through dkimpy (``pip install -e ".[dkim]"``).

``FluxMail(..., dkim=DKIM(domain="example.com", selector="s1", private_key=...))`` signs
every message it sends: :func:`sign` adds a ``DKIM-Signature`` header to
:attr:`Composed.data <fluxmail.envelope.Composed.data>` after composition, in the one data
path that ``send()``, ``send_async()``, ``BulkSender`` and the Django backend share.

* The algorithm follows the key: ``rsa-sha256`` for an RSA key (at least 1024 bits, 2048
  recommended, RFC 8301), ``ed25519-sha256`` for an Ed25519 key (RFC 8463).
* Canonicalization is ``relaxed/relaxed``; the signed headers are those of
  :data:`SIGNED_HEADERS` that the message has.
* The key is PEM (``BEGIN RSA PRIVATE KEY`` or PKCS#8 ``BEGIN PRIVATE KEY``), or an
  Ed25519 seed: the base64 of its 32 bytes that dkimpy's ``dknewkey`` writes, or the 32
  bytes themselves. ``bytes`` are always the key. A ``str`` is the key when it holds a
  PEM block or is a base64 seed (44 characters, ending in ``=``); any other ``str``, and
  a path-like, names a file holding one of those forms. It is loaded and checked when
  the mailer is built, and never appears in ``repr``, errors or logs: an error about a
  file names its path only when the path cannot be key material.

dkimpy (and, for Ed25519, PyNaCl) are imported only when a key is loaded.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, Union

from .errors import (
    ConfigurationError,
    HeaderInjectionError,
    InvalidMessageError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    from .envelope import Composed

__all__ = ["DKIM", "SIGNED_HEADERS", "KeySource", "dkim_from_settings", "sign"]

#: The headers signed when the message has them, in this order.
SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
#: ``private_key=``: the key itself (bytes; a ``str`` holding a PEM block or a base64
#: Ed25519 seed) or a file path.
KeySource = Union[bytes, str, "PathLike[str]"]

_RSA = b"rsa-sha256"
_ED25519 = b"ed25519-sha256"
_MIN_RSA_BITS = 1024
_OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: The base64 of a 32-byte Ed25519 seed, as ``dknewkey`` writes it (and may end a line).
_B64_SEED = re.compile(r"\s*[A-Za-z0-9+/]{43}=\s*")
#: A string made only of base64 characters could be a key given by mistake: not shown.
_KEYLIKE = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
_SEED_BYTES = 32


@dataclass(frozen=True)
class _SigningKey:
    """A checked key in the form dkimpy takes: PKCS#1 PEM (RSA) or the base64 seed."""

    algorithm: bytes
    material: bytes = field(repr=False)
    public: bytes = field(repr=False)  # the p= value of the DNS record (base64)


@dataclass(frozen=True, repr=False)
class DKIM:
    """Where and how to sign: ``DKIM(domain="example.com", selector="s1", private_key=...)``.

    The public key goes in DNS as a TXT record named :attr:`dns_name` with the value
    :meth:`txt_record` returns. ``repr()`` never shows the key. Give it to
    ``FluxMail(dkim=...)``, which loads and checks the key at once and signs every message
    it composes (``relaxed/relaxed``, the headers in :data:`SIGNED_HEADERS` present).

    Args:
        domain: the signing domain (``d=``); IDN names are converted to punycode.
        selector: the selector (``s=``), DNS labels.
        private_key: the key: PEM or DER bytes (RSA, or Ed25519 as PKCS#8 or a raw
            32-byte seed, base64), a ``str`` holding PEM, or the path of a key file.

    Raises:
        ConfigurationError: ``invalid_option``: a bad domain or selector, a key that is
            not a key (the key itself is never shown).
        HeaderInjectionError: ``header_injection``: CR, LF or NUL in a name.
        MissingDependencyError: ``missing_dependency``: dkimpy (the ``dkim`` extra),
            when the key is loaded.

    Example:
        ```python
        import base64

        seed = base64.b64encode(os.urandom(32)).decode()  # an Ed25519 key, as a base64 seed
        dkim = DKIM(domain="example.com", selector="s1", private_key=seed)
        assert dkim.dns_name == "s1._domainkey.example.com"
        assert dkim.txt_record().startswith("v=DKIM1; k=ed25519; p=")
        signer = FluxMail(host="127.0.0.1", port=1025, sender="app@example.com", dkim=dkim)
        signer.create(subject="Signed", recipients=["ada@example.org"], body="Hello")
        assert signer.compose().data.startswith(b"DKIM-Signature:")
        ```
    """

    domain: str
    selector: str
    private_key: KeySource
    _loaded: list[_SigningKey] = field(
        default_factory=list, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        for name in ("domain", "selector"):
            value = getattr(self, name)
            if isinstance(value, str) and any(ch in value for ch in "\r\n\0"):
                raise HeaderInjectionError(f"DKIM {name} contains CR, LF or NUL")
        if not isinstance(self.domain, str) or not self.domain.strip():
            raise ConfigurationError("DKIM domain must be a domain name such as 'example.com'")
        from .errors import InvalidAddressError
        from .message._address import normalize_domain

        try:
            object.__setattr__(self, "domain", normalize_domain(self.domain.strip(), "domain"))
        except InvalidAddressError as exc:
            raise ConfigurationError(f"DKIM {exc.message}") from None
        if not isinstance(self.selector, str) or not all(
            _SELECTOR.fullmatch(label) for label in self.selector.split(".")
        ):
            raise ConfigurationError(
                f"DKIM selector must be DNS labels (letters, digits, hyphens), "
                f"got {self.selector!r}"
            )
        if not isinstance(self.private_key, (bytes, bytearray, str, PathLike)):
            raise ConfigurationError(
                "DKIM private_key must be the key (bytes) or the path of a key file, "
                f"got {type(self.private_key).__name__}"
            )
        if isinstance(self.private_key, bytearray):
            object.__setattr__(self, "private_key", bytes(self.private_key))

    def __repr__(self) -> str:
        return f"DKIM(domain={self.domain!r}, selector={self.selector!r}, private_key=<hidden>)"

    @property
    def dns_name(self) -> str:
        """Where verifiers look up the public key: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def algorithm(self) -> str:
        """``"rsa-sha256"`` or ``"ed25519-sha256"``, from the key (loads it)."""
        return self.load_key().algorithm.decode("ascii")

    def txt_record(self) -> str:
        """The DNS TXT value to publish at :attr:`dns_name` (``v=DKIM1; k=...; p=...``)."""
        key = self.load_key()
        kind = "rsa" if key.algorithm == _RSA else "ed25519"
        return f"v=DKIM1; k={kind}; p={key.public.decode('ascii')}"

    def load_key(self) -> _SigningKey:
        """Read and check the key (once; FluxMail does it at construction).

        Returns:
            The loaded key (private: what the signer uses).

        Raises:
            ConfigurationError: ``invalid_option``: unreadable, or not an RSA/Ed25519
                key (the message never shows the key).
            MissingDependencyError: ``missing_dependency``: dkimpy is not installed.
        """
        if not self._loaded:
            self._loaded.append(_load(self.private_key))
        return self._loaded[0]


def dkim_from_settings(
    domain: str | None, selector: str | None, key: KeySource | None, names: tuple[str, str, str]
) -> DKIM | None:
    """A DKIM from three optional settings (environment, Django); None when none is set.

    ``names`` are the settings' names, for the error when only some are set."""
    values = (domain, selector, key)
    if not any(values):
        return None
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: DKIM needs {', '.join(names)} together"
        )
    assert domain is not None
    assert selector is not None
    assert key is not None
    return DKIM(domain=domain, selector=selector, private_key=key)


# --- signing --------------------------------------------------------------------------------


def _import_dkimpy() -> Any:
    try:
        import dkim as dkimpy
    except ImportError:
        raise MissingDependencyError("DKIM signing", "dkim", "dkimpy") from None
    return dkimpy


def present_headers(data: bytes) -> list[str]:
    """The names of :data:`SIGNED_HEADERS` that the header block of ``data`` has."""
    end = data.find(b"\r\n\r\n")
    block = data if end < 0 else data[:end]
    names = {
        line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        for line in block.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    }
    return [name for name in SIGNED_HEADERS if name.lower() in names]


def sign(composed: Composed, dkim: DKIM) -> Composed:
    """``composed`` with a ``DKIM-Signature`` header in front of its data (pure, apart
    from the clock that dkimpy reads for ``t=``). ``FluxMail.compose()`` calls it.

    Args:
        composed: the message as composed.
        dkim: the key and where to sign.

    Returns:
        A new Composed: the same envelope and Message-ID, the signature first.

    Raises:
        ConfigurationError: ``invalid_option``: dkimpy refused the key.
        InvalidMessageError: ``invalid_message``: dkimpy could not sign the message.
    """
    key = dkim.load_key()
    dkimpy = _import_dkimpy()
    try:
        header: bytes = dkimpy.sign(
            composed.data,
            dkim.selector.encode("ascii"),
            dkim.domain.encode("ascii"),
            key.material,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm,
            include_headers=[name.encode("ascii") for name in present_headers(composed.data)],
        )
    except dkimpy.KeyFormatError:
        raise ConfigurationError("DKIM signing failed: dkimpy refused the private key") from None
    except dkimpy.DKIMException as exc:
        raise InvalidMessageError(f"DKIM signing failed: {exc}") from exc
    clean = composed.clean and _crlf_short(header)
    from .envelope import Composed

    data = header + composed.data
    return Composed._checked(composed.envelope, data, composed.message_id, clean=clean)


def _crlf_short(header: bytes) -> bool:
    """The signature header is CRLF-only, ends with CRLF, no line over 998 octets."""
    crlf = header.count(b"\r\n")
    return (
        header.count(b"\r") == crlf == header.count(b"\n")
        and header.endswith(b"\r\n")
        and max(map(len, header.split(b"\r\n"))) <= 998
    )


# --- keys ---------------------------------------------------------------------------------


def _load(source: KeySource) -> _SigningKey:
    if isinstance(source, bytes):
        if len(source) == _SEED_BYTES:  # never valid base64 of a seed (44) nor PEM
            return _ed25519(source)
        return _parse(source, "the DKIM private key")
    if isinstance(source, str) and ("-----BEGIN" in source or _B64_SEED.fullmatch(source)):
        return _parse(source.encode("ascii", "replace"), "the DKIM private key")
    path = os.fsdecode(source)
    shown = _shown(path)
    try:
        with open(path, "rb") as handle:
            content = handle.read(1 << 20)
    except FileNotFoundError:
        raise ConfigurationError(f"DKIM private key file not found: {shown}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the "path"
        why = getattr(exc, "strerror", None) or "not a usable path"
        raise ConfigurationError(f"cannot read the DKIM private key file {shown}: {why}") from None
    return _parse(content, f"the DKIM private key file {shown}")


def _shown(path: str) -> str:
    """How an error names a key file: its path, unless the "path" could be a key given
    in a form we do not take (a seed without padding, base64 without PEM armour)."""
    if "-----" in path or any(ch.isspace() for ch in path) or _KEYLIKE.fullmatch(path):
        return (
            "(the path is not shown: it looks like key material; give a key as PEM text, "
            "or an Ed25519 seed as 44 base64 characters or 32 bytes)"
        )
    return repr(path)


def _parse(content: bytes, where: str) -> _SigningKey:
    match = _PEM.search(content)
    if match is None:
        return _raw_ed25519(content, where)
    label = match.group(1).decode("ascii")
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", match.group(2)), validate=True)
        if label == "RSA PRIVATE KEY":
            return _rsa(der, where)
        if label == "PRIVATE KEY":
            return _pkcs8(der, where)
    except ConfigurationError:
        raise
    except (ValueError, binascii.Error):
        raise ConfigurationError(f"{where} is not a valid PEM private key") from None
    if "ENCRYPTED" in label:
        raise ConfigurationError(
            f"{where} is encrypted; DKIM needs it unencrypted "
            "(openssl pkey -in encrypted.pem -out key.pem)"
        )
    raise ConfigurationError(f"{where}: DKIM keys must be RSA or Ed25519, not {label!r}")


def _raw_ed25519(content: bytes, where: str) -> _SigningKey:
    """dkimpy's own Ed25519 format: the base64 of the 32-byte seed."""
    try:
        seed = base64.b64decode(content.strip(), validate=True)
    except (ValueError, binascii.Error):
        seed = b""
    if len(seed) != _SEED_BYTES:
        raise ConfigurationError(f"{where} is not a PEM private key (nor an Ed25519 seed)")
    return _ed25519(seed)


def _pkcs8(der: bytes, where: str) -> _SigningKey:
    items = _der_items(_der_one(der, 0x30))
    if len(items) < 3 or items[0][0] != 0x02 or items[1][0] != 0x30 or items[2][0] != 0x04:
        raise ValueError("not a PKCS#8 private key")
    algorithm = _der_items(items[1][1])
    oid = algorithm[0][1] if algorithm and algorithm[0][0] == 0x06 else b""
    if oid == _OID_RSA:
        return _rsa(items[2][1], where)
    if oid == _OID_ED25519:
        seed = _der_one(items[2][1], 0x04)
        if len(seed) != 32:
            raise ValueError("bad Ed25519 key length")
        return _ed25519(seed)
    raise ConfigurationError(f"{where}: DKIM keys must be RSA or Ed25519 (this is another kind)")


def _rsa(der: bytes, where: str) -> _SigningKey:
    numbers = _der_items(_der_one(der, 0x30))
    if len(numbers) < 9 or any(tag != 0x02 for tag, _ in numbers[:9]):
        raise ValueError("not an RSA private key")
    modulus, exponent = numbers[1][1], numbers[2][1]
    bits = int.from_bytes(modulus, "big").bit_length()
    if bits < _MIN_RSA_BITS:
        raise ConfigurationError(
            f"{where} is a {bits}-bit RSA key; DKIM needs at least 1024 bits (2048 recommended)"
        )
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = b"\n".join(
        [b"-----BEGIN RSA PRIVATE KEY-----", *lines, b"-----END RSA PRIVATE KEY-----"]
    )
    try:
        _import_dkimpy().crypto.parse_pem_private_key(pem)
    except MissingDependencyError:
        raise
    except Exception:
        raise ConfigurationError(f"{where}: dkimpy cannot read this RSA key") from None
    public = _der(0x30, _der(0x02, modulus) + _der(0x02, exponent))
    spki = _der(
        0x30, _der(0x30, _der(0x06, _OID_RSA) + b"\x05\x00") + _der(0x03, b"\x00" + public)
    )
    return _SigningKey(_RSA, pem + b"\n", base64.b64encode(spki))


def _ed25519(seed: bytes) -> _SigningKey:
    _import_dkimpy()
    try:
        import nacl.signing
    except ImportError:
        raise MissingDependencyError(
            "DKIM signing with an Ed25519 key", "dkim", "pynacl"
        ) from None
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    return _SigningKey(_ED25519, base64.b64encode(seed), base64.b64encode(public))


# --- a little DER, enough for key files -----------------------------------------------------


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the element at ``pos``; ValueError if cut short."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _der_one(data: bytes, tag: int) -> bytes:
    found, content, _ = _der_read(data, 0)
    if found != tag:
        raise ValueError("unexpected DER element")
    return content


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    items, pos = [], 0
    while pos < len(data):
        tag, content, pos = _der_read(data, pos)
        items.append((tag, content))
    return items


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content
