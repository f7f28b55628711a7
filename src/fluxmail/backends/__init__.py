"""Backends that plug fluxmail into other frameworks.

* :mod:`fluxmail.backends.django`: ``FluxMailBackend``, a Django email backend
  (``EMAIL_BACKEND = "fluxmail.backends.django.FluxMailBackend"``).

``fluxmail.backends.FluxMailBackend`` is the same class (the path fluxmail 0.3.3 also
offered); it is imported on first access, so ``import fluxmail`` never pulls in Django.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .django import FluxMailBackend

__all__ = ["FluxMailBackend"]


def __getattr__(name: str) -> Any:
    if name == "FluxMailBackend":
        from .django import FluxMailBackend

        return FluxMailBackend
    raise AttributeError(f"module 'fluxmail.backends' has no attribute {name!r}")
