"""Backends that plug fluxmail into other frameworks.

* :mod:`fluxmail.backends.django`: ``FluxMailBackend``, a Django email backend
  (``EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"``).

Nothing is imported here, so ``import fluxmail`` never pulls in a framework.
"""
