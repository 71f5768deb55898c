"""`liveavatar obs setup|remove|status`: put the avatar into OBS Studio over obs-websocket."""
from __future__ import annotations

import enum
import ipaddress
import json
from typing import Any

import typer

app = typer.Typer(help="Add, check or remove the avatar as an OBS source (obs-websocket 5, OBS 28+).",
                  no_args_is_help=True)

HostOpt = typer.Option("localhost", "--host", envvar="OBS_WEBSOCKET_HOST", help="OBS websocket host.")
PortOpt = typer.Option(4455, "--port", envvar="OBS_WEBSOCKET_PORT", help="OBS websocket port.")
PasswordOpt = typer.Option("", "--password", envvar="OBS_WEBSOCKET_PASSWORD", show_default=False,
                           help="OBS websocket password (Tools > WebSocket Server Settings).")
SessionOpt = typer.Option("default", "--session", help="Avatar session shown by the source.")
ServiceOpt = typer.Option("http://127.0.0.1:8080", "--service", envvar="LIVEAVATAR_URL",
                          help="URL of the running `liveavatar serve`.")
TokenOpt = typer.Option(None, "--token", envvar="LIVEAVATAR_TOKEN",
                        help="Control token of the service (needed when it binds beyond localhost).")


class Mode(str, enum.Enum):
    auto = "auto"
    browser = "browser"
    media = "media"


def _connect(host: str, port: int, password: str) -> Any:
    from liveavatar.obs.client import ObsAddress, connect
    return connect(ObsAddress(host, port, password))


def _service(url: str, token: str | None) -> Any:
    from liveavatar.obs.service import Service
    return Service(url, token)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def setup(host: str = HostOpt, port: int = PortOpt, password: str = PasswordOpt,
          scene: str | None = typer.Option(None, "--scene", help="Scene to add the source to "
                                              "(default: the current program scene)."),
          session: str = SessionOpt, service: str = ServiceOpt, token: str | None = TokenOpt,
          viewer_token: str | None = typer.Option(None, "--viewer-token", envvar="LIVEAVATAR_VIEWER_TOKEN",
                                                     help="Read-only token for the browser source URL "
                                                     "(default: --token)."),
          mode: Mode = typer.Option(Mode.auto, "--mode", help="auto (browser source when OBS has one), "
                                   "browser, or media (MPEG-TS feed + chroma key)."),
          feed: str | None = typer.Option(None, "--feed", help="MPEG-TS feed address for the media "
                                             "source (default udp://<OBS host>:5600)."),
          start_feed: bool = typer.Option(True, "--start-feed/--no-start-feed",
                                          help="Ask the service to send the feed (off: you run "
                                          "`serve --obs-feed URL`)."),
          size: int = typer.Option(720, "--size", min=64, max=4096, help="Browser source size in pixels."),
          reposition: bool = typer.Option(False, "--reposition", help="Move an existing source back "
                                          "to the default place and size."),
          voice: bool = typer.Option(False, "--voice/--no-voice", help="Browser source also plays "
                                     "the streamer's voice, lip-synced and mixed by OBS (default: "
                                     "picture only; OBS captures your microphone)."),
          wait: float = typer.Option(120.0, "--wait", min=0, help="Seconds to wait for a service that is "
                                     "still warming up before asking it for the feed.")) -> None:
    """Create or update the avatar source in an OBS scene. Safe to run again: never duplicates."""
    from liveavatar.obs.setup import SetupOptions
    from liveavatar.obs.setup import setup as do_setup
    feed_host = "127.0.0.1" if _is_loopback(host) else host  # the service sends to OBS's machine
    opts = SetupOptions(session=session, scene=scene, mode=mode.value, service=_service(service, token),
                        viewer_token=viewer_token or token, feed_url=feed or f"udp://{feed_host}:5600",
                        start_feed=start_feed, size=size, reposition=reposition, voice=voice,
                        ready_wait_s=wait, say=lambda line: typer.echo(line, err=True))
    with _connect(host, port, password) as obs:
        report = do_setup(obs, opts)
    for line in report.lines():
        typer.echo(line)


@app.command()
def remove(host: str = HostOpt, port: int = PortOpt, password: str = PasswordOpt,
           session: str = SessionOpt, service: str = ServiceOpt, token: str | None = TokenOpt) -> None:
    """Remove the avatar source (from every scene) and stop its feed."""
    from liveavatar.obs.setup import remove as do_remove
    with _connect(host, port, password) as obs:
        report = do_remove(obs, session, _service(service, token))
    for line in report.lines():
        typer.echo(line)


@app.command()
def status(host: str = HostOpt, port: int = PortOpt, password: str = PasswordOpt,
           session: str = SessionOpt, service: str = ServiceOpt, token: str | None = TokenOpt,
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show OBS's version, whether the avatar source exists, where it is, and the service."""
    from liveavatar.obs.setup import status as do_status
    with _connect(host, port, password) as obs:
        info = do_status(obs, session, _service(service, token))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"OBS {info['obs_version']} (obs-websocket {info['websocket_version']}), browser source "
               f"{'available' if info['browser_source_available'] else 'not available'}")
    if not info["exists"]:
        typer.echo(f"source '{info['source']}': not set up (run `liveavatar obs setup`)")
    else:
        typer.echo(f"source '{info['source']}': {info['kind']} -> {info['target']}")
        typer.echo(f"  in scenes: {', '.join(info['scenes']) or 'none'}; "
                   f"{'on program' if info['live'] else 'not on program'}")
        if "key_filter" in info:
            typer.echo(f"  chroma key: {'yes' if info['key_filter'] else 'missing (run setup again)'}")
    svc = info.get("service")
    if svc:
        extra = f", {svc['generator']} on {svc['device']}" if svc.get("generator") else ""
        typer.echo(f"service {svc['url']}: {svc['status']}{extra}")
