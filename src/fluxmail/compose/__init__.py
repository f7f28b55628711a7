"""Message -> Composed: the one composing step (``_composer``), the MIME writer
(``_mime``), the dry-run preview (``_preview``) and iCalendar invites (``_calendar``).
DKIM signing, applied to the composed bytes, is the public :mod:`fluxmail.dkim`."""
