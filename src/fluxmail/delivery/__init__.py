"""Delivery rules shared by every sending path: the failure policy (:mod:`.policy`), the
backoff arithmetic (``_retry``), the rate limiter (``_ratelimit``) and BulkSender's
resumable journal (``_journal``)."""
