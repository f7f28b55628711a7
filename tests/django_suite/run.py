"""Run Django's own SMTP backend tests against fluxmail's Django backend.

Django's source distribution ships ``tests/mail/tests.py``; its ``SMTPBackendTests`` and
``SMTPBackendStoppedServerTests`` start an aiosmtpd server and exercise
``django.core.mail.backends.smtp.EmailBackend``. This script runs those two classes with
that name bound to :class:`fluxmail.backends.django.FluxMailBackend` (and
``EMAIL_BACKEND`` pointing at it), so every ``smtp.EmailBackend(...)`` and every
``get_connection()`` in them builds our backend.

Nothing of Django's is vendored here: the sdist of the *installed* Django version is
fetched with ``pip download`` into a cache directory the first time (``--cache DIR``,
default ``$FLUXMAIL_DJANGO_SDIST_CACHE`` or ``~/.cache/fluxmail-django-sdist``), and only
``tests/mail/`` is unpacked, into a temporary directory.

Usage::

    python tests/django_suite/run.py [--cache DIR] [--json FILE] [-v]

Prints one line per test and a closing ``N passed, N failed`` line; ``--json`` writes
``{"passed": [...], "failed": {test: reason}}``. Exit status 0 whatever the count (the
pytest wrapper, tests/test_django_suite.py, decides what is acceptable), 2 when the tests
could not be fetched or loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

CLASSES = ("SMTPBackendTests", "SMTPBackendStoppedServerTests")
BACKEND = "fluxmail.backends.django.FluxMailBackend"


def default_cache() -> Path:
    env = os.environ.get("FLUXMAIL_DJANGO_SDIST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fluxmail-django-sdist"


def fetch_sdist(version: str, cache: Path) -> Path:
    """The path of ``Django-<version>.tar.gz`` in ``cache``, downloading it if missing."""
    cache.mkdir(parents=True, exist_ok=True)
    for candidate in cache.glob("*.tar.gz"):
        if candidate.name.lower() == f"django-{version}.tar.gz":
            return candidate
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"django=={version}",
            "-d",
            str(cache),
        ],
        check=True,
    )
    return fetch_sdist(version, cache)


def extract_mail_tests(sdist: Path, into: Path) -> Path:
    """Unpack ``tests/mail/`` of the sdist into ``into/mail``; return ``into``."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/tests/mail/" in m.name]
        for member in members:
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices from an archive
            relative = member.name.split("/tests/", 1)[1]
            target = into / relative
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    return into


def configure_django() -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="fluxmail-django-suite",
        USE_TZ=True,
        INSTALLED_APPS=[],
        DATABASES={},
        EMAIL_BACKEND=BACKEND,
    )
    django.setup()
    # Bind Django's SMTP backend name to ours before the test module imports it.
    from django.core.mail.backends import smtp

    from fluxmail.backends.django import FluxMailBackend

    smtp.EmailBackend = FluxMailBackend  # type: ignore[misc]


class _Recorder(unittest.TextTestResult):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.passed: list[str] = []
        self.failed: dict[str, str] = {}

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.passed.append(test.id())

    def _failed(self, test: unittest.TestCase, err: object) -> None:
        exc_type, exc, _tb = err  # type: ignore[misc]
        line = f"{exc_type.__name__}: {exc}".splitlines()
        self.failed[test.id()] = " ".join(line)[:300]

    def addFailure(self, test: unittest.TestCase, err: object) -> None:
        super().addFailure(test, err)  # type: ignore[arg-type]
        self._failed(test, err)

    def addError(self, test: unittest.TestCase, err: object) -> None:
        super().addError(test, err)  # type: ignore[arg-type]
        self._failed(test, err)

    def addSubTest(self, test, subtest, err):  # type: ignore[no-untyped-def]
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._failed(test, err)


def run(cache: Path, verbosity: int) -> _Recorder:
    import django

    sdist = fetch_sdist(django.get_version(), cache)
    workdir = Path(tempfile.mkdtemp(prefix="fluxmail-django-suite-"))
    extract_mail_tests(sdist, workdir)
    sys.path.insert(0, str(workdir))
    configure_django()
    import importlib

    module = importlib.import_module("mail.tests")
    module.SMTPBackendTests.email_backend = BACKEND
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(
        loader.loadTestsFromTestCase(getattr(module, name)) for name in CLASSES
    )
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=verbosity, resultclass=_Recorder)
    result = runner.run(suite)
    assert isinstance(result, _Recorder)
    # A test that failed in one subtest and passed overall is still a failure.
    result.passed = [t for t in result.passed if t not in result.failed]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--json", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = run(args.cache, 2 if args.verbose else 1)
    except (OSError, subprocess.CalledProcessError, ImportError) as exc:
        print(f"cannot run Django's tests: {exc}", file=sys.stderr)
        return 2
    for name, reason in sorted(result.failed.items()):
        print(f"FAILED {name}: {reason}")
    print(f"{len(result.passed)} passed, {len(result.failed)} failed")
    if args.json:
        args.json.write_text(
            json.dumps({"passed": sorted(result.passed), "failed": result.failed}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
