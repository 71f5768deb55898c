"""Where shipped models and character packs live, and safe joining inside them."""
from __future__ import annotations

import os
from pathlib import Path

from liveavatar.errors import UserError

_PKG = Path(__file__).resolve().parent


def models_dir() -> Path:
    """$LIVEAVATAR_MODELS, else the repository's models/ folder (editable installs), else the
    copy installed under <prefix>/share/liveavatar/models."""
    env = os.environ.get("LIVEAVATAR_MODELS")
    if env:
        return Path(env)
    repo = _PKG.parent / "models"
    if repo.is_dir():
        return repo
    import sys
    return Path(sys.prefix) / "share" / "liveavatar" / "models"


def user_characters_dir() -> Path:
    """Where imported characters live (never inside the installed package):
    $LIVEAVATAR_DATA_DIR/characters, else $XDG_DATA_HOME/liveavatar/characters, else
    ~/.local/share/liveavatar/characters. Not created here."""
    data = os.environ.get("LIVEAVATAR_DATA_DIR")
    if data:
        return Path(data) / "characters"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "liveavatar" / "characters"


def assets_dir() -> Path:
    return _PKG / "assets"


def safe_join(root: Path, rel: str, what: str = "path") -> Path:
    """Join `rel` under `root`, refusing anything that escapes it (.., absolute, symlinks out)."""
    root = root.resolve()
    p = (root / rel).resolve()
    if p != root and root not in p.parents:
        raise UserError(f"{what} {rel!r} points outside {root}")
    return p


def data_dir() -> Path:
    """The user's own data (imported actions, ...): $LIVEAVATAR_DATA_DIR, else
    $XDG_DATA_HOME/liveavatar, else ~/.local/share/liveavatar."""
    env = os.environ.get("LIVEAVATAR_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "liveavatar"


def actions_dir() -> Path:
    """Where imported and recorded actions are saved (one JSON file per action)."""
    return data_dir() / "actions"
