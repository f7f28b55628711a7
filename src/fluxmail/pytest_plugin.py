"""The pytest plugin (registered through the ``pytest11`` entry point).

``def test_signup(fluxmail_outbox): ...`` -- during the test, every FluxMail send lands
in ``fluxmail_outbox`` (a :class:`fluxmail.testing.Outbox`) instead of the network.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Outbox, capture

__all__ = ["fluxmail_outbox"]


@pytest.fixture
def fluxmail_outbox() -> Iterator[Outbox]:
    """Capture every FluxMail send of this test; yields the outbox."""
    with capture() as outbox:
        yield outbox
