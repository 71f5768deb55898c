"""WHIP and WHEP from real Chromium with an independent npm client (medooze's `whip-whep`:
whip.js / whep.js as plain ES modules) on a page of another origin, beside our own pages: it
posts its offer before ICE gathering ends and PATCHes candidates (trickle), which we answer with
405 as RFC 9725 allows; ICE still connects (the browser checks our candidates)."""
from __future__ import annotations

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from liveavatar.server.config import ServerConfig
from tests.media import path as media_path
from tests.server.browser import launch, make_y4m
from tests.server.conftest import ServerThread, free_port, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PACKAGE = Path(__file__).resolve().parent / ".npm" / "node_modules" / "whip-whep"
SIZE = 128

PAGE = """<!doctype html><meta charset="utf-8"><title>third-party WHIP/WHEP</title>
<video id="v" autoplay playsinline></video>
<script type="module">
import { WHIPClient } from "./whip.js";
import { WHEPClient } from "./whep.js";
const service = new URLSearchParams(location.search).get("service");
window.publish = async (session) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  window.whipPc = pc;
  await new WHIPClient().publish(pc, service + "/whip/" + session);
};
window.view = async (session) => {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (e) => { if (e.track.kind === "video") document.getElementById("v").srcObject = e.streams[0]; };
  window.whepPc = pc;
  await new WHEPClient().view(pc, service + "/whep/" + session);
};
window.decoded = async () => {
  let n = 0;
  (await window.whepPc.getStats()).forEach(r => {
    if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded || 0;
  });
  return n;
};
</script>"""


@pytest.fixture()
def third_party_page(tmp_path):
    if not (PACKAGE / "whip.js").exists():
        raise FileNotFoundError(f"{PACKAGE} missing: run scripts/setup.sh --test (npm install whip-whep)")
    site = tmp_path / "site"
    site.mkdir()
    for name in ("whip.js", "whep.js"):
        shutil.copy(PACKAGE / name, site / name)
    (site / "index.html").write_text(PAGE)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_npm_whip_and_whep_clients_in_chromium(tmp_path, third_party_page):
    from playwright.sync_api import sync_playwright
    cfg = ServerConfig(port=free_port(), size=SIZE, demo=False, allow_origins=[third_party_page])
    server = ServerThread(cfg, fake_perception_stages(cfg)).start()
    try:
        y4m = make_y4m(media_path("astronaut_talk.mp4"), tmp_path / "camera.y4m")
        with sync_playwright() as pw:
            ctx = launch(pw, tmp_path / "profile", y4m, media_path("speech_hello.wav"))
            try:
                page = ctx.new_page()
                page.goto(f"{third_party_page}/index.html?service={server.url}")
                page.wait_for_function("typeof window.publish === 'function'")
                page.evaluate("window.publish('npm')")
                wait_until(lambda: "npm" in server.engine.sessions, timeout=20, what="the WHIP session")
                s = server.engine.sessions["npm"]
                wait_until(lambda: s.frames_received.count > 30, timeout=30, what="camera frames from whip.js")
                assert s.ingest_kind == "webrtc"
                wait_until(lambda: s.worker.processed > 20, timeout=20, what="perception to see them")
                assert tuple(s.last_cues.image_size) == (640, 480)
                wait_until(lambda: s.perception.audio_chunks > 10, timeout=20, what="the microphone")

                page.evaluate("window.view('npm')")
                wait_until(lambda: page.evaluate("window.decoded()") > 30, timeout=30,
                           what="whep.js to decode the avatar")
                dims = page.evaluate("(v => [v.videoWidth, v.videoHeight])(document.getElementById('v'))")
                assert dims == [SIZE, SIZE]
                assert s.viewers == 1
                # Our own viewer page alongside, on the same session.
                ours = ctx.new_page()
                ours.goto(f"{server.url}/viewer?session=npm")
                wait_until(lambda: s.viewers == 2, timeout=20, what="our viewer beside whep.js")
            finally:
                ctx.close()
    finally:
        server.stop()
