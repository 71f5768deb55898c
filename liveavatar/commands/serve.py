"""`liveavatar serve`: the live service (studio, viewer, WHIP/WHEP, control API)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind. Beyond localhost a token is required."),
    port: int = typer.Option(8080, help="TCP port."),
    generator: str = typer.Option("auto", "--generator", "-g",
                                  help="Generator plug-in name (auto: rig2d or mesh per character)."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: best available)."),
    workers: str | None = typer.Option(None, help="Run the generator on Ray Serve replicas: auto (a local "
                                                  "Ray cluster) or ray://HOST:PORT (needs the package's ray extra)."),
    worker_replicas: int | None = typer.Option(None, help="Generator replicas with --workers (default: one "
                                                            "per GPU in the cluster, at least one)."),
    size: int | None = typer.Option(None, help="Avatar frame size in pixels (square). Default: 512 "
                                                  "with a CUDA GPU; 256 on CPU, where it keeps "
                                                  "glass-to-glass latency near 150 ms (512: ~230 ms)."),
    character: str | None = typer.Option(None, "--character", help="Character new sessions start as "
                                            "(default nova; an imported one works too)."),
    fps: int = typer.Option(30, help="Output frame rate."),
    max_sessions: int = typer.Option(4, help="Streamers served at once (admission limit)."),
    render_threads: int = typer.Option(1, help="torch CPU threads for rendering (CPU generators)."),
    token: str | None = typer.Option(None, help="Control/ingest token (default: generated and stored "
                                                   "when binding beyond localhost)."),
    viewer_token: str | None = typer.Option(None, help="Read-only token for viewers and WHEP."),
    ice_server: list[str] = typer.Option([], "--ice-server", help="STUN/TURN URL for remote use "
                                                                  "(repeatable); none by default."),
    ice_username: str | None = typer.Option(None, help="TURN username."),
    ice_credential: str | None = typer.Option(None, help="TURN credential."),
    source: Path | None = typer.Option(None, help="Drive the default session from this video file "
                                                     "(looped) until a camera connects."),
    demo: bool = typer.Option(True, "--demo/--no-demo", help="Play the bundled demo clip when no camera "
                                                             "connects within --demo-after seconds."),
    demo_after: float = typer.Option(5.0, help="Seconds to wait for a camera before the demo starts."),
    obs_feed: str | None = typer.Option(None, help="Also send the avatar as low-latency MPEG-TS to "
                                                      "this URL (e.g. udp://127.0.0.1:5600) for OBS."),
    virtualcam: bool = typer.Option(False, help="Also send the avatar to a virtual camera."),
    mapping: Path | None = typer.Option(None, help="Conditioning mapping file (TOML)."),
    tls_cert: Path | None = typer.Option(None, help="TLS certificate (PEM): serve HTTPS, which browsers "
                                                       "on other machines need for camera access."),
    tls_key: Path | None = typer.Option(None, help="TLS private key (PEM) for --tls-cert."),
    allow_origin: list[str] = typer.Option([], "--allow-origin", help="Extra web origin allowed to call "
                                                                      "the API (CORS); repeatable."),
    timecode: bool = typer.Option(False, help="Draw the debug timecode into the WHEP feed too."),
    vmc_out: str | None = typer.Option(None, help="Send the default session's tracking as a VMC "
                                                     "Performer to HOST:PORT (VSeeFace, Warudo: 39539)."),
    vmc_bundle: bool = typer.Option(True, "--vmc-bundle/--vmc-single", help="VMC out: one OSC bundle per "
                                                                            "frame, or single messages."),
    vmc_arkit: bool = typer.Option(False, help="VMC out: also ARKit's blendshape names."),
    vmc_in: int | None = typer.Option(None, help="Drive the default session from a VMC tracker's "
                                                    "stream on this UDP port instead of the camera."),
    vts_port: int | None = typer.Option(None, help="VTube Studio-compatible API (WebSocket) on "
                                                      "127.0.0.1:PORT for its plugins (VTS uses 8001)."),
    sfu: str | None = typer.Option(None, help="Publish each session once into a Janus SFU for its viewers: "
                                                 "janus:ws://HOST:8188[/ROOM] (see the README)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Run the live service: open the printed studio URL, pick your camera, and watch the viewer."""
    import asyncio
    import logging

    from liveavatar.errors import UserError
    from liveavatar.server import config as config_mod

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise UserError(f"--log-level {log_level!r}: use debug, info, warning or error")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if size is None:
        size = default_size(device)
    if source is not None:
        from liveavatar.sources.file import probe
        probe(source)  # missing / not a video: one line now, not a dead session later
    if mapping is not None and not mapping.is_file():
        raise UserError(f"--mapping {mapping}: no such file")
    ssl_context = _tls(tls_cert, tls_key)
    if workers is not None:
        _check_workers(workers)

    if character is not None:
        from liveavatar.generation import characters as catalog
        catalog.find(character)     # unknown: one line now, before anything starts
    cfg = config_mod.build(host=host, port=port, generator=generator, device=device, size=size, fps=fps,
                           workers=workers, worker_replicas=worker_replicas,
                           character=character, max_sessions=max_sessions, render_threads=render_threads,
                           token=token, viewer_token=viewer_token,
                           ice_servers=list(ice_server), ice_username=ice_username,
                           ice_credential=ice_credential, source=source, demo=demo,
                           demo_after_s=demo_after, timecode=timecode, allow_origins=list(allow_origin),
                           mapping=mapping, vmc_out=vmc_out, vmc_bundle=vmc_bundle, vmc_arkit=vmc_arkit,
                           vmc_in=vmc_in, vts_port=vts_port, sfu=sfu)
    if cfg.vmc_out:
        from liveavatar.interop.vmc import parse_host_port
        parse_host_port(cfg.vmc_out, "--vmc-out")  # a typo: one line now, not after warm-up
    created = False
    if cfg.token is None and not cfg.loopback_only:
        stored_token, stored_viewer, created = config_mod.load_or_create_tokens()
        cfg.token = stored_token
        cfg.viewer_token = cfg.viewer_token or stored_viewer
    feeds = []
    if obs_feed:
        feeds.append(("mpegts", obs_feed))
    if virtualcam:
        feeds.append(("virtualcam", ""))
    try:
        asyncio.run(_run(cfg, feeds, created, ssl_context))
    except KeyboardInterrupt:
        pass


def _check_workers(value: str) -> None:
    """A bad --workers value, or Ray missing: one line now, before anything starts."""
    from liveavatar.errors import UserError
    from liveavatar.interop.ray_workers import parse_workers, use_cluster_token
    parse_workers(value)
    if value != "auto":
        use_cluster_token()     # before Ray is imported: it reads the auth mode once, at import
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise UserError("--workers needs Ray Serve: pip install 'liveavatar[ray]'") from None


def _tls(cert: Path | None, key: Path | None) -> Any:
    """An SSL context from PEM files, or None. Browsers give camera access only to https pages
    (or localhost), so a studio opened from another machine needs this or a TLS proxy."""
    from liveavatar.errors import UserError
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UserError("--tls-cert and --tls-key go together")
    for opt, p in (("--tls-cert", cert), ("--tls-key", key)):
        if not p.is_file():
            raise UserError(f"{opt} {p}: no such file")
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as e:
        raise UserError(f"--tls-cert {cert} / --tls-key {key}: not a matching PEM certificate and key ({e})") from None
    return ctx


def default_size(device: str | None) -> int:
    """512 px where a GPU renders; 256 on CPU: on a 2-core machine 512 px took render, encode and
    the viewer's decode from ~140 to ~230 ms glass-to-glass (`liveavatar bench e2e`)."""
    if device == "cpu":
        return 256
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    return 512 if cuda else 256


def _urls(cfg: Any, show_tokens: bool, scheme: str = "http") -> list[tuple[str, str]]:
    shown_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    base = f"{scheme}://{shown_host}:{cfg.port}"
    ctl = vw = ""
    if cfg.token:
        ctl = f"?token={cfg.token if show_tokens else '<token>'}"
        vw = f"?token={(cfg.viewer_token or cfg.token) if show_tokens else '<viewer-token>'}"
    # OBS captures the microphone itself: the source shows the picture alone (no echoed voice).
    transparent = (vw + "&" if vw else "?") + "transparent=1&audio=0"
    return [("Studio (camera, mic, controls)", f"{base}/studio{ctl}"),
            ("Viewer", f"{base}/viewer{vw}"),
            ("OBS browser source (transparent, picture only)", f"{base}/viewer{transparent}"),
            ("WHIP ingest (OBS 30+ WHIP output, ffmpeg)", f"{base}/whip/default"),
            ("WHEP playback", f"{base}/whep/default"),
            ("Control API (OpenAPI)", f"{base}/api/openapi.json")]


async def _run(cfg: Any, feeds: Any, tokens_created: bool, ssl_context: Any = None) -> None:
    import asyncio
    import errno

    from aiohttp import web
    from rich.console import Console

    from liveavatar.errors import UserError
    from liveavatar.server import config as config_mod
    from liveavatar.server.app import create_app
    from liveavatar.server.state import ENGINE, SERVICE

    console = Console()
    app = create_app(cfg, feeds=feeds)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {cfg.port} on {cfg.host} is in use; pick another with --port") from None
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    if cfg.port == 0:  # tests and benchmarks ask for any free port
        server: Any = site._server     # aiohttp keeps the bound server private
        cfg.port = server.sockets[0].getsockname()[1]
    console.print(f"[bold]LiveAvatar[/bold] serving on {cfg.host}:{cfg.port}")
    show = tokens_created or bool(cfg.token and cfg.loopback_only)
    for label, url in _urls(cfg, show, "https" if ssl_context else "http"):
        console.print(f"  {label}: [cyan]{url}[/cyan]")
    if cfg.token and not cfg.loopback_only:
        if tokens_created:
            console.print(f"  [yellow]Tokens generated and stored in {config_mod.tokens_path()}; "
                          "they are printed only this once.[/yellow]")
        else:
            console.print(f"  Tokens: stored in {config_mod.tokens_path()}")
    if cfg.host in ("0.0.0.0", "::"):
        console.print("  From other machines use this machine's address instead of 127.0.0.1.")
    console.print(f"  Warming up {cfg.generator}... (/health answers 503 until ready)", highlight=False)
    engine = app[ENGINE]
    try:
        # Startup only: two flags set by the warm-up task, checked ten times a second.
        while not engine.ready and engine.warmup_error is None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if engine.warmup_error:
            raise UserError(f"generator {cfg.generator!r} failed to start: {engine.warmup_error}")
        await app[SERVICE].outputs_ready.wait()
        if app[SERVICE].startup_errors:  # an output the user asked for is missing: say so, stop
            raise UserError(app[SERVICE].startup_errors[0])
        gen = engine.generator
        assert gen is not None   # the warm-up above finished without an error
        console.print(f"  Ready: generator {gen.name} on {gen.device}, "
                      f"{cfg.size}x{cfg.size}. "
                      "Press Ctrl-C to stop.", highlight=False)
        await asyncio.Event().wait()   # serve until cancelled (Ctrl-C)
    finally:
        await runner.cleanup()
