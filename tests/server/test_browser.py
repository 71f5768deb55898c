"""The live service against a real browser: studio (fake camera of a real person + real speech)
and a viewer page, one service and one Chromium for the whole module."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from tests.server.browser import (
    AUDIO_ENERGY_JS,
    FRAMES_DECODED_JS,
    OVERLAY_PIXELS_JS,
    PICTURE_DIGEST_JS,
    RED_PIXELS_JS,
    served_browser,
    studio_page,
)
from tests.server.harness import http, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with served_browser(tmp_path_factory.mktemp("browser"), size=256) as (server, ctx):
        studio = studio_page(ctx, server.url, publishing=False)  # the viewer page is the avatar stream here
        viewer = ctx.new_page()
        viewer.goto(server.url + "/viewer?transparent=1")
        yield server, studio, viewer


def test_studio_connects_and_service_perceives_a_person(live):
    server, studio, _ = live
    wait_until(lambda: studio.evaluate("window.__studio && window.__studio.publishing"), 60,
               what="the studio's camera connection")
    s = server.engine.sessions["default"]
    assert s.ingest is not None and s.ingest_kind == "webrtc"
    vision = s.perception.process      # MediaPipe runs in its own process, off our GIL ...
    assert vision.is_alive() and vision.pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, vision.pid) >= 5, "... and yields the CPU to rendering"
    cues = wait_until(lambda: s.last_cues if (s.last_cues is not None and s.last_cues.face.present
                                               and s.last_cues.pose.present) else None,
                      60, what="perception to find the person in the studio's camera")
    assert cues.expression_present
    assert s.input.stamped_frames > 0, "the studio's capture timecode did not reach the service"
    # The studio shows the controls it got from the service, with their keys.
    assert studio.locator("#emotions button").count() >= 7
    assert "2" in studio.locator("#emotions button[data-name=happy]").inner_text()
    wait_until(lambda: "fps" in studio.inner_text("#stats") and "glass-to-glass" in studio.inner_text("#stats"),
               20, what="the stats line")
    # The overlay shows what tracking sees, drawn over the camera.
    studio.check("#overlay")
    wait_until(lambda: studio.evaluate("!!(window.__studio.lastCues && window.__studio.lastCues.pose)"), 20,
               what="tracking cues at the studio")
    drawn = wait_until(lambda: studio.evaluate(OVERLAY_PIXELS_JS) > 50 and studio.evaluate(OVERLAY_PIXELS_JS), 10,
                       what="landmarks drawn on the overlay")
    assert drawn > 50
    state = wait_until(lambda: (st := http(server.url + "/api/sessions/default/state")[1])
                       ["conditioning"]["face_present"] > 0.5 and st, 30,
                       what="the conditioner to trust the tracked face")
    assert state["camera"] is True


def test_viewer_keeps_receiving_changing_avatar_video(live):
    """Functional: frames keep arriving and the picture changes. The rate itself is a figure
    (`liveavatar bench e2e`, viewer_fps), not something a test on a shared machine can assert."""
    server, _, viewer = live
    wait_until(lambda: viewer.evaluate("window.__viewer && window.__viewer.connected"), 60,
               what="the viewer's connection")
    wait_until(lambda: viewer.evaluate(FRAMES_DECODED_JS) > 30, 60, what="first decoded frames")
    s = server.engine.sessions["default"]
    decoded, rendered, pictures = [viewer.evaluate(FRAMES_DECODED_JS)], [s.rendered.count], set()
    for _ in range(4):
        pictures.add(viewer.evaluate(PICTURE_DIGEST_JS))
        time.sleep(1.0)
        decoded.append(viewer.evaluate(FRAMES_DECODED_JS))
        rendered.append(s.rendered.count)
    print(f"viewer: frames decoded {decoded}, rendered {rendered}, load {os.getloadavg()[0]:.1f}")
    assert all(b > a for a, b in zip(decoded, decoded[1:])), f"the viewer stopped decoding: {decoded}"
    assert all(b > a for a, b in zip(rendered, rendered[1:])), f"the service stopped rendering: {rendered}"
    assert len(pictures) >= 3, "the viewer's picture does not change"
    # ... with the streamer's voice (the page's <video> plays it; muted would read 0).
    energy = wait_until(lambda: viewer.evaluate(AUDIO_ENERGY_JS), 30, what="the streamer's voice at the viewer")
    assert energy > 0


def test_emotion_key_in_studio_changes_the_avatar_in_the_viewer(live):
    server, studio, viewer = live
    red_before = viewer.evaluate(RED_PIXELS_JS)
    changes_before = viewer.evaluate("window.__viewer.meter.eventChanges.length")
    studio.select_option("#mode", "hold")
    studio.fill("#hold", "30")
    studio.locator("body").click(position={"x": 5, "y": 5})  # focus the page, not an input
    studio.keyboard.press("4")  # 1 neutral, 2 happy, 3 sad, 4 angry
    # The overlay shows what tracking sees, drawn over the camera.
    studio.check("#overlay")
    wait_until(lambda: studio.evaluate("!!(window.__studio.lastCues && window.__studio.lastCues.pose)"), 20,
               what="tracking cues at the studio")
    drawn = wait_until(lambda: studio.evaluate(OVERLAY_PIXELS_JS) > 50 and studio.evaluate(OVERLAY_PIXELS_JS), 10,
                       what="landmarks drawn on the overlay")
    assert drawn > 50
    state = wait_until(lambda: (st := http(server.url + "/api/sessions/default/state")[1])
                       and any(t["emotion"] == "angry" and t["source"] == "studio"
                               for t in st["conditioning"]["triggers"]) and st, 20,
                       what="the service to apply the studio's key")
    assert any(t["mode"] == "hold" for t in state["conditioning"]["triggers"] if t["emotion"] == "angry")
    wait_until(lambda: http(server.url + "/api/sessions/default/state")[1]["conditioning"]["emotion"]
               ["distribution"]["angry"] > 0.6, 20, what="the angry emotion to take over")
    # The viewer receives frames rendered after the event (timecode event counter) ...
    wait_until(lambda: viewer.evaluate("window.__viewer.meter.eventChanges.length") > changes_before, 20,
               what="a viewer frame carrying the new control event")
    # ... and its pixels show the angry face (red flush and anger marks).
    red_after = wait_until(lambda: (n := viewer.evaluate(RED_PIXELS_JS)) > red_before + 15 and n, 20,
                           what=f"the angry face in the viewer (red pixels before: {red_before})")
    print(f"red pixels in the viewer: {red_before} before, {red_after} after the key")
    assert red_after > red_before + 15


def test_transparent_viewer_has_clear_pixels_around_the_character(live):
    _, _, viewer = live
    png = viewer.locator("#avatar").screenshot(omit_background=True)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 3 and img.shape[2] == 4, "screenshot has no alpha channel"
    alpha = img[..., 3]
    h, w = alpha.shape
    corners = np.concatenate([alpha[: h // 10, : w // 10].ravel(), alpha[: h // 10, -w // 10:].ravel()])
    assert (corners == 0).mean() > 0.95, "the background around the character is not transparent"
    assert (alpha[h // 4: 3 * h // 4, w // 3: 2 * w // 3] == 255).mean() > 0.3, "the character is not opaque"


def test_glass_to_glass_latency_is_measured_from_capture_to_viewer(live):
    server, studio, viewer = live
    samples = wait_until(lambda: (v := viewer.evaluate("window.__viewer.meter.samples")) and len(v) >= 20 and v,
                         30, what="glass-to-glass samples in the viewer")
    g2g = float(np.median(samples))
    print(f"glass-to-glass median {g2g:.0f} ms over {len(samples)} frames")
    assert 0 < g2g < 10_000
    # The server-side part (capture -> rendered) is a part of it, so it must be smaller.
    server_ms = server.engine.sessions["default"].timer.summary()["capture_to_render"]["median_ms"]
    assert 0 < server_ms < g2g


def test_green_background_viewer(live):
    server, studio, _ = live
    page = studio.context.new_page()
    try:
        page.goto(server.url + "/viewer?bg=green")
        wait_until(lambda: page.evaluate("window.__viewer && window.__viewer.frames > 3"), 60,
                   what="frames in the green viewer")
        img = cv2.imdecode(np.frombuffer(page.screenshot(), np.uint8), cv2.IMREAD_COLOR)
        b, g, r = img[5, 5]
        assert g > 200 and r < 40 and b < 40
    finally:
        page.close()
