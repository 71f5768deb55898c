"""Real Chromium (Debian's /usr/bin/chromium) driven by Playwright, with a fake camera made from
real media of a person and a fake microphone of real speech (see notes/webrtc-browser-tests.md)."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

from liveavatar.bench.e2e import CHROMIUM, chromium_args


def make_y4m(src: Path, out: Path) -> Path:
    """Chromium's fake camera wants raw y4m (C420); it loops the file."""
    if not out.exists():
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-pix_fmt", "yuv420p",
                        "-r", "30", str(out)], check=True)
    return out


def launch(playwright, user_dir: Path, y4m: Path, wav: Path):
    return playwright.chromium.launch_persistent_context(
        str(user_dir), executable_path=CHROMIUM, headless=True, args=chromium_args(y4m, wav),
        viewport={"width": 800, "height": 600})


def studio_page(ctx, url: str, publishing: bool = True, timeout: float = 90, query: str = "preview=0"):
    """A new tab on the service's studio at `url` (its own preview off: tests watch the avatar in
    a viewer page). With `publishing`, returns once the studio's camera connection is up."""
    from tests.server.harness import wait_until

    page = ctx.new_page()
    page.goto(f"{url}/studio?{query}" if query else f"{url}/studio")
    if publishing:
        wait_until(lambda: page.evaluate("window.__studio && window.__studio.publishing"), timeout,
                   what="the studio's camera connection")
    return page


FRAMES_DECODED_JS = "async () => await LA.framesDecoded(window.__viewer.pc)"

#: Pixels of the viewer canvas that are strongly red (rig2d's anger marks and forehead flush).
RED_PIXELS_JS = """() => {
  const src = document.getElementById('avatar');
  const c = document.createElement('canvas'); c.width = src.width; c.height = src.height;
  const ctx = c.getContext('2d'); ctx.drawImage(src, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i+3] > 128 && d[i] > 150 && d[i] - d[i+1] > 70 && d[i] - d[i+2] > 70) n++;
  return n;
}"""

# A digest of the avatar element's current picture (sum of pixel values, with position weights),
# to tell whether the viewer shows new pictures.
PICTURE_DIGEST_JS = """() => {
  const src = document.getElementById('avatar');
  const c = document.createElement('canvas'); c.width = src.width; c.height = src.height;
  const ctx = c.getContext('2d'); ctx.drawImage(src, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 3 * d[i+1] + 7 * d[i+2]) % 2147483647;
  return h;
}"""

AUDIO_ENERGY_JS = """async () => {
  let e = 0;
  (await window.__viewer.pc.getStats()).forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') e = r.totalAudioEnergy || 0; });
  return e;
}"""

OVERLAY_PIXELS_JS = """() => {
  const c = document.getElementById('overlay-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


@contextmanager
def served_browser(tmp: Path, size: int):
    """A service with the real stages, and a Chromium whose fake camera and microphone are a
    real person talking. Yields (server, browser context); stops both afterwards."""
    from playwright.sync_api import sync_playwright

    from liveavatar.server.config import ServerConfig
    from liveavatar.server.stages import real_stages
    from tests.media import path as media_path
    from tests.server.harness import ServerThread, free_port

    y4m = make_y4m(media_path("astronaut_talk.mp4"), tmp / "camera.y4m")
    cfg = ServerConfig(port=free_port(), size=size, demo=False)
    server = ServerThread(cfg, real_stages(cfg)).start()
    try:
        with sync_playwright() as pw:
            ctx = launch(pw, tmp / "profile", y4m, media_path("speech_hello.wav"))
            try:
                yield server, ctx
            finally:
                ctx.close()
    finally:
        server.stop()
