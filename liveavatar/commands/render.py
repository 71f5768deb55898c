"""`liveavatar render INPUT -o OUTPUT`: a video file in, the avatar video out."""
from __future__ import annotations

from pathlib import Path

import typer


def render(
    input: Path = typer.Argument(..., help="Video with (optional) audio, e.g. take3.mp4."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Output file: .webm (VP9 with alpha, transparent) or .mp4 (H.264)."),
    size: int = typer.Option(512, help="Output width and height in pixels."),
    fps: float | None = typer.Option(None, help="Output frame rate (default: the input's)."),
    character: str = typer.Option("nova", help="Character pack name."),
    emotion: str | None = typer.Option(None, help="Force one emotion for the whole clip."),
    generator: str = typer.Option("auto", help="Generator name (auto: rig2d or mesh per character; "
                                               "rig2d, mesh, neural or a plug-in)."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    background: str = typer.Option("green", help="Background for formats without alpha (.mp4): name or #rrggbb."),
    mapping: Path | None = typer.Option(None, help="Mapping file (TOML) for keywords, hotkeys, thresholds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Render the avatar for a recorded take, carrying its audio over."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from liveavatar.offline.render import RenderOptions, render_file
    from liveavatar.output.video_file import parse_color

    opts = RenderOptions(input=input, output=output, size=size, fps=fps, character=character,
                         emotion=emotion, generator=generator, device=device,
                         background=parse_color(background), mapping=mapping)
    console = Console(stderr=True)
    if quiet:
        result = render_file(opts)
    else:
        import time
        # The bar starts with the first rendered frame, so input errors print alone.
        bar = Progress(TextColumn("[bold]rendering"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(), console=console)
        task = bar.add_task("render", total=None, fps=0.0)
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if done == 1:
                bar.start()
            bar.update(task, completed=done, total=max(total, done) or None,
                       fps=done / max(time.perf_counter() - t0, 1e-6))
        try:
            result = render_file(opts, progress)
        finally:
            bar.stop()
    if not quiet:
        from rich.table import Table
        heard = f", keywords heard: {', '.join(result.keywords)}" if result.keywords else ""
        t = Table(title=f"{result.output}: {result.frames} frames, {result.seconds:.2f} s of video, "
                        f"{result.fps:.1f} fps overall{heard}")
        for col in ("stage", "median ms", "p95 ms", "calls"):
            t.add_column(col)
        for stage, s in result.timings.items():
            t.add_row(stage, f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", str(s["n"]))
        console.print(t)
