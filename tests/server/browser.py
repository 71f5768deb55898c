"""Real Chromium (Debian's /usr/bin/chromium) driven by Playwright, with a fake camera made from
real media of a person and a fake microphone of real speech (see notes/webrtc-browser-tests.md)."""
from __future__ import annotations

import subprocess
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def chromium_args(y4m: Path, wav: Path) -> list[str]:
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        # raw host candidates: aiortc cannot resolve Chromium's mDNS .local names
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        # WebGL (the viewer's alpha recomposition) on the software rasteriser, as in CI
        "--enable-unsafe-swiftshader",
        # background pages must keep decoding (two pages share one headless window)
        "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
    ]


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


FRAMES_DECODED_JS = "async () => await LA.framesDecoded(window.__viewer.pc)"

#: Pixels of the viewer canvas that are strongly red (rig2d's anger marks and forehead flush).
RED_PIXELS_JS = """() => {
  const src = document.getElementById('avatar');
  const c = document.createElement('canvas'); c.width = src.width; c.height = src.height;
  const ctx = c.getContext('2d'); ctx.drawImage(src, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i+3] > 128 && d[i] > 170 && d[i+1] < 90 && d[i+2] < 90) n++;
  return n;
}"""
