"""The streamer's browser tab is closed and reopened while a viewer page watches: the service
stays up, the viewer keeps getting the (idling) avatar, and the reopened tab takes over again.
Real Chromium with a fake camera of a real person, real MediaPipe perception."""
from __future__ import annotations

import pytest

from tests.server.browser import served_browser, studio_page
from tests.server.harness import http, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser_live(tmp_path_factory):
    with served_browser(tmp_path_factory.mktemp("tab"), size=128) as live:
        yield live


def open_studio(server, ctx):
    return studio_page(ctx, server.url)


def test_tab_closed_and_reopened(browser_live):
    server, ctx = browser_live
    s = server.engine.sessions["default"]
    viewer = ctx.new_page()
    viewer.goto(server.url + "/viewer")
    studio = open_studio(server, ctx)
    wait_until(lambda: s.conditioner.state()["face_present"] > 0.5, 90, what="tracking of the person")
    first_ingest = s.ingest
    studio.close(run_before_unload=True)   # the tab goes away (its pagehide hangs up WHIP)
    wait_until(lambda: s.ingest is None, 40, what="the service to notice the closed tab")
    wait_until(lambda: s.conditioner.state()["face_present"] < 0.05, 30, what="the avatar to idle")
    frames = viewer.evaluate("window.__viewer.frames")
    wait_until(lambda: viewer.evaluate("window.__viewer.frames") > frames + 15, 30,
               what="the viewer to keep getting the idle avatar")
    assert http(server.url + "/health")[0] == 200
    studio = open_studio(server, ctx)      # reopened
    wait_until(lambda: s.ingest is not None and s.ingest is not first_ingest, 30, what="the new camera")
    got = s.frames_received.count
    wait_until(lambda: s.frames_received.count > got + 30, 30, what="frames from the reopened tab")
    wait_until(lambda: s.conditioner.state()["face_present"] > 0.5, 60, what="tracking again")
    assert len([r for r in http(server.url + "/api/sessions")[1]["sessions"] if r["camera"]]) == 1
    assert viewer.evaluate("window.__viewer.connected")
    studio.close()
    viewer.close()
