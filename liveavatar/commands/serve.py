"""`liveavatar serve`: owned by issue 6 (server). Placeholder until that lands."""
from liveavatar.errors import UserError


def serve() -> None:
    """Not built yet."""
    raise UserError("`liveavatar serve` is not available in this build yet")
