"""A real Chromium viewer page watching the avatar through a real Janus (`serve --sfu`), and
falling back to watching directly when Janus dies."""
from __future__ import annotations

import time

import pytest

from tests.interop.janus_clients import local_janus, wait_published
from tests.media import path as media_path
from tests.server.browser import FRAMES_DECODED_JS, PICTURE_DIGEST_JS, launch, make_y4m
from tests.server.harness import http, running_server, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_chromium_viewer_decodes_the_avatar_through_janus_and_falls_back_when_it_dies(tmp_path):
    from playwright.sync_api import sync_playwright
    y4m = make_y4m(media_path("astronaut_talk.mp4"), tmp_path / "camera.y4m")
    with local_janus() as janus, running_server(size=128, sfu=f"janus:{janus.url}",
                                                source=media_path("astronaut_talk.mp4")) as server, \
            sync_playwright() as pw:
        wait_published(server.url)
        ctx = launch(pw, tmp_path / "profile", y4m, media_path("speech_hello.wav"))
        try:
            page = ctx.new_page()
            page.goto(server.url + "/viewer")
            wait_until(lambda: page.evaluate("window.__viewer && window.__viewer.connected"), 60,
                       what="the viewer's connection")
            assert page.evaluate("window.__viewer.via") == "janus"
            wait_until(lambda: page.evaluate(FRAMES_DECODED_JS) > 30, 60, what="frames decoded through Janus")
            # Through Janus the service has no viewer of its own: the fan-out is Janus's.
            assert server.engine.sessions["default"].viewers == 0
            pictures = set()
            for _ in range(5):
                pictures.add(page.evaluate(PICTURE_DIGEST_JS))
                time.sleep(0.5)
            assert len(pictures) > 1, "the avatar does not move in the viewer"
            # The page's WebSocket to Janus closes: it asks the service again and watches directly.
            janus.kill()
            wait_until(lambda: page.evaluate("window.__viewer.via === 'direct' && window.__viewer.connected"),
                       40, what="the viewer to fall back to direct")
            before = page.evaluate(FRAMES_DECODED_JS)
            wait_until(lambda: page.evaluate(FRAMES_DECODED_JS) > before + 20, 30, what="frames decoded directly")
            assert server.engine.sessions["default"].viewers == 1
            assert http(server.url + "/health")[0] == 200
        finally:
            ctx.close()
