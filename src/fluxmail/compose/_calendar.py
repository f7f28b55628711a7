"""Invite -> iCalendar bytes (RFC 5545), as an iTIP REQUEST or CANCEL (RFC 5546).

The ``icalendar`` package writes the text: it escapes TEXT values (``\\``, ``;``, ``,``
and line breaks, so a description holding ``END:VEVENT`` stays one property), quotes
parameters (RFC 6868 for ``"`` in a CN), ends lines with CRLF and folds them at 75 octets
without splitting a UTF-8 character. This module decides what goes in.

Times are written as UTC instants (``DTSTART:20270115T130000Z``), not as local times with
a VTIMEZONE. An invite is one event, no recurrence, so the instant is all a calendar needs;
every client shows it in the reader's own zone. The instant is computed here with the
sender's zone rules (``zoneinfo``), so a meeting that spans a DST change keeps its true
length. A VTIMEZONE would add a copy of the zone's rules that icalendar can only write for
1970-2038 as long RDATE lists (about 2.5 KB for Europe/Berlin), which Outlook handles
worst of all, for no difference to a single event. Any tzinfo works, fixed offsets too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import FluxMailException, MissingDependencyError
from ..message._address import Address

if TYPE_CHECKING:
    from ..message._invite import Invite

__all__ = ["ICS_FILENAME", "attendees_of", "load_icalendar", "render"]

PRODID = "-//fluxmail//fluxmail invite//EN"
ICS_FILENAME = "invite.ics"
#: Characters an addr-spec may hold (atext) that a mailto: URI must percent-encode.
_URI_ESCAPES = {char: f"%{ord(char):02X}" for char in "%/?#"}
_INSTALL = 'Calendar invites need the icalendar package: pip install -e ".[calendar]"'


def load_icalendar() -> Any:
    """The ``icalendar`` module, or MissingDependencyError naming the extra."""
    try:
        import icalendar
    except ImportError:
        error = MissingDependencyError("Calendar invites", "calendar", "icalendar")
        # fluxmail is installed from its source tree (the package index's "fluxmail" is
        # another project): name the command that works there. Re-running the base
        # __init__ sets both args and ImportError.msg, which str() reads.
        FluxMailException.__init__(error, f"{_INSTALL} (in your fluxmail checkout)")
        raise error from None
    return icalendar


def render(invite: Invite, now: datetime) -> bytes:
    """The VCALENDAR of ``invite`` (attendees resolved), stamped ``now`` (DTSTAMP)."""
    ical = load_icalendar()
    calendar = ical.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", invite.method)
    event = ical.Event()
    event.add("uid", invite.uid)
    event.add("dtstamp", _utc(now))
    event.add("dtstart", _utc(invite.start))
    event.add("dtend", _utc(invite.end))
    event.add("sequence", invite.sequence)
    event.add("status", invite.status)
    event.add("summary", invite.summary)
    if invite.location is not None:
        event.add("location", invite.location)
    if invite.description is not None:
        event.add("description", invite.description)
    event.add("organizer", _calendar_address(ical, organizer_of(invite)))
    for attendee in attendees_of(invite):
        event.add("attendee", _calendar_address(ical, attendee, attendee=True))
    calendar.add_component(event)
    data: bytes = calendar.to_ical()
    return data


def organizer_of(invite: Invite) -> Address:
    organizer = invite.organizer
    if not isinstance(organizer, Address):  # Invite() always stores an Address
        raise TypeError("invite.organizer was not validated")
    return organizer


def attendees_of(invite: Invite) -> tuple[Address, ...]:
    people = invite.attendees
    if not isinstance(people, tuple) or not all(isinstance(a, Address) for a in people):
        raise TypeError("invite.attendees were not resolved (create() resolves them)")
    return people


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # a naive Date is local time, as in the Date header
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _calendar_address(ical: Any, address: Address, *, attendee: bool = False) -> Any:
    # fluxmail's local parts are dot-atoms (no quotes, no spaces; see _address.py), so
    # only the few atext characters with a meaning in a URI need escaping (RFC 6068).
    local = "".join(_URI_ESCAPES.get(char, char) for char in address.local)
    value = ical.vCalAddress(f"mailto:{local}@{address.domain}")
    if address.display_name:
        value.params["CN"] = address.display_name
    if attendee:
        value.params["ROLE"] = "REQ-PARTICIPANT"
        value.params["PARTSTAT"] = "NEEDS-ACTION"
        value.params["RSVP"] = "TRUE"
    return value
