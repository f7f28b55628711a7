"""EmailTemplate: Jinja2 templates for email bodies, rendered in Jinja2's sandbox.

Choices: undefined variables are errors (``StrictUndefined``), because a mail that says
"Hello ," to ten thousand people is worse than one that fails loudly; templates run in
Jinja2's ``SandboxedEnvironment``, so a template written by an end user cannot reach
Python internals; ``autoescape=True`` HTML-escapes every variable (use it for HTML).
Rendered text that ends up in a header (a subject, say) still goes through ``create()``'s
checks, so a variable holding CR/LF cannot inject headers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingDependencyError, TemplateError

if TYPE_CHECKING:
    import jinja2


def _environment(autoescape: bool) -> jinja2.Environment:
    try:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError:
        raise MissingDependencyError("EmailTemplate", "templates", "jinja2") from None
    return SandboxedEnvironment(
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        loader=jinja2.DictLoader({}),  # include/import/extends find nothing: no file access
    )


class EmailTemplate:
    """A Jinja2 template for an email body, rendered in Jinja2's sandbox.

    Args:
        source: the template text.
        autoescape: HTML-escape every variable (use it for HTML bodies).
        name: how errors name the template (``from_file()`` gives the path).

    Raises:
        TemplateError: a syntax error, naming the line (code ``template_error``).
        MissingDependencyError: Jinja2 is not installed (``pip install -e
            ".[templates]"``; code ``missing_dependency``).

    Example:
        ```python
        assert EmailTemplate("Hi {{ name }}").render(name="Ann") == "Hi Ann"
        ```
    """

    def __init__(self, source: str, autoescape: bool = False, *, name: str = "<string>") -> None:
        if not isinstance(source, str):
            raise TemplateError("template source must be a string")
        self.source = source
        self.autoescape = autoescape
        self.name = name
        environment = _environment(autoescape)
        import jinja2

        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"template syntax error in {name}, line {exc.lineno}: {exc.message}"
            ) from exc

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], autoescape: bool = False) -> EmailTemplate:
        """Load a UTF-8 template file.

        Args:
            path: the file to read, once, now.
            autoescape: as for the constructor.

        Returns:
            The template, named after ``path`` in its errors.

        Raises:
            TemplateError: the file does not exist (code ``template_not_found``), cannot
                be read or decoded, or has a syntax error (code ``template_error``).

        Example:
            ```python
            Path("receipt.txt").write_text("Thanks {{ name }}!", encoding="utf-8")
            receipt = EmailTemplate.from_file("receipt.txt")
            assert receipt.render(name="Ada") == "Thanks Ada!"
            ```
        """
        file = Path(path)
        try:
            source = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TemplateError(
                f"template file not found: {file}", code="template_not_found"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read template file {file}: {exc}") from exc
        return cls(source, autoescape=autoescape, name=str(file))

    def render(self, **context: Any) -> str:
        """Render the template with the given variables.

        Args:
            **context: the template's variables.

        Returns:
            The rendered text.

        Raises:
            TemplateError: a variable the template uses is not given, the template tried
                to include, import or extend another template (never allowed), or did
                something the sandbox forbids (code ``template_error``; the message names
                the template line).

        Example:
            ```python
            assert EmailTemplate("{{ n }} new").render(n=3) == "3 new"
            ```
        """
        import jinja2

        try:
            return self._template.render(**context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"template {self.name}, line {_template_line(exc)}: {exc.message}"
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {self.name} tried to include, import or extend {exc.name!r}: "
                "an EmailTemplate is self-contained and never reads other files"
            ) from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"template {self.name} tried something unsafe: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.name}: {exc}") from exc

    def __repr__(self) -> str:
        return f"EmailTemplate({self.name!r}, autoescape={self.autoescape})"


def _template_line(exc: BaseException) -> int | str:
    """The template line being rendered when ``exc`` was raised (Jinja2 maps template
    frames to the pseudo-file ``<template>``)."""
    line: int | str = "?"
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
