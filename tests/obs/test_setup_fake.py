"""Request sequences of setup/remove against a recorded fake of obs-websocket 5.

Debian's OBS (what the real-OBS tests run) has no browser_source, so the browser path is checked
here: the fake answers with the response shapes recorded from OBS 29.0.2 / obs-websocket 5.1.0
and an input-kind list like the official Windows build's."""
from __future__ import annotations

import pytest
from obsws_python.error import OBSSDKRequestError

from liveavatar.errors import NotFoundError, UserError
from liveavatar.obs.client import ObsClient
from liveavatar.obs.service import Service
from liveavatar.obs.setup import SetupOptions, placement, remove, setup, status

WINDOWS_KINDS = ["browser_source", "ffmpeg_source", "image_source", "color_source", "text_gdiplus",
                 "game_capture", "window_capture", "dshow_input", "wasapi_input_capture"]
DEBIAN_KINDS = ["image_source", "color_source", "slideshow", "xshm_input", "pulse_input_capture",
                "pulse_output_capture", "v4l2_input", "ffmpeg_source", "text_ft2_source"]


class FakeObs:
    """A small stateful obs-websocket: inputs, scene items, filters. Records every request."""

    def __init__(self, kinds=WINDOWS_KINDS, version="30.2.3", scenes=("Scene", "BRB")):
        self.kinds, self.version = list(kinds), version
        self.scenes = {s: [] for s in scenes}        # scene -> [(item id, source name)]
        self.inputs: dict[str, dict] = {}            # name -> {kind, settings, filters}
        self.transforms: dict[int, dict] = {}
        self.calls: list[tuple[str, dict | None]] = []
        self._next_id = 1

    def _fail(self, req, code, comment):
        raise OBSSDKRequestError(req, code, comment)

    def send(self, req, data=None, raw=False):
        self.calls.append((req, data))
        d = data or {}
        if req == "GetVersion":
            return {"obsVersion": self.version, "obsWebSocketVersion": "5.5.2", "rpcVersion": 1,
                    "platform": "windows", "availableRequests": [], "supportedImageFormats": ["png"]}
        if req == "GetSceneList":
            return {"currentProgramSceneName": "Scene", "currentPreviewSceneName": None,
                    "scenes": [{"sceneIndex": i, "sceneName": s} for i, s in enumerate(self.scenes)]}
        if req == "GetInputKindList":
            return {"inputKinds": self.kinds}
        if req == "GetVideoSettings":
            return {"baseWidth": 1920, "baseHeight": 1080, "outputWidth": 1920, "outputHeight": 1080,
                    "fpsNumerator": 60, "fpsDenominator": 1}
        if req == "GetInputList":
            return {"inputs": [{"inputName": n, "inputKind": i["kind"], "unversionedInputKind": i["kind"]}
                               for n, i in self.inputs.items()]}
        if req == "CreateInput":
            if d["sceneName"] not in self.scenes:
                self._fail(req, 600, "No source was found")
            if d["inputName"] in self.inputs:
                self._fail(req, 601, "A source already exists by that input name.")
            self.inputs[d["inputName"]] = {"kind": d["inputKind"], "settings": dict(d["inputSettings"]),
                                           "filters": {}}
            return {"inputUuid": "x", "sceneItemId": self._add_item(d["sceneName"], d["inputName"])}
        if req == "SetInputSettings":
            self.inputs[d["inputName"]]["settings"].update(d["inputSettings"])
            return None
        if req == "GetInputSettings":
            i = self.inputs[d["inputName"]]
            return {"inputKind": i["kind"], "inputSettings": i["settings"]}
        if req == "RemoveInput":
            del self.inputs[d["inputName"]]
            for items in self.scenes.values():
                items[:] = [it for it in items if it[1] != d["inputName"]]
            return None
        if req == "GetSceneItemId":
            for item_id, name in self.scenes.get(d["sceneName"], []):
                if name == d["sourceName"]:
                    return {"sceneItemId": item_id}
            self._fail(req, 600, f"No scene items were found in scene `{d['sceneName']}`")
        if req == "CreateSceneItem":
            return {"sceneItemId": self._add_item(d["sceneName"], d["sourceName"])}
        if req == "SetSceneItemTransform":
            self.transforms[d["sceneItemId"]] = d["sceneItemTransform"]
            return None
        if req == "GetSourceFilterList":
            return {"filters": [{"filterName": n, "filterKind": k} for n, k in
                                self.inputs[d["sourceName"]]["filters"].items()]}
        if req == "CreateSourceFilter":
            self.inputs[d["sourceName"]]["filters"][d["filterName"]] = d["filterKind"]
            return None
        if req == "SetSourceFilterSettings":
            return None
        if req == "GetSourceActive":
            return {"videoActive": True, "videoShowing": True}
        self._fail(req, 204, "unknown request")

    def _add_item(self, scene, name):
        item_id, self._next_id = self._next_id, self._next_id + 1
        self.scenes[scene].append((item_id, name))
        return item_id


def names(fake):
    return [c[0] for c in fake.calls]


def opts(**kw):
    return SetupOptions(service=Service("http://127.0.0.1:8080"), **kw)


def test_browser_source_first_setup_sequence():
    fake = FakeObs()
    report = setup(ObsClient(fake), opts(viewer_token="view-only"))
    assert names(fake) == ["GetVersion", "GetSceneList", "GetInputKindList", "GetInputList",
                           "CreateInput", "GetVideoSettings", "SetSceneItemTransform"]
    create = fake.calls[4][1]
    assert create["sceneName"] == "Scene" and create["inputName"] == "LiveAvatar default"
    assert create["inputKind"] == "browser_source"
    assert create["inputSettings"]["url"] == ("http://127.0.0.1:8080/viewer?session=default"
                                              "&transparent=1&audio=0&token=view-only")
    assert create["inputSettings"]["reroute_audio"] is False   # OBS captures the microphone
    assert create["inputSettings"]["width"] == create["inputSettings"]["height"] == 720
    assert fake.transforms[1] == placement(1920, 1080)
    assert fake.transforms[1]["boundsHeight"] == 810 and fake.transforms[1]["positionY"] == 270
    assert report.created and report.positioned and not report.filter_created and not report.feed


def test_browser_source_with_voice_plays_it_through_obs():
    fake = FakeObs()
    setup(ObsClient(fake), opts(voice=True))
    settings = fake.calls[4][1]["inputSettings"]
    assert "audio=0" not in settings["url"] and "transparent=1" in settings["url"]
    assert settings["reroute_audio"] is True


def test_browser_source_second_setup_updates_in_place():
    fake = FakeObs()
    setup(ObsClient(fake), opts())
    fake.calls.clear()
    report = setup(ObsClient(fake), opts(session="default", size=1080))
    assert names(fake) == ["GetVersion", "GetSceneList", "GetInputKindList", "GetInputList",
                           "SetInputSettings", "GetSceneItemId"]
    assert fake.inputs["LiveAvatar default"]["settings"]["width"] == 1080
    assert len(fake.inputs) == 1 and len(fake.scenes["Scene"]) == 1
    assert not report.created and not report.positioned  # the user's own placement is kept


def test_setup_into_a_second_scene_adds_an_item_not_an_input():
    fake = FakeObs()
    setup(ObsClient(fake), opts())
    setup(ObsClient(fake), opts(scene="BRB"))
    assert len(fake.inputs) == 1
    assert [n for _, n in fake.scenes["BRB"]] == ["LiveAvatar default"]
    assert "CreateSceneItem" in names(fake)


def test_media_source_replaces_a_browser_source_of_the_same_name():
    fake = FakeObs()
    setup(ObsClient(fake), opts())
    report = setup(ObsClient(fake), opts(mode="media", start_feed=False, feed_url="udp://127.0.0.1:5600"))
    assert fake.inputs["LiveAvatar default"]["kind"] == "ffmpeg_source"
    assert fake.inputs["LiveAvatar default"]["filters"] == {"LiveAvatar key": "chroma_key_filter_v2"}
    assert report.created and "replaced" in report.warnings[0]
    assert "serve --obs-feed udp://127.0.0.1:5600" in report.feed


def test_auto_picks_the_media_source_without_browser_source():
    fake = FakeObs(kinds=DEBIAN_KINDS, version="29.0.2")
    report = setup(ObsClient(fake), opts(start_feed=False))
    assert report.kind == "ffmpeg_source" and report.filter_created
    assert fake.inputs["LiveAvatar default"]["settings"]["input"] == "udp://127.0.0.1:5600?overrun_nonfatal=1"


def test_unreachable_service_is_a_warning_not_a_failure():
    fake = FakeObs(kinds=DEBIAN_KINDS)
    report = setup(ObsClient(fake), SetupOptions(service=Service("http://127.0.0.1:9")))
    assert report.created and "did not answer" in report.warnings[0]


@pytest.mark.parametrize("fake, options, error, match", [
    (FakeObs(version="27.2.4"), {}, UserError, "OBS 27.2.4 is too old"),
    (FakeObs(), {"scene": "Nope"}, NotFoundError, "no scene named 'Nope'; scenes: 'BRB', 'Scene'"),
    (FakeObs(kinds=DEBIAN_KINDS), {"mode": "browser"}, UserError, "no browser source"),
    (FakeObs(), {"mode": "webcam"}, UserError, "choose auto, browser or media"),
    (FakeObs(kinds=["image_source"]), {}, UserError, r"no media source \(ffmpeg_source\) and no browser"),
    (FakeObs(kinds=["browser_source"]), {"mode": "media"}, UserError, r"no media source \(ffmpeg_source\)$"),
])
def test_clear_errors_and_nothing_created(fake, options, error, match):
    with pytest.raises(error, match=match):
        setup(ObsClient(fake), opts(**options))
    assert fake.inputs == {}


def test_remove_and_status():
    fake = FakeObs()
    setup(ObsClient(fake), opts())
    info = status(ObsClient(fake), "default")
    assert info["exists"] and info["kind"] == "browser_source" and info["scenes"] == ["Scene"]
    assert info["target"].startswith("http://127.0.0.1:8080/viewer?session=default")
    assert remove(ObsClient(fake), "default").removed
    assert fake.inputs == {} and fake.scenes["Scene"] == []
    assert not remove(ObsClient(fake), "default").removed
    assert status(ObsClient(fake), "default")["exists"] is False


def test_obs_request_errors_become_one_line_user_errors():
    fake = FakeObs()
    with pytest.raises(UserError, match=r"OBS refused Frobnicate \(code 204\): unknown request"):
        ObsClient(fake).call("Frobnicate")


def test_bad_mode_is_a_usage_error_before_connecting():
    import os

    from tests.obs.conftest import run_cli
    from tests.obs.headless import free_port
    r = run_cli(dict(os.environ), "obs", "setup", "--mode", "webcam", "--port", str(free_port()))
    assert r.returncode == 2
    assert "Invalid value for '--mode'" in r.stderr and "Traceback" not in r.stderr
    assert "cannot reach" not in r.stderr  # refused before any connection attempt


def _warming_server(warmup_s: float):
    """A real service whose generator takes `warmup_s` to load: /health says 503 meanwhile and
    the default session does not exist yet (what a user meets right after `liveavatar serve`)."""
    import time

    from liveavatar.server.config import ServerConfig
    from tests.server.fakes import fake_perception_stages
    from tests.server.harness import ServerThread, free_port

    cfg = ServerConfig(port=free_port(), size=64)
    stages = fake_perception_stages(cfg)
    load = stages.generator

    def slow_generator():
        time.sleep(warmup_s)
        return load()

    stages.generator = slow_generator
    return ServerThread(cfg, stages).launch()


def test_setup_during_warm_up_waits_for_the_service_and_says_so():
    srv = _warming_server(3.0)
    try:
        lines: list[str] = []
        report = setup(ObsClient(FakeObs(kinds=DEBIAN_KINDS)),
                       SetupOptions(service=Service(srv.url), ready_wait_s=60, say=lines.append))
        assert report.feed.startswith(f"service {srv.url} now sends session 'default'"), report.warnings
        assert len(lines) == 1 and "warming up" in lines[0] and "60 s" in lines[0]
        assert "default" in srv.engine.sessions and srv.engine.sessions["default"].sinks
    finally:
        srv.stop()


def test_setup_gives_up_on_a_slow_warm_up_with_a_retry_line():
    srv = _warming_server(8.0)
    try:
        with pytest.raises(UserError, match="still warming up after 1 s; run the command again") as e:
            setup(ObsClient(FakeObs(kinds=DEBIAN_KINDS)), SetupOptions(service=Service(srv.url), ready_wait_s=1))
        assert "\n" not in str(e.value)
    finally:
        srv.wait_healthy()
        srv.stop()
