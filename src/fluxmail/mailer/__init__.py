"""FluxMail, the object the API page describes (``_facade``): create(), send(), dry runs,
display(), from_env(); ``_pending`` keeps the message between create() and send(),
``_prebuilt`` readies a message the caller built (``send_message()``)."""

from ._facade import FluxMail
from ._receipt import SendReceipt

__all__ = ["FluxMail", "SendReceipt"]
