"""The `liveavatar` command. Each command lives in liveavatar/commands/<name>.py and imports its
heavy dependencies lazily, so `--help` stays fast. UserError becomes one line + exit code 2."""
from __future__ import annotations

import sys

import typer

from liveavatar.commands import action, bench, character, doctor, obs, perceive, render, serve, train
from liveavatar.errors import UserError

app = typer.Typer(help="LiveAvatar: camera and microphone in, a generated character out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("render")(render.render)
app.command("perceive")(perceive.perceive)
app.command("doctor")(doctor.doctor)
app.command("serve")(serve.serve)
app.command("train")(train.train)
app.add_typer(bench.app, name="bench")
app.add_typer(obs.app, name="obs")
app.add_typer(action.app, name="action")
app.add_typer(character.app, name="character")


def _quiet_native_logs() -> None:
    """MediaPipe/TFLite write C++ log lines straight to file descriptor 2 (absl ignores
    GLOG_minloglevel before InitializeLog). Point fd 2 at /dev/null and keep Python's own
    stderr on a duplicate, so users see our messages and not the native noise.
    LIVEAVATAR_NATIVE_LOGS=1 keeps them."""
    import os
    if os.environ.get("LIVEAVATAR_NATIVE_LOGS") or not hasattr(os, "dup2"):
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(saved, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
    except OSError:
        pass


def main() -> None:
    _quiet_native_logs()
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors land here in standalone_mode=False
        import click
        # typer >= 0.22 vendors click: its usage errors are typer.TyperException, not click's.
        if isinstance(e, click.ClickException) or (isinstance(e, typer.TyperException)
                                                   and hasattr(e, "show")):
            e.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
