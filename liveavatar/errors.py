"""User-facing errors. Anything raised as UserError reaches the user as one line (CLI: exit 2,
HTTP: 4xx), never as a traceback."""
from __future__ import annotations

import re

#: Line breaks of every kind Python's str.splitlines() honours, plus other C0 controls (a file name
#: or a manifest key can carry any of them; echoed raw they would split or garble the message).
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")

#: Longest message the user sees; a pasted blob in a key name must not flood a terminal.
MAX_MESSAGE = 2000


def one_line(message: object) -> str:
    """`message` as one line: every run of line breaks/control characters becomes one space."""
    text = _BREAKS.sub(" ", str(message)).strip()
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class UserError(Exception):
    """A mistake in the user's input (file, option, config, request). Its message is one line
    whatever the input held: every message passes through one_line()."""

    exit_code = 2
    http_status = 400

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(message), *args)


class NotFoundError(UserError):
    http_status = 404


class ConfigError(UserError):
    """Bad config/mapping/manifest file; the message names the file and key."""
