"""`liveavatar action import|list|show|remove|export`: the user's own actions (motion files).

Imported and recorded actions live in the user's actions folder ($LIVEAVATAR_DATA_DIR/actions,
else the XDG data folder) as documented JSON files (liveavatar/conditioning/action_files.py);
a running service picks up a change within a second.
"""
from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from liveavatar.errors import UserError

app = typer.Typer(help="Import motion capture (BVH) as actions, list, show, remove and export them.",
                  no_args_is_help=True)


class PartsOpt(str, enum.Enum):
    WHOLE = "whole"
    UPPER = "upper"
    ARMS = "arms"
    LEGS = "legs"


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A BVH motion file (CMU, Mixamo, Animated Drawings, ... skeletons).")],
    name: Annotated[str, typer.Option("--name", help="Action name (lower case, digits, _ and -; not a built-in).")],
    start: Annotated[float, typer.Option("--start", help="Start at this time in the file (s).")] = 0.0,
    end: Annotated[float | None, typer.Option("--end", help="End at this time in the file (s).")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Loop until toggled off, not play once.")] = False,
    speed: Annotated[float, typer.Option("--speed", help="Playback speed factor (0.1-10).")] = 1.0,
    parts: Annotated[PartsOpt, typer.Option("--parts", help="Body parts the action moves.")] = PartsOpt.WHOLE,
    projection: Annotated[str | None, typer.Option(
        "--projection",
        help="Picture plane per body group: frontal, sagittal or pca, for all or per group "
             "(e.g. arms=sagittal,legs=pca). Default: trunk=frontal, arms=pca, legs=pca.")] = None,
    description: Annotated[str, typer.Option("--description", help="Free text shown in lists.")] = "",
    replace: Annotated[bool, typer.Option("--replace", help="Replace an imported action of the same name.")] = False,
) -> None:
    """Retarget a BVH file onto the character skeleton and save it as an action."""
    from liveavatar.conditioning import action_files as af
    af.check_name(name)
    if not replace and af.action_path(name).exists():
        raise UserError(f"an action called {name!r} exists already; use --replace or another name")
    act = af.import_bvh(file, name, start_s=start, end_s=end, loop=loop, speed=speed, parts=parts.value,
                        projection=projection, description=description)
    path = af.save_action(act, replace=replace)
    src = act.source
    planes = ", ".join(f"{k} {v:g} deg" for k, v in (src.planes_deg or {}).items()) if src else ""
    typer.echo(f"imported {name}: {act.duration_s:.2f} s, {len(act.frames)} frames at {act.fps:g} fps, "
               f"layout {src.layout if src else '?'}, planes ({planes}) -> {path}")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Built-in and imported actions."""
    from liveavatar.conditioning.action_files import ActionLibrary
    from liveavatar.types import ACTIONS
    lib = ActionLibrary()
    rows: list[dict[str, object]] = [{"name": a, "kind": "built-in"} for a in ACTIONS if a != "none"]
    for clip in lib.clips.values():
        rows.append({"name": clip.name, "kind": "imported", "duration_s": round(clip.duration_s, 2),
                     "loop": clip.loop, "parts": clip.parts})
    if as_json:
        typer.echo(json.dumps({"actions": rows, "folder": str(lib.user_folder), "errors": lib.errors}))
        return
    for r in rows:
        extra = (f"  {r['duration_s']:.2f} s  {r['parts']}{'  loop' if r['loop'] else ''}"
                 if r["kind"] == "imported" else "")
        typer.echo(f"{r['name']:<16} {r['kind']}{extra}")
    for err in lib.errors:
        typer.echo(f"skipped: {err}", err=True)
    typer.echo(f"(imported actions folder: {lib.user_folder})")


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="An imported action.")]) -> None:
    """An imported action's settings and source, as JSON."""
    from liveavatar.conditioning import action_files as af
    act = af.load_action(af.action_path(name))
    typer.echo(json.dumps({**act.summary(), "path": str(af.action_path(name))}, indent=2))


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="An imported action.")]) -> None:
    """Delete an imported action."""
    from liveavatar.conditioning import action_files as af
    typer.echo(f"removed {name} ({af.remove_action(name)})")


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="An imported or recorded action.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="BVH file to write.")],
) -> None:
    """Write an action as BVH (our skeleton in the picture plane; Mixamo joint names)."""
    from liveavatar.conditioning import action_files as af
    act = af.load_action(af.action_path(name))
    if out.is_dir():
        raise UserError(f"{out}: is a directory; give a file name such as {name}.bvh")
    try:
        af.write_atomic(out, af.export_bvh(act))
    except OSError as e:
        raise UserError(f"{out}: cannot write: {e.strerror or e}") from None
    typer.echo(f"exported {name}: {len(act.frames)} frames -> {out}")
