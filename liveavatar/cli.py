"""The `liveavatar` command. Each command lives in liveavatar/commands/<name>.py and imports its
heavy dependencies lazily, so `--help` stays fast. UserError becomes one line + exit code 2."""
from __future__ import annotations

import sys

import typer

from liveavatar.commands import bench, doctor, obs, perceive, render, serve, train
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


def main() -> None:
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
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
