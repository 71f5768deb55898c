"""User-facing errors. Anything raised as UserError reaches the user as one line (CLI: exit 2,
HTTP: 4xx), never as a traceback."""


class UserError(Exception):
    """A mistake in the user's input (file, option, config, request). Message is one line."""

    exit_code = 2
    http_status = 400


class NotFoundError(UserError):
    http_status = 404


class ConfigError(UserError):
    """Bad config/mapping/manifest file; the message names the file and key."""
