"""`liveavatar train`: owned by issue 8 (neural). Placeholder until that lands."""
from liveavatar.errors import UserError


def train() -> None:
    """Not built yet."""
    raise UserError("`liveavatar train` is not available in this build yet")
