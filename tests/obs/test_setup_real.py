"""`liveavatar obs setup|status|remove` against real OBS 29 (Debian build: no browser source, so
the MPEG-TS media source + chroma key path), fed by our own MpegTsFeed with a real photo cut-out.
The same flow against a running `liveavatar serve` is in test_serve_e2e.py."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from liveavatar.output.mpegts import MpegTsFeed
from tests.obs.conftest import cli_env, run_cli, screenshot
from tests.obs.headless import free_port
from tests.output.frames import cutout, rendered

pytestmark = pytest.mark.obs
SOURCE = "LiveAvatar default"


@pytest.fixture(scope="module")
def feed():
    """A live 30 fps feed of an avatar-like RGBA frame, as the service would send."""
    url = f"udp://127.0.0.1:{free_port(2)}"
    rgba = cutout("astronaut.png", (320, 240))
    sink = MpegTsFeed(url, 320, 240, fps=30).start()
    stop = threading.Event()

    def pump():
        seq = 0
        while not stop.is_set():
            sink.send(rendered(rgba, seq, time.monotonic_ns()))
            seq += 1
            time.sleep(1 / 30)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield url, rgba
    stop.set()
    thread.join()
    sink.stop()


def setup_args(feed_url: str, *extra: str) -> list[str]:
    return ["obs", "setup", "--feed", feed_url, "--no-start-feed", *extra]


def test_setup_creates_a_keyed_media_source_showing_the_avatar(obs_studio, feed):
    feed_url, rgba = feed
    r = run_cli(cli_env(obs_studio), *setup_args(feed_url))
    assert r.returncode == 0, r.stderr
    assert f"created ffmpeg_source '{SOURCE}' in scene 'Scene'" in r.stdout
    with obs_studio.client() as c:
        items = c.send("GetSceneItemList", {"sceneName": "Scene"}, raw=True)["sceneItems"]
        settings = c.send("GetInputSettings", {"inputName": SOURCE}, raw=True)["inputSettings"]
        filters = c.send("GetSourceFilterList", {"sourceName": SOURCE}, raw=True)["filters"]
        shot = screenshot(c, SOURCE)
    assert [i["sourceName"] for i in items] == [SOURCE]
    assert settings["input"].startswith(feed_url) and settings["input_format"] == "mpegts"
    assert [(f["filterName"], f["filterKind"]) for f in filters] == [("LiveAvatar key", "chroma_key_filter_v2")]
    # Placed bottom-right in a box 3/4 of the 1280x720 canvas high.
    t = items[0]["sceneItemTransform"]
    assert t["boundsHeight"] == 540 and t["positionX"] + t["boundsWidth"] <= 1280 and t["positionY"] == 180

    # OBS shows the avatar: the person where the frame is opaque, keyed-out green around it.
    assert shot.shape == rgba.shape
    kernel = np.ones((9, 9), np.uint8)  # stay 4 px clear of the soft edge and of H.264 bleed
    opaque = cv2.erode((rgba[..., 3] == 255).astype(np.uint8), kernel).astype(bool)
    clear = cv2.erode((rgba[..., 3] == 0).astype(np.uint8), kernel).astype(bool)
    assert shot[..., 3][opaque].mean() > 240
    assert shot[..., 3][clear].mean() < 20
    diff = np.abs(shot[..., :3][opaque].astype(int) - rgba[..., :3][opaque]).mean()
    assert diff < 12, diff
    assert shot[..., :3][opaque].std() > 30  # a picture, not a flat fill


def test_setup_again_leaves_one_source(obs_studio, feed):
    feed_url, _ = feed
    for _ in range(2):
        r = run_cli(cli_env(obs_studio), *setup_args(feed_url))
        assert r.returncode == 0, r.stderr
    assert f"updated ffmpeg_source '{SOURCE}'" in r.stdout
    with obs_studio.client() as c:
        inputs = [i["inputName"] for i in c.send("GetInputList", raw=True)["inputs"]]
        items = c.send("GetSceneItemList", {"sceneName": "Scene"}, raw=True)["sceneItems"]
        filters = c.send("GetSourceFilterList", {"sourceName": SOURCE}, raw=True)["filters"]
    assert inputs.count(SOURCE) == 1
    assert [i["sourceName"] for i in items] == [SOURCE]
    assert len(filters) == 1


def test_status_reports_the_source_and_an_absent_service(obs_studio, feed):
    r = run_cli(cli_env(obs_studio), "obs", "status", "--service", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 0, r.stderr
    assert "OBS 29.0.2" in r.stdout and "browser source not available" in r.stdout
    assert f"source '{SOURCE}': ffmpeg_source -> {feed[0]}" in r.stdout
    assert "in scenes: Scene; on program" in r.stdout and "chroma key: yes" in r.stdout
    assert "unreachable" in r.stdout


def test_remove_then_remove_again(obs_studio, feed):
    env = cli_env(obs_studio)
    dead = ["--service", f"http://127.0.0.1:{free_port()}"]
    r = run_cli(env, "obs", "remove", *dead)
    assert r.returncode == 0 and f"removed '{SOURCE}'" in r.stdout, r.stderr
    with obs_studio.client() as c:
        assert SOURCE not in [i["inputName"] for i in c.send("GetInputList", raw=True)["inputs"]]
    r = run_cli(env, "obs", "remove", *dead)
    assert r.returncode == 0 and "nothing to remove" in r.stdout


def test_wrong_password_is_a_one_line_error(obs_studio):
    r = run_cli(cli_env(obs_studio, OBS_WEBSOCKET_PASSWORD="not-the-password"), "obs", "setup")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "rejected the password" in r.stderr and str(obs_studio.port) in r.stderr


def test_obs_not_running_is_a_one_line_error(obs_studio):
    port = free_port()  # nothing listens there
    r = run_cli(cli_env(obs_studio, OBS_WEBSOCKET_PORT=str(port)), "obs", "status")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert f"cannot reach OBS websocket at ws://127.0.0.1:{port}" in r.stderr
    assert "Enable WebSocket server" in r.stderr


def test_missing_scene_is_a_one_line_error(obs_studio, feed):
    r = run_cli(cli_env(obs_studio), *setup_args(feed[0], "--scene", "No Such Scene"))
    assert r.returncode == 2
    assert r.stderr.strip() == "error: OBS has no scene named 'No Such Scene'; scenes: 'Scene'"
    with obs_studio.client() as c:
        assert SOURCE not in [i["inputName"] for i in c.send("GetInputList", raw=True)["inputs"]]
