"""What travels through the broker: one message as JSON, its Message-ID already fixed.

A payload is ``{"v": 1, "id": "<message-id>", "enqueue": "<random>", "message": {...}}``
where ``message`` holds the ``create()`` arguments. Attachments and inline images given
as paths travel as absolute paths (the workers must see the same files, e.g. on shared
storage); given as ``(filename, bytes[, type])`` or as open binary files they travel as
base64; an ``invite=`` :class:`~fluxmail.Invite` travels as JSON (its fields, its uid
fixed). The message is validated here, at enqueue time, exactly as the worker will
rebuild it, so bad input fails in the caller and never reaches the queue.

A chunk of payloads travels packed, ``{"v": 1, "chunk": "<the payloads' JSON>"}``: one
string instead of a few dicts per message, so a Celery worker's consumer decodes, copies
(the Redis transport keeps each unacknowledged message) and hands to its pool process one
string, not thousands of objects (the pool process then waits about half as long
between two chunks). A chunk published as a plain list of payloads is read too.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .._env import env_str
from ..errors import ConfigurationError, InvalidAddressError, InvalidMessageError
from ..message import Address, Invite, build_message, parse_address
from ..message._fields import check_msg_id, new_message_id

VERSION = 1
_FILE_OPTIONS = ("attachments", "inline_images")
INVITE = "fluxmail.Invite"  # the key of an Invite's JSON form


def _create_options() -> frozenset[str]:
    from ..mailer._facade import _CREATE_OPTIONS

    return _CREATE_OPTIONS


def make_payload(
    spec: Mapping[str, Any],
    *,
    message_id: str | None = None,
    domain: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate ``spec`` (a dict of ``create()`` arguments) and wrap it for the queue."""
    if not isinstance(spec, Mapping):
        raise ConfigurationError("each message must be a dict of create() arguments")
    unknown = set(spec) - _create_options()
    if unknown:
        raise InvalidMessageError(f"unknown create() option(s): {', '.join(sorted(unknown))}")
    encoded = {name: _encode_option(name, value) for name, value in spec.items()}
    options = decode_message(encoded)
    id_domain = message_domain(options.get("sender"), domain, environ)
    build_message(**{**options, "sender": options.get("sender") or f"check@{id_domain}"})
    mid = (
        new_message_id(id_domain) if message_id is None else check_msg_id(message_id, "message_id")
    )
    return {"v": VERSION, "id": mid, "enqueue": uuid.uuid4().hex, "message": encoded}


def read_payload(payload: object) -> tuple[str, str, dict[str, Any]]:
    """(message_id, enqueue_id, create() arguments) of a payload from the queue."""
    if not isinstance(payload, Mapping) or payload.get("v") != VERSION:
        raise InvalidMessageError("not a fluxmail message payload (or from a newer version)")
    message = payload.get("message")
    mid, enqueue = payload.get("id"), payload.get("enqueue")
    if (
        not isinstance(message, Mapping)
        or not isinstance(mid, str)
        or not isinstance(enqueue, str)
    ):
        raise InvalidMessageError("malformed fluxmail message payload")
    return mid, enqueue, decode_message(message)


def pack_chunk(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Payloads made by :func:`make_payload`, packed to travel as one task argument."""
    return {"v": VERSION, "chunk": json.dumps(payloads, separators=(",", ":"))}


def is_chunk(payload: object) -> bool:
    """Whether a task's argument is a chunk (packed or a list), not one payload."""
    return isinstance(payload, list) or (isinstance(payload, Mapping) and "chunk" in payload)


def read_chunk(payload: object) -> list[Any]:
    """The payloads a task's argument carries, in order (each still to be checked by
    :func:`read_payload`)."""
    if isinstance(payload, list):
        return payload
    if not (isinstance(payload, Mapping) and "chunk" in payload):
        return [payload]
    packed = payload["chunk"]
    if payload.get("v") != VERSION or not isinstance(packed, str):
        raise InvalidMessageError("not a fluxmail chunk (or from a newer version)")
    try:
        payloads = json.loads(packed)
    except ValueError:
        raise InvalidMessageError("malformed fluxmail chunk: not JSON") from None
    if not isinstance(payloads, list):
        raise InvalidMessageError("malformed fluxmail chunk: not a list of payloads")
    return payloads


def message_domain(
    sender: object, domain: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """The right side of a new Message-ID, as FluxMail picks it: ``domain`` (or
    ``FLUXMAIL_DOMAIN``), else the domain of the sender (or of ``FLUXMAIL_SENDER``, or of an
    address-like ``FLUXMAIL_USERNAME``)."""
    from ..compose._composer import _id_domain

    if domain:
        return _id_domain(domain)
    env = os.environ if environ is None else environ
    candidates = [sender, env_str(env, "FLUXMAIL_SENDER"), env_str(env, "FLUXMAIL_USERNAME")]
    env_domain = env_str(env, "FLUXMAIL_DOMAIN")
    if env_domain:
        return _id_domain(env_domain)
    for value in candidates:
        if isinstance(value, str) and "@" in value:
            try:
                return parse_address(value, field="sender").domain
            except InvalidAddressError:
                continue
    raise ConfigurationError(
        "cannot make a Message-ID: give each message a sender, or the fleet a domain= "
        "(or set FLUXMAIL_DOMAIN)"
    )


# --- encoding ----------------------------------------------------------------------------


def _encode_option(name: str, value: Any) -> Any:
    if name == "invite" and isinstance(value, Invite):
        return {INVITE: _encode_invite(value)}
    if name == "attachments":
        return _encode_files(value, name)
    if name == "inline_images" and isinstance(value, Mapping):
        return {str(k): _encode_file(v, f"inline_images[{k!r}]") for k, v in value.items()}
    return _plain(value, name)


def _encode_files(value: Any, field: str) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return [_encode_file(value, f"{field}[0]")]
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        return value  # build_message() explains what is wrong with it
    return [_encode_file(item, f"{field}[{i}]") for i, item in enumerate(value)]


def _encode_file(item: Any, field: str) -> Any:
    if isinstance(item, (str, os.PathLike)):
        return os.path.abspath(os.fsdecode(item))
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        data = item[1]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return list(item)  # build_message() refuses it with the usual message
        kind = item[2] if len(item) == 3 else None
        return {"filename": item[0], "type": kind, "b64": base64.b64encode(data).decode()}
    if hasattr(item, "read"):
        name = os.path.basename(os.fsdecode(getattr(item, "name", "") or ""))
        data = item.read()
        if not isinstance(data, bytes):
            raise InvalidMessageError(f"{field}: open the file in binary mode ('rb')")
        return {"filename": name, "type": None, "b64": base64.b64encode(data).decode()}
    return item


def _plain(value: Any, field: str) -> Any:
    """JSON-safe as is (tuples become lists); anything else cannot cross the queue."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, field) for item in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, field) for k, v in value.items()}
    raise InvalidMessageError(
        f"{field}: a {type(value).__name__} cannot be sent through the queue "
        "(use strings, lists and dicts; attachments as paths or (filename, bytes))"
    )


def _encode_invite(invite: Invite) -> dict[str, Any]:
    """An Invite as JSON: its instants in UTC (the calendar part is written in UTC), its
    addresses as (display name, local part, domain), its uid as fixed at enqueue."""
    people = invite.attendees if isinstance(invite.attendees, tuple) else None
    return {
        "summary": invite.summary,
        "start": invite.start.astimezone(timezone.utc).isoformat(),
        "end": invite.end.astimezone(timezone.utc).isoformat(),
        "organizer": _encode_address(invite.organizer),
        "attendees": None if people is None else [_encode_address(a) for a in people],
        "location": invite.location,
        "description": invite.description,
        "uid": invite.uid,
        "sequence": invite.sequence,
        "method": invite.method,
    }


def _encode_address(address: object) -> list[str]:
    if isinstance(address, Address):
        return [address.display_name, address.local, address.domain]
    return ["", *str(address).rsplit("@", 1)]  # (built Invites hold Address objects)


def _decode_invite(data: Mapping[str, Any]) -> Invite:
    def address(parts: list[str]) -> Address:
        return Address(local=parts[1], domain=parts[2], display_name=parts[0])

    people = data.get("attendees")
    return Invite(
        summary=data["summary"],
        start=datetime.fromisoformat(data["start"]),
        end=datetime.fromisoformat(data["end"]),
        organizer=address(data["organizer"]),
        attendees=None if people is None else [address(a) for a in people],
        location=data.get("location"),
        description=data.get("description"),
        uid=data.get("uid"),
        sequence=int(data.get("sequence", 0)),
        method=data.get("method", "REQUEST"),
    )


def decode_message(message: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(message)
    invite = options.get("invite")
    if isinstance(invite, Mapping) and INVITE in invite:
        options["invite"] = _decode_invite(invite[INVITE])
    for name in _FILE_OPTIONS:
        value = options.get(name)
        if name == "attachments" and isinstance(value, list):
            options[name] = [_decode_file(item) for item in value]
        elif name == "inline_images" and isinstance(value, Mapping):
            options[name] = {k: _decode_file(v) for k, v in value.items()}
    return options


def _decode_file(item: Any) -> Any:
    if isinstance(item, Mapping) and "b64" in item:
        data = base64.b64decode(item["b64"])
        kind = item.get("type")
        return (item["filename"], data) if kind is None else (item["filename"], data, kind)
    return item
