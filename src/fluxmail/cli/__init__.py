"""The ``fluxmail`` command (``_command``), its ``demo`` and ``serve`` subcommands
(``_demo``, ``_serve``) and :mod:`fluxmail.cli.localserver`, the local SMTP server they
and the testing kit run."""

from ._command import UsageProblem, cli, demo, main, serve

__all__ = ["UsageProblem", "cli", "demo", "main", "serve"]
