"""The studio page's prompt for a VTube Studio plugin, in real Chromium: pyvts asks for a token,
the streamer clicks Allow in the studio, the plugin is authenticated and its hotkey works."""
from __future__ import annotations

import asyncio
import threading

import pytest

from liveavatar.server.config import ServerConfig
from tests.media import path as media_path
from tests.server.browser import launch, make_y4m
from tests.server.conftest import ServerThread, free_port, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_studio_prompt_allows_a_vts_plugin(tmp_path, monkeypatch):
    import pyvts
    from playwright.sync_api import sync_playwright
    monkeypatch.setenv("LIVEAVATAR_CONFIG_DIR", str(tmp_path / "config"))
    cfg = ServerConfig(port=free_port(), size=128, demo=False, vts_port=free_port())
    server = ServerThread(cfg, fake_perception_stages(cfg)).start()
    result: dict = {}

    def plugin() -> None:
        async def go() -> None:
            vts = pyvts.vts(plugin_info={"plugin_name": "StreamDeckish", "developer": "someone",
                                         "authentication_token_path": str(tmp_path / "token")},
                            vts_api_info={"version": "1.0", "name": "VTubeStudioPublicAPI", "host": "127.0.0.1",
                                          "port": cfg.vts_port})
            await vts.connect()
            await vts.request_authenticate_token()
            result["authenticated"] = await vts.request_authenticate()
            result["hotkey"] = await vts.request(vts.vts_request.requestTriggerHotKey("emotion.happy"))
            await vts.close()
        asyncio.run(go())

    try:
        y4m = make_y4m(media_path("astronaut_talk.mp4"), tmp_path / "camera.y4m")
        with sync_playwright() as pw:
            ctx = launch(pw, tmp_path / "profile", y4m, media_path("speech_hello.wav"))
            try:
                page = ctx.new_page()
                page.goto(server.url + "/studio")
                page.wait_for_load_state("networkidle")
                t = threading.Thread(target=plugin, daemon=True)
                t.start()
                bar = page.locator(".vts-approval")
                bar.wait_for(timeout=20_000)
                assert "StreamDeckish" in bar.inner_text() and "someone" in bar.inner_text()
                bar.get_by_role("button", name="Allow").click()
                t.join(30)
                assert result.get("authenticated") is True
                assert result["hotkey"]["messageType"] == "HotkeyTriggerResponse"
                wait_until(lambda: page.locator(".vts-approval").count() == 0, timeout=5, what="the prompt to go")
            finally:
                ctx.close()
    finally:
        server.stop()
