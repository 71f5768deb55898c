"""The studio's "New character" flow in real Chromium: upload a real drawing, see the automatic
rig, drag a joint, save; the saved rig has the moved joint and the character goes live."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveavatar.server.config import ServerConfig
from tests.authoring.conftest import DRAWINGS
from tests.authoring.serving import user_data
from tests.server.conftest import ServerThread, free_port, http, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    from tests.media import path as media_path
    from tests.server.browser import launch, make_y4m, studio_page
    tmp = tmp_path_factory.mktemp("editor")
    with user_data(tmp / "data") as chars:
        cfg = ServerConfig(port=free_port(), size=128, demo=False)
        stages = fake_perception_stages(cfg)      # the editor needs no tracking
        server = ServerThread(cfg, stages).start()
        try:
            y4m = make_y4m(media_path("astronaut_talk.mp4"), tmp / "camera.y4m")
            with sync_playwright() as pw:
                ctx = launch(pw, tmp / "profile", y4m, media_path("speech_hello.wav"))
                try:
                    page = studio_page(ctx, server.url, publishing=False)   # the editor needs no camera
                    yield server, page, chars
                finally:
                    ctx.close()
        finally:
            server.stop()


def test_upload_drag_a_joint_save(studio, tmp_path: Path) -> None:
    server, page, chars = studio
    page.click("#new-character")
    page.set_input_files("#rig-file", str(DRAWINGS / "char2_texture.png"))
    page.fill("#rig-name", "kid")
    page.click("#rig-upload")
    wait_until(lambda: page.evaluate("() => { const E = window.__rigEditor; return !E.busy && (E.rig !== null || "
                                     "E.error !== null); }"), 120, what="the import")
    assert page.evaluate("window.__rigEditor.error") is None
    assert page.evaluate("window.__rigEditor.name") == "kid"
    assert "paper cut-out" in page.inner_text("#rig-status")
    # The art and the rig are drawn: the canvas has the drawing's pixels and the joint dots.
    drawn = page.evaluate("""() => { const c = document.getElementById('rig-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) n++; return n / (c.width * c.height); }""")
    assert drawn > 0.1
    before = page.evaluate("window.__rigEditor.rig.joints.elbow_l")
    scale = page.evaluate("window.__rigEditor.scale")
    at = page.evaluate("window.__rigEditor.jointClientPos('elbow_l')")
    page.mouse.move(at["x"], at["y"])
    page.mouse.down()
    page.mouse.move(at["x"] + 30, at["y"] + 24, steps=6)
    page.mouse.up()
    moved = page.evaluate("window.__rigEditor.rig.joints.elbow_l")
    assert moved["x"] == pytest.approx(before["x"] + 30 / scale, abs=1.0)
    assert moved["y"] == pytest.approx(before["y"] + 24 / scale, abs=1.0)
    page.screenshot(path=str(tmp_path / "editor.png"))
    page.click("#rig-save")
    wait_until(lambda: page.evaluate("window.__rigEditor.saved >= 1 && !window.__rigEditor.busy"), 60,
               what="the save")
    assert page.evaluate("window.__rigEditor.error") is None
    saved = json.loads((chars / "kid" / "character.json").read_text())
    assert saved["joints"]["elbow_l"]["x"] == pytest.approx(moved["x"], abs=0.01)
    assert saved["joints"]["elbow_l"]["y"] == pytest.approx(moved["y"], abs=0.01)
    # It is in the character picker, selected, and the session shows it live.
    assert "kid" in page.eval_on_selector_all("#character option", "els => els.map(e => e.value)")
    assert page.eval_on_selector("#character", "e => e.value") == "kid"
    wait_until(lambda: http(server.url + "/api/sessions/default/state")[1]["character"] == "kid", 20,
               what="the session to switch to the new character")
    frame = server.engine.sessions["default"].latest
    wait_until(lambda: (f := server.engine.sessions["default"].latest) is not None and f is not frame, 10,
               what="a frame rendered after the switch")
