"""BulkSender: many messages over held connections, with callbacks, a rate limit, a journal
and a progress bar.

``_sender`` is the public class and its result, ``_state`` the per-batch bookkeeping that
reads :mod:`fluxmail.delivery.policy`, ``_progress`` the Rich bar drawn on a terminal.
"""

from ._sender import BulkResult, BulkSender

__all__ = ["BulkResult", "BulkSender"]
