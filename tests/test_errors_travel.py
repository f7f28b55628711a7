"""Errors travel: every FluxMailException pickles with all it knows.

Errors cross process pools (``concurrent.futures``, ``multiprocessing``) and task queues
(Celery with the pickle serializer), which rebuild them from a pickle. The classes are
found by walking the package, so a new class is covered without touching this file.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest

import fluxmail
from fluxmail.errors import (
    AuthenticationError,
    ConnectError,
    FluxMailException,
    OutcomeUnknownError,
    RecipientsRefusedError,
    SMTPResponseError,
)
from helpers import raise_refusal

#: What a constructor parameter of that name is given (a new parameter needs a value here).
ARGUMENTS: dict[str, Any] = {
    "message": "the server said no",
    "feature": "DKIM signing",
    "extra": "dkim",
    "module": "dkimpy",
    "smtp_code": 451,
    "enhanced_code": "4.7.1",
    "server_message": "try again later",
    "refused": {"a@example.com": (450, "mailbox busy")},
    "message_id": "<m1@example.com>",
    "transient": True,
    "batch_result": {"sent": 2, "failed": 1, "errors": []},
    "status": 429,
    "graph_code": "ErrorInvalidRecipients",
    "retry_after": 2.5,
}
ATTRIBUTES = (
    "code",
    "message",
    "smtp_code",
    "enhanced_code",
    "server_message",
    "refused",
    "message_id",
    "transient",
    "batch_result",
    "extra",
    "status",
    "graph_code",
    "retry_after",
)


def _subclasses(cls: type[FluxMailException]) -> Iterator[type[FluxMailException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _every_class() -> list[type[FluxMailException]]:
    for module in pkgutil.walk_packages(fluxmail.__path__, "fluxmail."):
        importlib.import_module(module.name)  # classes defined anywhere in the package
    found = {FluxMailException, *_subclasses(FluxMailException)}
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


CLASSES = _every_class()


def _build(cls: type[FluxMailException]) -> FluxMailException:
    """An instance with every constructor argument given."""
    kwargs: dict[str, Any] = {}
    positional: list[Any] = []
    for name, parameter in inspect.signature(cls).parameters.items():
        if name == "code":
            continue  # the class's own code: it must survive too
        assert name in ARGUMENTS, f"{cls.__name__}({name}=...): add a value to ARGUMENTS"
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[name] = ARGUMENTS[name]
        else:
            positional.append(ARGUMENTS[name])
    return cls(*positional, **kwargs)


def _known(exc: BaseException) -> dict[str, Any]:
    return {name: getattr(exc, name) for name in ATTRIBUTES if hasattr(exc, name)}


def test_the_walk_finds_classes_outside_errors_py() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"JournalMismatchError", "SMTPResponseError", "MissingDependencyError"} <= names
    assert len(CLASSES) >= 25


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_everything_it_knows(cls: type[FluxMailException]) -> None:
    original = _build(cls)
    clone = pickle.loads(pickle.dumps(original))
    assert type(clone) is cls
    assert str(clone) == str(original)
    assert clone.args == original.args
    assert clone.code == cls.code
    assert _known(clone) == _known(original)
    assert vars(clone) == vars(original)
    if "batch_result" in inspect.signature(cls).parameters:
        assert clone.batch_result == ARGUMENTS["batch_result"]


def test_an_explicit_code_and_nested_errors_survive() -> None:
    inner = RecipientsRefusedError(
        "every recipient refused", smtp_code=550, refused={"x@example.com": (550, "no")}
    )
    outer = ConnectError(
        "the server went away",
        code="custom_code",
        transient=False,
        batch_result={"sent": 3, "errors": [(4, inner)]},
    )
    clone = pickle.loads(pickle.dumps(outer))
    assert (clone.code, clone.transient) == ("custom_code", False)
    ((index, error),) = clone.batch_result["errors"]
    assert index == 4
    assert isinstance(error, RecipientsRefusedError)
    assert (error.code, error.smtp_code, error.refused) == (
        "recipients_refused",
        550,
        {"x@example.com": (550, "no")},
    )


def test_an_error_that_refers_to_itself_pickles() -> None:
    results: dict[str, Any] = {"errors": []}
    error = OutcomeUnknownError("lost after the dot", message_id="<u@x>", batch_result=results)
    results["errors"].append((0, error))
    clone = pickle.loads(pickle.dumps(error))
    assert clone.batch_result["errors"][0][1] is clone
    assert clone.message_id == "<u@x>"


def test_an_error_raised_in_a_worker_process_arrives_whole() -> None:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        future = pool.submit(raise_refusal, 452, "4.2.2")
        with pytest.raises(SMTPResponseError) as info:
            future.result(timeout=60)
    error = info.value
    assert (error.code, error.smtp_code, error.enhanced_code) == ("message_refused", 452, "4.2.2")
    assert error.server_message == "mailbox full"
    assert error.transient is True


def test_transient_is_a_constructor_argument() -> None:
    assert ConnectError("x").transient is True  # the class default
    assert ConnectError("x", transient=False).transient is False
    assert AuthenticationError("x", smtp_code=454).transient is True  # 4xx: try later
    assert AuthenticationError("x", transient=True).transient is True
    assert SMTPResponseError("x", smtp_code=550).transient is False


def test_with_batch_result_copies_and_leaves_the_original_alone() -> None:
    try:
        try:
            raise OSError("connection reset")
        except OSError as low:
            raise ConnectError("the connection broke", transient=True) from low
    except ConnectError as caught:
        original = caught
    stopped = original.with_batch_result({"sent": 1})
    assert original.batch_result is None
    assert type(stopped) is ConnectError
    assert (stopped.batch_result, stopped.code, stopped.transient) == (
        {"sent": 1},
        *(
            original.code,
            original.transient,
        ),
    )
    assert isinstance(stopped.__cause__, OSError)
    assert stopped.__traceback__ is original.__traceback__
