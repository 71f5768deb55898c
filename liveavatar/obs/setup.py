"""What `liveavatar obs setup|remove|status` do, as plain functions over an `ObsClient`.

Idempotent by construction: one OBS input per session, found by name, created once and then
only updated; one scene item per scene; one key filter per input.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from liveavatar.errors import NotFoundError, UserError
from liveavatar.obs.client import MIN_OBS, RESOURCE_NOT_FOUND, ObsClient, ObsRequestError, parse_version
from liveavatar.obs.service import Service, ServiceUnreachable

BROWSER = "browser_source"
MEDIA = "ffmpeg_source"
KEY_FILTER = "LiveAvatar key"
KEY_FILTER_KIND = "chroma_key_filter_v2"
#: The avatar's box: this share of the canvas height, standing on the bottom edge at the right.
AVATAR_HEIGHT_SHARE = 0.75
MARGIN_SHARE = 0.02


def source_name(session: str) -> str:
    return f"LiveAvatar {session}"


def obs_input_url(feed_url: str) -> str:
    """What OBS's media source opens for a feed the service sends to `feed_url`. FFmpeg binds
    the port for reading; overrun_nonfatal keeps it decoding if OBS stalls for a moment."""
    parts = urlsplit(feed_url)
    if parts.scheme != "udp" or not parts.hostname or not parts.port:
        raise UserError(f"feed URL {feed_url!r} must look like udp://HOST:PORT")
    return f"udp://{parts.hostname}:{parts.port}?overrun_nonfatal=1"


def media_settings(feed_url: str) -> dict:
    # Low-latency live input: no buffering, no seeking, never close or restart on (in)activity.
    return {"is_local_file": False, "input": obs_input_url(feed_url), "input_format": "mpegts",
            "buffering_mb": 0, "reconnect_delay_sec": 1, "restart_on_activate": False,
            "close_when_inactive": False, "hw_decode": False, "clear_on_media_end": False,
            "seekable": False, "looping": False, "ffmpeg_options": "fflags=nobuffer flags=low_delay"}


def browser_settings(url: str, size: int, fps: int, voice: bool = False) -> dict:
    # OBS's default page CSS already makes the page background transparent. With the voice, OBS
    # mixes the page's audio ("Control audio via OBS") instead of playing it on the speakers.
    return {"url": url, "width": size, "height": size, "fps_custom": True, "fps": fps,
            "reroute_audio": voice, "shutdown": False, "restart_when_active": False}


def placement(canvas_w: int, canvas_h: int) -> dict:
    """Scene-item transform: a square box scaled to fit (so it is right even before the media
    source has its first frame), bottom-right of the canvas."""
    side = max(1, round(canvas_h * AVATAR_HEIGHT_SHARE))
    margin = round(canvas_w * MARGIN_SHARE)
    return {"positionX": float(max(0, canvas_w - side - margin)), "positionY": float(canvas_h - side),
            "alignment": 5,  # top-left corner at position
            "rotation": 0.0, "boundsType": "OBS_BOUNDS_SCALE_INNER",
            "boundsWidth": float(side), "boundsHeight": float(side),
            "boundsAlignment": 8}  # bottom-centre: the avatar stands on the bottom edge


@dataclass
class SetupOptions:
    session: str = "default"
    scene: str | None = None            # None: the current program scene
    mode: str = "auto"                  # auto | browser | media
    service: Service = field(default_factory=Service)
    viewer_token: str | None = None     # read-only token for the browser source's viewer URL
    feed_url: str = "udp://127.0.0.1:5600"
    start_feed: bool = True             # ask the service to send the feed (else `serve --obs-feed`)
    size: int = 720                     # browser source page size (square)
    fps: int = 30
    reposition: bool = False            # re-apply our placement to an existing scene item
    voice: bool = False                 # browser source plays the streamer's voice (lip-synced)
    ready_wait_s: float = 120.0         # how long to wait for a service that is still warming up
    say: Callable[[str], None] = field(default=lambda line: None)   # progress lines for the user


@dataclass
class SetupReport:
    obs_version: str
    scene: str
    source: str
    kind: str
    created: bool = False
    added_to_scene: bool = False
    positioned: bool = False
    filter_created: bool = False
    feed: str = ""                       # what happened to the service's feed
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        what = "created" if self.created else "updated"
        out = [f"OBS {self.obs_version}: {what} {self.kind} '{self.source}' in scene '{self.scene}'"]
        if self.added_to_scene and not self.created:
            out.append(f"added '{self.source}' to scene '{self.scene}'")
        if self.positioned:
            out.append("placed it bottom-right, 3/4 of the canvas height")
        if self.filter_created:
            out.append(f"added chroma-key filter '{KEY_FILTER}' (green)")
        if self.feed:
            out.append(self.feed)
        return out + [f"warning: {w}" for w in self.warnings]


def check_version(obs: ObsClient) -> dict:
    info = obs.call("GetVersion")
    version = parse_version(str(info.get("obsVersion", "0")))
    if version < MIN_OBS or int(info.get("rpcVersion", 0)) < 1:
        raise UserError(f"OBS {info.get('obsVersion')} is too old: LiveAvatar needs OBS 28 or newer "
                        "(obs-websocket 5)")
    return info


def pick_scene(obs: ObsClient, wanted: str | None) -> str:
    listing = obs.call("GetSceneList")
    names = [s["sceneName"] for s in listing.get("scenes", [])]
    scene = wanted or listing.get("currentProgramSceneName")
    if scene not in names:
        known = ", ".join(repr(n) for n in sorted(names)) or "none"
        raise NotFoundError(f"OBS has no scene named {scene!r}; scenes: {known}")
    return str(scene)


def pick_kind(obs: ObsClient, mode: str) -> str:
    if mode not in ("auto", "browser", "media"):
        raise UserError(f"--mode {mode!r}: choose auto, browser or media")
    kinds = set(obs.call("GetInputKindList", {"unversioned": True}).get("inputKinds", []))
    if mode == "browser" or (mode == "auto" and BROWSER in kinds):
        if BROWSER not in kinds:
            raise UserError("this OBS build has no browser source (Debian's OBS lacks it): use "
                            "--mode media or --mode auto")
        return BROWSER
    if MEDIA not in kinds:
        raise UserError("this OBS build has no media source (ffmpeg_source)"
                        + ("" if mode == "media" else " and no browser source"))
    return MEDIA


def find_input(obs: ObsClient, name: str) -> dict | None:
    for item in obs.call("GetInputList").get("inputs", []):
        if item.get("inputName") == name:
            return item
    return None


def remove_input(obs: ObsClient, name: str, timeout: float = 5.0) -> None:
    """RemoveInput, then wait until OBS has really let go: a media source is destroyed only
    after its decoder thread stops, and until then its name is still taken."""
    import time
    obs.call("RemoveInput", {"inputName": name})
    deadline = time.monotonic() + timeout
    while find_input(obs, name) is not None:
        if time.monotonic() > deadline:
            raise UserError(f"OBS did not remove '{name}' within {timeout:.0f} s")
        time.sleep(0.1)


def scene_item_id(obs: ObsClient, scene: str, source: str) -> int | None:
    try:
        return int(obs.call("GetSceneItemId", {"sceneName": scene, "sourceName": source})["sceneItemId"])
    except ObsRequestError as e:
        if e.code == RESOURCE_NOT_FOUND:
            return None
        raise


def setup(obs: ObsClient, opts: SetupOptions) -> SetupReport:
    info = check_version(obs)
    scene = pick_scene(obs, opts.scene)
    kind = pick_kind(obs, opts.mode)
    name = source_name(opts.session)
    if kind == MEDIA:
        settings = media_settings(opts.feed_url)
    else:
        settings = browser_settings(opts.service.viewer_url(opts.session, opts.viewer_token, opts.voice),
                                    opts.size, opts.fps, opts.voice)
    report = SetupReport(obs_version=str(info.get("obsVersion")), scene=scene, source=name, kind=kind)

    existing = find_input(obs, name)
    if existing is not None and existing.get("unversionedInputKind", existing.get("inputKind")) != kind:
        # Same name, other kind (e.g. OBS gained a browser source): replace, do not duplicate.
        remove_input(obs, name)
        report.warnings.append(f"replaced the {existing.get('inputKind')} '{name}' by a {kind}")
        existing = None

    if existing is None:
        item_id = int(obs.call("CreateInput", {"sceneName": scene, "inputName": name, "inputKind": kind,
                                               "inputSettings": settings, "sceneItemEnabled": True})
                      ["sceneItemId"])
        report.created = report.added_to_scene = True
    else:
        obs.call("SetInputSettings", {"inputName": name, "inputSettings": settings, "overlay": True})
        found = scene_item_id(obs, scene, name)
        if found is not None:
            item_id = found
        else:
            item_id = int(obs.call("CreateSceneItem", {"sceneName": scene, "sourceName": name,
                                                       "sceneItemEnabled": True})["sceneItemId"])
            report.added_to_scene = True

    if report.added_to_scene or opts.reposition:
        video = obs.call("GetVideoSettings")
        obs.call("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item_id,
                                           "sceneItemTransform": placement(int(video["baseWidth"]),
                                                                           int(video["baseHeight"]))})
        report.positioned = True

    if kind == MEDIA:
        report.filter_created = _ensure_key_filter(obs, name)
        report.feed = _start_feed(opts, report)
    return report


def _ensure_key_filter(obs: ObsClient, source: str) -> bool:
    settings = {"key_color_type": "green"}
    filters = obs.call("GetSourceFilterList", {"sourceName": source}).get("filters", [])
    if any(f.get("filterName") == KEY_FILTER for f in filters):
        obs.call("SetSourceFilterSettings", {"sourceName": source, "filterName": KEY_FILTER,
                                             "filterSettings": settings, "overlay": True})
        return False
    obs.call("CreateSourceFilter", {"sourceName": source, "filterName": KEY_FILTER,
                                    "filterKind": KEY_FILTER_KIND, "filterSettings": settings})
    return True


def _start_feed(opts: SetupOptions, report: SetupReport) -> str:
    if not opts.start_feed:
        return (f"the media source reads {opts.feed_url}: start the service with "
                f"`liveavatar serve --obs-feed {opts.feed_url}`")
    try:
        # A service still warming up has no session yet: wait for it (bounded) rather than fail.
        opts.service.wait_ready(opts.ready_wait_s, opts.say)
        opts.service.start_feed(opts.session, opts.feed_url)
    except ServiceUnreachable as e:
        report.warnings.append(f"{e}; the source will show the avatar once `liveavatar serve "
                               f"--obs-feed {opts.feed_url}` runs (or run setup again)")
        return ""
    return f"service {opts.service.url} now sends session '{opts.session}' to {opts.feed_url}"


@dataclass
class RemoveReport:
    source: str
    removed: bool
    feed_stopped: bool = False
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"removed '{self.source}' from OBS" if self.removed
               else f"OBS has no source '{self.source}': nothing to remove"]
        if self.feed_stopped:
            out.append("stopped the service's MPEG-TS feed")
        return out + [f"warning: {w}" for w in self.warnings]


def remove(obs: ObsClient, session: str, service: Service | None = None) -> RemoveReport:
    check_version(obs)
    name = source_name(session)
    existing = find_input(obs, name)
    report = RemoveReport(source=name, removed=existing is not None)
    if existing is not None:
        remove_input(obs, name)  # removes its scene items and filters too
    if service is not None and (existing is None or existing.get("unversionedInputKind") == MEDIA):
        try:
            service.stop_feed(session)
            report.feed_stopped = True
        except ServiceUnreachable:
            pass  # nothing is sending then
        except UserError as e:
            if "(404)" not in str(e):
                report.warnings.append(str(e))
    return report


def status(obs: ObsClient, session: str, service: Service | None = None) -> dict:
    info = check_version(obs)
    kinds = set(obs.call("GetInputKindList", {"unversioned": True}).get("inputKinds", []))
    name = source_name(session)
    out: dict = {"obs_version": info.get("obsVersion"), "websocket_version": info.get("obsWebSocketVersion"),
                 "browser_source_available": BROWSER in kinds, "source": name, "exists": False}
    existing = find_input(obs, name)
    if existing is not None:
        kind = existing.get("unversionedInputKind", existing.get("inputKind"))
        settings = obs.call("GetInputSettings", {"inputName": name}).get("inputSettings", {})
        scenes = [s["sceneName"] for s in obs.call("GetSceneList").get("scenes", [])
                  if scene_item_id(obs, s["sceneName"], name) is not None]
        active = obs.call("GetSourceActive", {"sourceName": name})
        out.update(exists=True, kind=kind, target=settings.get("url") or settings.get("input"),
                   scenes=sorted(scenes), showing=bool(active.get("videoShowing")),
                   live=bool(active.get("videoActive")))
        if kind == MEDIA:
            filters = obs.call("GetSourceFilterList", {"sourceName": name}).get("filters", [])
            out["key_filter"] = any(f.get("filterName") == KEY_FILTER for f in filters)
    if service is not None:
        try:
            health = service.health()
            out["service"] = {"url": service.url, "status": health.get("status", "ok"),
                              "generator": health.get("generator"), "device": health.get("device")}
        except ServiceUnreachable as e:
            out["service"] = {"url": service.url, "status": f"unreachable: {e}"}
    return out
