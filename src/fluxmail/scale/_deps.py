"""The optional packages of ``fluxmail[celery]``, imported on first use."""

from __future__ import annotations

from types import ModuleType

from ..errors import MissingDependencyError


def _load(name: str, feature: str) -> ModuleType:
    from importlib import import_module

    try:
        return import_module(name)
    except ImportError:
        raise MissingDependencyError(feature, "celery", name) from None


def redis_module() -> ModuleType:
    return _load("redis", "the Redis claim store")


def limits_module(submodule: str) -> ModuleType:
    return _load(f"limits.{submodule}", "per-minute/hour/day quotas")


def celery_module(submodule: str = "") -> ModuleType:
    return _load(f"celery.{submodule}" if submodule else "celery", "fluxmail.celery")
