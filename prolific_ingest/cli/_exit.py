"""Errors -> exit codes, and error messages in command-line terms.

Exit codes (docs/cli.md documents them)
---------------------------------------
0 success · 1 other library error · 2 usage or configuration (incl. missing token) ·
3 authentication / permission · 4 not found / not cached · 5 export failed or timed out ·
6 download or archive problem · 7 lake (--out) failed · 8 some batches of several failed ·
130 interrupted.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from .. import errors

#: The first class ``exc`` is an instance of gives the exit code and the default hint.
EXIT_CODES: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.MissingTokenError, 2, ""),
    (
        errors.MissingPathError,
        4,
        "check the path (a relative path is taken from the current folder)",
    ),
    (errors.ConfigurationError, 2, ""),
    (errors.AuthenticationError, 3, "check PROLIFIC_TOKEN (Prolific app: Settings > API tokens)"),
    (errors.PermissionDeniedError, 3, "the token's account has no access to this resource"),
    (errors.NotFoundError, 4, "check the id (404 can also mean no access)"),
    (errors.CacheMissError, 4, ""),
    (errors.ExportTimeoutError, 5, ""),
    (errors.ExportError, 5, "request a new export (run the command again with --max-age 0)"),
    (errors.DownloadError, 6, ""),
    (errors.ArchiveError, 6, ""),
    (errors.SinkError, 7, ""),
    (errors.ProlificIngestError, 1, ""),
    (OSError, 1, "a local or remote file operation failed"),
)

_TOKEN_MESSAGE = (
    "No Prolific API token: set the PROLIFIC_TOKEN environment variable "
    "(export PROLIFIC_TOKEN=...). Create a token in the Prolific app under Settings > API tokens."
)
#: Library spellings of parameters (``incremental=True``, ``export_id='x'``) -> CLI options.
_FLAGS = {
    "cache": "--cache",
    "export_id": "--export-id",
    "incremental": "--incremental",
    "max_age": "--max-age",
    "offline": "--offline",
    "on_bad_records": "--on-bad-records",
    "output": "--out",
    "overwrite": "--overwrite",
    "partition_by": "--partition-by",
    "since": "--since",
    "storage_options": "--storage-options",
    "study_id": "--study-id",
    "timeout": "--timeout",
    "until": "--until",
}
_PARAM = re.compile(
    r"\b(" + "|".join(_FLAGS) + r")=(True\b|False\b|'([^']*)'|\.\.\.|)"
    r"|\b(" + "|".join(_FLAGS) + r")\b(?=[^=]|$)"
)
#: Phrases about the token, which the CLI takes from the environment only.
_TOKEN_PHRASES = ((" (or token=)", ""), (" or pass token=... .", "."), ("token=", "PROLIFIC_TOKEN"))


def _flag(match: re.Match[str]) -> str:
    if match.group(4):  # a bare parameter name: only names with an underscore are unambiguous
        name = match.group(4)
        return _FLAGS[name] if "_" in name else name
    flag = _FLAGS[match.group(1)]
    return f"{flag} {match.group(3)}" if match.group(3) is not None else flag


def cli_message(exc: BaseException) -> str:
    """The message of ``exc`` in command-line terms (options, not Python parameters)."""
    if isinstance(exc, errors.MissingTokenError):
        return _TOKEN_MESSAGE
    text = str(exc)
    for phrase, replacement in _TOKEN_PHRASES:
        text = text.replace(phrase, replacement)
    text = text.replace("call again with", "run the command again with")
    return _PARAM.sub(_flag, text)


def error_summary(exc: BaseException) -> str:
    """One line naming the error's class and its message in CLI terms: one failed id of several."""
    return f"{type(exc).__name__}: {cli_message(exc)}"


def _hint_for(exc: BaseException, hint: str) -> str:
    if isinstance(exc, errors.ExportTimeoutError) and exc.export_id:
        return (
            f"the export is still being generated; resume it with --export-id {exc.export_id} "
            "(and a longer --timeout if needed)"
        )
    return hint


def _fail(exc: BaseException) -> int:
    for cls, code, default_hint in EXIT_CODES:
        if isinstance(exc, cls):
            hint = _hint_for(exc, default_hint)
            text = f"error: {cli_message(exc)}"
            if hint:
                text += f"\nhint: {hint}"
            print(text, file=sys.stderr)
            return code
    raise exc


def run(command: Callable[[], int], *, debug: bool) -> int:
    """Run ``command``; turn a library error or ``OSError`` into its message and exit code.

    With ``debug`` the error propagates (a traceback) instead.
    """
    try:
        return int(command())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (errors.ProlificIngestError, OSError) as exc:
        if debug:
            raise
        return _fail(exc)
