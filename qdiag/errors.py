"""qdiag's own errors and the one function that turns any exception into an
exit status and a single line for the terminal."""

from __future__ import annotations

from qdiag.exit_codes import ExitCode


class QdiagError(Exception):
    """An error the user can act on: `message` says what is wrong, `hint` how to fix it."""

    exit_code = ExitCode.UNKNOWN

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(QdiagError):
    """Bad flags or arguments."""


class ConfigError(QdiagError):
    """A configuration file or environment variable that cannot be used."""


class SnapshotError(QdiagError):
    """A file that is not a snapshot qdiag can read."""


class NothingProbed(QdiagError):
    """Every probe failed or was skipped: there is nothing to report."""


def exit_status(exc: BaseException) -> tuple[ExitCode, str]:
    """Map any exception to (exit status, one-line message). The only such mapping.

    The message is masked like a snapshot (qdiag/redact.py): an error can quote
    a URL, a config value or a library's message, and stderr ends up in
    tickets and CI logs too."""
    from qdiag.redact import scrub_message

    code, message = _exit_status(exc)
    return code, scrub_message(message)


def debug_traceback(exc: BaseException) -> str:
    """The traceback --debug prints, masked like the message."""
    from qdiag.redact import format_exception

    return format_exception(exc)


def _exit_status(exc: BaseException) -> tuple[ExitCode, str]:
    if isinstance(exc, QdiagError):
        return exc.exit_code, exc.one_line()
    # Click's usage errors, duck-typed: typer ships either click itself or its own copy of it.
    if hasattr(exc, "option_name") and hasattr(exc, "possibilities"):
        hint = f"did you mean {', '.join(exc.possibilities)}?" if exc.possibilities else "see --help"
        return ExitCode.UNKNOWN, f"unknown option {exc.option_name} ({hint})"
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        return ExitCode.UNKNOWN, f"{exc.format_message()} (see --help)"
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.UNKNOWN, "interrupted"
    if isinstance(exc, OSError) and exc.filename:
        reason = exc.strerror or str(exc)
        return ExitCode.UNKNOWN, f"{exc.filename}: {reason}"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ExitCode.UNKNOWN, f"internal error: {type(exc).__name__}: {first} (run again with --debug for the traceback)"
