"""`liveavatar obs ...`: owned by issue 7. Placeholder until that lands."""
import typer

app = typer.Typer(help="Set up the avatar as an OBS source (not built yet).", no_args_is_help=True)
