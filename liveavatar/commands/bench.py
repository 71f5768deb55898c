"""`liveavatar bench ...`: one sub-command per benchmark; `bench all` gathers them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Benchmarks: medians and p95 after warm-up; results as a table and JSON.",
                  no_args_is_help=True)

JsonOpt = typer.Option(None, "--json", help="Also write the result as JSON to this file.")


def _finish(res: dict, json_path: Path | None) -> None:
    from liveavatar.bench import report
    report.print_table(res)
    if json_path:
        report.save(res, json_path)


@app.command()
def perception(seconds: float = typer.Option(20.0, help="Measured duration after warm-up."),
               json_path: Path | None = JsonOpt) -> None:
    """Pose + face + hands at 640x480 on real media, and voice-analysis CPU cost."""
    from liveavatar.bench import perception as b
    _finish(b.run(seconds=seconds), json_path)


@app.command()
def generator(generator: str = typer.Option("rig2d", "--generator", "-g", help="Generator name."),
              device: str | None = typer.Option(None, help="cpu or cuda (default: best available)."),
              batches: str = typer.Option("1,8", help="Comma-separated batch sizes (sessions)."),
              size: int | None = typer.Option(None, help="Output size (default: the generator's)."),
              frames: int = typer.Option(120, help="Measured frames per batch size."),
              json_path: Path | None = JsonOpt) -> None:
    """Frames per second of a generator at several batch sizes."""
    from liveavatar.bench import generator as b
    _finish(b.run(generator=generator, device=device, batches=[int(x) for x in batches.split(",")],
                  size=size, frames=frames), json_path)


@app.command()
def character(frames: int = typer.Option(60, help="Measured frames per render case."),
              imports: int = typer.Option(3, help="Timed imports of the 1000 px picture."),
              json_path: Path | None = JsonOpt) -> None:
    """Import of a 1000 px picture, mesh render times, and mesh fidelity (SSIM, area, flips)."""
    from liveavatar.bench import character as b
    _finish(b.run(frames=frames, imports=imports), json_path)


@app.command("neural-quality")
def neural_quality(character: str = typer.Option("nova", help="Character whose model is checked."),
                   frames: int = typer.Option(256, help="Held-out conditionings."),
                   json_path: Path | None = JsonOpt) -> None:
    """Shipped neural model vs. its rig2d teacher: PSNR/SSIM on held-out conditionings, and
    MediaPipe-on-output fidelity."""
    from liveavatar.bench import neural_quality as b
    _finish(b.run(character=character, frames=frames), json_path)


@app.command()
def conditioning(ticks: int = typer.Option(3000), json_path: Path | None = JsonOpt) -> None:
    """Cost of one conditioning tick (cues -> conditioning)."""
    from liveavatar.bench import conditioning as b
    _finish(b.run(ticks=ticks), json_path)


@app.command()
def actions(imports: int = typer.Option(7, help="Timed imports of a 30 s BVH."),
            ticks: int = typer.Option(3000, help="Conditioning ticks with and without an imported action."),
            json_path: Path | None = JsonOpt) -> None:
    """Importing a 30 s BVH, and what a playing imported action adds to a conditioning tick."""
    from liveavatar.bench import actions as b
    _finish(b.run(imports=imports, ticks=ticks), json_path)


@app.command()
def e2e(seconds: float = typer.Option(20.0),
        size: int | None = typer.Option(None, min=64, max=2048, help="Avatar size `serve` renders "
                                           "(default: serve's own, 256 on CPU, 512 on a GPU)."),
        hog: int = typer.Option(0, "--hog", min=0, max=256, help="Measure again beside this many busy-loop "
                                "processes at normal priority (one per core: a game + OBS on the same PC)."),
        character: str | None = typer.Option(None, help="Character `serve` starts with (default: serve's, "
                                             "nova); an imported one, e.g. astro, goes through the mesh generator."),
        json_path: Path | None = JsonOpt) -> None:
    """Glass-to-glass and trigger-to-pixel latency through `serve` with a real browser."""
    from liveavatar.bench import e2e as b
    _finish(b.run(seconds=seconds, size=size, hog=hog, character=character), json_path)


@app.command()
def render(seconds: float = typer.Option(10.0, help="Length of the generated 640x480 clip."),
           json_path: Path | None = JsonOpt) -> None:
    """Offline render speed (fps) of a 640x480 clip of a real person with speech."""
    from liveavatar.bench import render as b
    _finish(b.run(seconds=seconds), json_path)


@app.command()
def feed(seconds: float = typer.Option(10.0, help="Measured duration per frame size."),
         json_path: Path | None = JsonOpt) -> None:
    """MPEG-TS feed for OBS: sink cost per frame and send-to-decoded latency."""
    from liveavatar.bench import feed as b
    _finish(b.run(seconds=seconds), json_path)


@app.command()
def interop(seconds: float = typer.Option(20.0, help="Length of the VMC stream fed to the service."),
            size: int = typer.Option(256, help="Avatar size of the service under test."),
            hotkeys: int = typer.Option(40, help="VTS hotkey triggers timed."),
            json_path: Path | None = JsonOpt) -> None:
    """VMC send cost per tick, VMC-in receive-to-render latency, VTS hotkey-to-rendered-frame."""
    from liveavatar.bench import interop as b
    _finish(b.run(seconds=seconds, size=size, hotkeys=hotkeys), json_path)


@app.command()
def fidelity(clips: str = typer.Option("d0,d3,d9,two_people_room,basketball",
                                       help="Comma-separated real clips from ../shared/media."),
             generator: str = typer.Option("rig2d", "--generator", "-g", help="Generator name."),
             character: str = typer.Option("nova", help="Character pack name."),
             size: int = typer.Option(512, min=64, max=2048, help="Rendered size."),
             device: str | None = typer.Option(None, help="cpu or cuda (default: best available)."),
             seconds: float | None = typer.Option(None, help="Measure only the first seconds of each clip."),
             json_path: Path | None = JsonOpt) -> None:
    """The avatar against a real person: render real clips as `liveavatar render` does and read the
    person and the avatar with MediaPipe (face, body, framing, false triggers, emotion)."""
    from liveavatar.bench import fidelity as b
    _finish(b.run(clips=[c.strip() for c in clips.split(",") if c.strip()], generator=generator,
                  character=character, size=size, device=device, seconds=seconds), json_path)


@app.command()
def workers(size: int = typer.Option(256, min=64, max=2048, help="Avatar size rendered."),
            frames: int = typer.Option(150, help="Measured frames per case after warm-up."),
            sessions: int = typer.Option(4, min=1, max=64, help="Sessions in the batched case."),
            placements: int = typer.Option(10, help="New sessions placed (timed)."),
            json_path: Path | None = JsonOpt) -> None:
    """The generator on Ray Serve replicas (a local cluster): per-frame overhead of the round trip vs
    in-process, time to place a new session, sessions per replica."""
    try:
        import ray.serve  # noqa: F401

        from liveavatar.bench import workers as b
    except ImportError:
        from liveavatar.errors import UserError
        raise UserError("bench workers needs Ray Serve: pip install 'liveavatar[ray]'") from None
    _finish(b.run(size=size, frames=frames, sessions=sessions, placements=placements), json_path)


@app.command()
def sfu(viewers: str = typer.Option("1,10,25", help="Comma-separated viewer counts."),
        seconds: float = typer.Option(8.0, help="Measured seconds per viewer count, path and round."),
        rounds: int = typer.Option(2, min=1, max=10, help="Rounds over all counts (their samples pooled)."),
        glass: bool = typer.Option(True, "--glass/--no-glass", help="Also glass-to-glass with real Chromium "
                                                                   "(studio camera -> viewer page), both ways."),
        size: int = typer.Option(256, help="Avatar size of the service under test."),
        json_path: Path | None = JsonOpt) -> None:
    """Service CPU as viewers are added, through a local Janus (serve --sfu) vs directly; Janus
    CPU per viewer; render-to-viewer time both ways. Needs Debian's janus package."""
    from liveavatar.bench import sfu as b
    from liveavatar.errors import UserError
    try:
        counts = [int(x) for x in viewers.split(",")]
    except ValueError:
        raise UserError(f"--viewers {viewers!r}: give comma-separated counts, e.g. 1,10,25") from None
    _finish(b.run(counts, seconds=seconds, size=size, rounds=rounds, glass=glass), json_path)


def _has_janus() -> bool:
    import shutil

    from liveavatar.interop.janus_local import JANUS
    return shutil.which(JANUS) is not None


def _has_ray() -> bool:
    import importlib.util
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None


@app.command("all")
def all_(out: Path = typer.Option(Path("bench-results"), help="Folder for bench.json and bench.md."),
         quick: bool = typer.Option(False, help="Shorter runs (for a smoke check, not for the README)."),
         skip: str = typer.Option("", help="Comma-separated benchmarks to leave out (e.g. e2e,neural).")) -> None:
    """Every benchmark in one run: JSON + a markdown table (the README's performance table)."""
    import importlib
    import traceback

    from liveavatar.bench import report

    skipped = {s.strip() for s in skip.split(",") if s.strip()}
    f = 0.25 if quick else 1.0
    plan: list[tuple[str, str, dict[str, Any]]] = [
        ("perception", "perception", dict(seconds=20 * f)),
        ("conditioning", "conditioning", dict(ticks=int(3000 * f))),
        ("actions", "actions", dict(imports=7, ticks=int(3000 * f))),
        ("rig2d", "generator", dict(generator="rig2d", device=None, batches=[1, 8], size=None, frames=int(120 * f))),
        ("neural", "generator", dict(generator="neural", device=None, batches=[1, 8], size=None, frames=int(120 * f))),
        ("neural_quality", "neural_quality", {}),
        ("render", "render", dict(seconds=10.0)),
        ("e2e", "e2e", dict(seconds=20 * f)),
        ("e2e_512", "e2e", dict(seconds=20 * f, size=512)),
        # quiet again, then beside one busy loop per core (a game + OBS on the streamer's PC)
        ("e2e_busy", "e2e", dict(seconds=20 * f, hog=os.cpu_count() or 1)),
        ("feed", "feed", dict(seconds=10 * f)),
        ("fidelity", "fidelity", dict(seconds=4.0 if quick else None)),
        ("sfu", "sfu", dict(viewers=[1, 10, 25], seconds=8 * f, rounds=1 if quick else 2, glass=not quick)),
        ("workers", "workers", dict(frames=int(150 * f), sessions=4)),
    ]
    # what a benchmark needs beyond the package, and why it is left out without it
    needs = {"sfu": (_has_janus, "Debian's janus is not installed (apt-get install janus): bench sfu runs a "
                                 "local Janus"),
             "workers": (_has_ray, "Ray Serve is not installed (pip install 'liveavatar[ray]'): bench workers "
                                   "runs a local Ray cluster")}
    not_run: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    results, failures = [], {}
    import torch
    torch_threads = torch.get_num_threads()
    base_start = report.baseline_ms()
    for label, module, kwargs in plan:
        if label in skipped:
            continue
        if label in needs and not needs[label][0]():
            not_run[label] = needs[label][1]
            typer.echo(f"== bench {label}: left out, {not_run[label]}")
            continue
        # Loading perception (silero-vad) drops torch to one thread process-wide; each benchmark
        # starts from the machine's default, as it would in its own process.
        torch.set_num_threads(torch_threads)
        typer.echo(f"== bench {label}")
        try:
            res = importlib.import_module(f"liveavatar.bench.{module}").run(**kwargs)
        except Exception as e:  # one broken benchmark must not lose the others' figures
            failures[label] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            continue
        res["benchmark"] = label
        report.print_table(res)
        results.append(res)
    base_end = report.baseline_ms()
    doc = {"machine": report.machine(), "baseline_ms": {"start": base_start, "end": base_end},
           "results": results, "failures": failures, "not_run": not_run}
    report.save(doc, out / "bench.json")
    md = report.markdown(results) + (
        f"\nBaseline workload (fixed CPU task, for comparing runs): {base_start:.1f} ms at start, "
        f"{base_end:.1f} ms at end.\n")
    if not_run:
        md += "\nNot run: " + "; ".join(f"{k}: {v}" for k, v in not_run.items()) + "\n"
    if failures:
        md += "\nFailed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()) + "\n"
    (out / "bench.md").write_text(md)
    typer.echo(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if failures:
        raise typer.Exit(1)
