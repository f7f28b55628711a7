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
    """Capture every FluxMail send of this test; yields the outbox.

    Registered through the ``pytest11`` entry point when fluxmail is installed, so a
    test only names it. The same as ``with fluxmail.testing.capture() as outbox:``
    around the test.

    Yields:
        The :class:`fluxmail.testing.Outbox` that receives the test's messages.

    Example:
        ```python
        def test_welcome_mail(fluxmail_outbox):
            mailer.create(subject="Welcome", recipients=["ada@example.org"], body="Hi").send()
            assert fluxmail_outbox.subjects == ["Welcome"]

        with fluxmail.testing.capture() as outbox:  # what pytest does around the test
            test_welcome_mail(outbox)
        ```
    """
    with capture() as outbox:
        yield outbox
