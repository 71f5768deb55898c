"""The studio's "Record action" in real Chromium: a fake camera of a real person drives real
perception; the take (countdown, 3 s) is saved as an action of the person's own tracked motion,
gets a button and a key at once, plays on Preview, and Discard removes it."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.conditioning import action_files as af
from liveavatar.paths import actions_dir
from tests.server.browser import served_browser, studio_page
from tests.server.conftest import http, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_record_a_take_in_the_studio(tmp_path):
    with served_browser(tmp_path, size=128) as (server, ctx):
        studio = studio_page(ctx, server.url, timeout=60)
        wait_until(lambda: server.engine.sessions["default"].conditioner.body_present > 0.9, 60,
                   what="perception tracking the person in the studio's camera")
        studio.fill("#record-name", "astro-take")
        studio.fill("#record-seconds", "3")
        studio.select_option("#record-parts", "upper")
        studio.click("#record-start")
        wait_until(lambda: "get ready" in studio.inner_text("#record-status"), 5, what="the countdown")
        wait_until(lambda: studio.evaluate("window.__studio.recording && window.__studio.recording.phase") in
                   ("saved", "failed"), 30, what="the take to be saved")
        assert studio.evaluate("window.__studio.recording.phase") == "saved", studio.inner_text("#message")
        # bound at once: a studio button (with a key) and the API know it
        button = studio.locator('#actions button[data-name="astro-take"]')
        wait_until(lambda: button.count() == 1, 10, what="the new action's button")
        assert studio.locator("#record-preview").is_visible()
        act = af.load_action(actions_dir() / "astro-take.json")
        assert act.parts == "upper" and act.source.kind == "recorded" and 80 <= len(act.frames) <= 95
        # the person's own (tracked) motion, not the idle pose: it moves
        bones = act.array()[:, :af.NB]
        assert np.ptp(np.unwrap(bones, axis=0), axis=0).max() > 0.02
        studio.click("#record-preview")
        wait_until(lambda: http(server.url + "/api/sessions/default/state")[1]["conditioning"]["action"]["name"]
                   == "astro-take", 10, what="the preview to play the new action")
        studio.click("#record-discard")
        wait_until(lambda: button.count() == 0, 10, what="the discarded action's button to go")
        assert not (actions_dir() / "astro-take.json").exists()
