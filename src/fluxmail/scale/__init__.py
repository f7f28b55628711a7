"""Sending at scale: exactly once per message across processes, one rate limit.

The engine-agnostic core of :mod:`fluxmail.celery`: the pure decisions (``_decide``), the
claim stores (``_store``: Redis; ``_memstore``: memory; ``_scribe``: writes sent without
waiting), the fleet-wide limiter (``_limiter``), the broker payload (``_payload``), one
try at a chunk of messages (``_chunk``), one process's courier (``_courier``) and the
fleet handle (``_fleet``). :class:`LocalFleet` is the in-process fallback: the same code without
a broker, for one machine and for tests. See ``docs/scale.md``.
"""

from __future__ import annotations

from ._decide import DeliveryResult, Status
from ._fleet import Fleet, LocalFleet, Settings

__all__ = ["DeliveryResult", "Fleet", "LocalFleet", "Settings", "Status"]
