"""A batch stopped by an error that would fail every message: ``batch_result`` counts what
happened and reports the batch's real size (against a real STARTTLS server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fluxmail import BulkSender, FluxMail
from fluxmail.errors import AuthenticationError
from servers import SMTPTestServer


def specs(count: int) -> Iterator[dict[str, object]]:
    for n in range(count):
        yield {"subject": f"n{n}", "recipients": ["a@example.com"], "body": "x"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stopped_list_reports_its_real_total(starttls_server: SMTPTestServer, mode: str) -> None:
    mailer = FluxMail(**starttls_server.fluxmail_kwargs(password="wrong"))
    bulk = BulkSender(mailer)

    def run() -> object:
        if mode == "sync":
            return bulk.send_batch(list(specs(5)), progress=False)
        return asyncio.run(bulk.send_batch_async(list(specs(5)), progress=False))

    with pytest.raises(AuthenticationError) as info:
        run()
    result = info.value.batch_result
    assert result["total"] == 5
    assert result["sent"] == 0
    assert starttls_server.messages == []


def test_a_stopped_generator_reports_how_many_it_read(starttls_server: SMTPTestServer) -> None:
    mailer = FluxMail(**starttls_server.fluxmail_kwargs(password="wrong"))
    with pytest.raises(AuthenticationError) as info:
        BulkSender(mailer).send_batch(specs(5), progress=False)
    total = info.value.batch_result["total"]
    assert 1 <= total < 5  # no len(): only what was read before the stop is known
