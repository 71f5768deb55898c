"""`liveavatar character import|list|show|remove`: your own character from one picture."""
from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Import your own character from a picture, list, show or remove characters.",
                  no_args_is_help=True)


PictureArg = typer.Argument(..., help="PNG, WebP, JPEG, or a layered PSD (layers named head, body, arm_l, "
                            "forearm_r, ...; see the README).")


@app.command("import")
def import_(picture: Path = PictureArg,
            name: str = typer.Option(..., "--name", help="Character name: a-z 0-9 _ - (used by --character)."),
            display_name: str = typer.Option("", "--display-name", help="Name shown in the studio."),
            licence: str = typer.Option("", "--licence", help="Licence of the art (kept in character.json)."),
            author: str = typer.Option("", "--author", help="Who made the art."),
            cutout: str = typer.Option("auto", "--cutout", help="auto, alpha (transparent art), paper "
                                       "(drawing on a flat background) or photo (a real person)."),
            replace: bool = typer.Option(False, "--replace", help="Overwrite an imported character of that name."),
            ) -> None:
    """Cut the figure out, rig it automatically and save it as a character (fix the rig in the
    studio's rig editor if needed)."""
    from liveavatar.authoring.importer import DEFAULT_LICENCE, import_character
    res = import_character(picture, name, display_name=display_name, licence=licence or DEFAULT_LICENCE,
                           author=author, method=cutout, replace=replace)
    m = res.manifest
    typer.echo(f"imported {m.name!r} into {res.folder} ({m.canvas[0]}x{m.canvas[1]} px, {res.method} cut-out, "
               f"joints by {res.joints_by}, face by {m.face.detected_by}, framing {m.framing}, "
               f"{res.seconds:.1f} s)")
    typer.echo(f"use it: liveavatar serve --character {m.name}  (fix the rig: studio > New character)")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Shipped and imported characters."""
    from liveavatar.generation.characters import catalog
    entries = list(catalog().values())
    if as_json:
        typer.echo(json.dumps([{"name": e.name, "kind": e.kind, "shipped": e.shipped, "folder": str(e.folder)}
                               for e in entries]))
        return
    for e in entries:
        typer.echo(f"{e.name:<20} {e.kind:<6} {'shipped' if e.shipped else 'imported':<9} {e.folder}")


@app.command("show")
def show(name: str = typer.Argument(..., help="Character name.")) -> None:
    """The character's manifest (rig, face, layers) as JSON."""
    from liveavatar.generation.characters import find
    from liveavatar.generation.mesh import pack
    entry = find(name)
    if entry.kind == "mesh":
        m = pack.read_manifest(entry.folder)
        out = {"folder": str(entry.folder), "shipped": entry.shipped, **m.model_dump(mode="json")}
    else:
        from liveavatar.generation.characters import read_manifest
        out = {"folder": str(entry.folder), "shipped": entry.shipped, "kind": "rig2d",
               **read_manifest(entry.folder).model_dump(mode="json", exclude={"face"})}
    typer.echo(json.dumps(out, indent=1))


@app.command("remove")
def remove(name: str = typer.Argument(..., help="Imported character to delete.")) -> None:
    """Delete an imported character (shipped ones stay)."""
    from liveavatar.authoring.importer import remove_character
    folder = remove_character(name)
    typer.echo(f"removed {name!r} ({folder})")
