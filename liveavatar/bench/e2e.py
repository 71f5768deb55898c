"""`liveavatar bench e2e`: glass-to-glass and trigger-to-pixel latency through a real `serve`
process and a real Chromium (Debian's /usr/bin/chromium via Playwright).

The studio page stamps each camera frame with its capture time (a timecode strip); the service
carries that time through perception, conditioning and rendering and writes it, with a count of
applied control events, into a strip under each avatar frame. The viewer page reads it from the
frames it presents:
- glass-to-glass = viewer presentation time - camera capture time (same machine, same clock),
  one sample per new capture;
- trigger-to-pixel = time from the studio key press to the first viewer frame rendered after the
  event was applied (the strip's event counter goes up).
The fake camera and microphone are the bundled demo clip (a real person, with speech).

`hog=N` measures twice: quiet, then beside N busy-loop processes at normal priority (a streamer's
PC running a game and OBS); the second pass's rows are prefixed `hogN_`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from liveavatar.bench import report
from liveavatar.bench.serving import running_service
from liveavatar.errors import UserError
from liveavatar.paths import assets_dir
from liveavatar.server.session import VOICE_LEAD_MS

CHROMIUM = "/usr/bin/chromium"
EMOTION_KEYS = ("4", "3", "5", "2")   # angry, sad, surprised, happy (studio keys 1-9)


def chromium_args(y4m: Path, wav: Path) -> list[str]:
    """Flags checked in notes/webrtc-browser-tests.md: fake devices from files, no mDNS host
    names (aiortc cannot resolve them), software WebGL, no background throttling."""
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--enable-unsafe-swiftshader",
        "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
    ]


def fake_devices(clip: Path, out_dir: Path) -> tuple[Path, Path]:
    """y4m camera + wav microphone from a clip (Chromium loops both)."""
    y4m, wav = out_dir / "camera.y4m", out_dir / "mic.wav"
    for args in (["-i", str(clip), "-an", "-pix_fmt", "yuv420p", "-r", "30", str(y4m)],
                 ["-i", str(clip), "-vn", "-ac", "1", "-ar", "48000", str(wav)]):
        r = subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"ffmpeg could not prepare fake devices from {clip}: {r.stderr.strip()[:200]}")
    return y4m, wav


def _wait(page: Any, js: str, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = page.evaluate(js)
        if v:
            return v
        time.sleep(0.2)
    raise UserError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def busy_loops(n: int) -> Iterator[list[subprocess.Popen]]:
    """`n` processes that each spin one core at normal priority, for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run(seconds: float = 20.0, size: int | None = None, warmup_s: float = 5.0, clip: Path | None = None,
        hog: int = 0, character: str | None = None) -> dict:
    """`size`: the avatar size `serve` renders (None: its default, 256 on CPU, 512 on a GPU).
    `hog`: also measure beside this many busy-loop processes (0: quiet only).
    `character`: the character `serve` starts with (None: its default, nova)."""
    if not Path(CHROMIUM).exists():
        raise UserError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    clip = clip or assets_dir() / "demo.mp4"
    with tempfile.TemporaryDirectory(prefix="liveavatar-e2e-") as tmp_s:
        tmp = Path(tmp_s)
        y4m, wav = fake_devices(clip, tmp)
        with running_service([*(["--size", str(size)] if size else []),
                              *(["--character", character] if character else []), "--log-level", "warning"],
                             stop_timeout_s=10) as service:
            url = service.url
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                size = json.loads(r.read())["size"]
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
                    args=chromium_args(y4m, wav), viewport={"width": 800, "height": 600})
                try:
                    quiet = _measure(ctx, url, seconds, warmup_s, size)
                    quiet["character"] = character or "default"
                    if hog <= 0:
                        return quiet
                    with busy_loops(hog):
                        busy = _measure(ctx, url, seconds, warmup_s, size)
                    note = f"beside {hog} busy-loop process(es) at normal priority; "
                    quiet["rows"] += [{**r, "metric": f"hog{hog}_{r['metric']}", "note": note + r["note"]}
                                      for r in busy["rows"]]
                    quiet["hog"] = hog
                    return quiet
                finally:
                    ctx.close()


PLAYOUT_JS = """async () => { const o = {};
  (await window.__viewer.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp") o[r.kind] = [r.jitterBufferDelay || 0, r.jitterBufferEmittedCount || 0];
  }); return o; }"""


def _buffer_ms(before: dict, after: dict, kind: str) -> float:
    """Mean time a frame (video) or sample (audio) spent in the browser's jitter buffer."""
    if kind not in before or kind not in after:
        return float("nan")
    n = after[kind][1] - before[kind][1]
    return 1e3 * (after[kind][0] - before[kind][0]) / n if n > 0 else float("nan")


def _fresh_stats(studio: Any, timeout_s: float = 5.0) -> dict:
    """The next stats message the studio receives (they come about once a second)."""
    t_s = studio.evaluate("(window.__studio.stats || {}).t_s || 0")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = studio.evaluate("window.__studio.stats") or {}
        if stats.get("t_s", 0) > t_s:
            return stats
        time.sleep(0.05)
    return studio.evaluate("window.__studio.stats") or {}


def _window_rates(before: dict, after: dict) -> dict[str, float]:
    """Frames per second in, perceived and out between two stats messages."""
    dt = after.get("t_s", 0) - before.get("t_s", 0)
    a, b = after.get("frames", {}), before.get("frames", {})
    return {k: (a[k] - b[k]) / dt if dt > 0 and k in a and k in b else float("nan")
            for k in ("in", "perceived", "out")}


def _open_viewer(ctx: Any, url: str, query: str, warmup_s: float) -> Any:
    viewer = ctx.new_page()
    viewer.goto(url + "/viewer" + query)
    _wait(viewer, "window.__viewer && window.__viewer.connected", 60, "the viewer")
    _wait(viewer, "window.__viewer.meter.samples.length > 5", 60, "timecoded frames at the viewer")
    time.sleep(warmup_s)
    viewer.evaluate("window.__viewer.meter.samples.length = 0")
    return viewer


def _measure(ctx: Any, url: str, seconds: float, warmup_s: float, size: int) -> dict:
    studio = ctx.new_page()
    studio.goto(url + "/studio?preview=0")  # one avatar stream at a time: the viewer's
    # Open the viewer tab only once the studio publishes: a studio that starts publishing from a
    # background tab has its camera throttled by Chromium (framesSent ~1 per second).
    _wait(studio, "window.__studio && window.__studio.publishing", 60, "the studio's camera")

    # 1. The viewer with the streamer's voice (lined up by the service), with key presses.
    viewer = _open_viewer(ctx, url, "", warmup_s)
    n0 = viewer.evaluate("async () => await LA.framesDecoded(window.__viewer.pc)")
    buf0 = viewer.evaluate(PLAYOUT_JS)
    stats0 = _fresh_stats(studio)
    t0 = time.monotonic()
    studio.select_option("#mode", "momentary")
    studio.locator("body").click(position={"x": 5, "y": 5})
    presses = 0
    next_press = t0 + 1.0
    while time.monotonic() - t0 < seconds:
        if time.monotonic() >= next_press:
            studio.keyboard.press(EMOTION_KEYS[presses % len(EMOTION_KEYS)])
            presses += 1
            next_press += 1.5  # far enough apart that each press has its own first frame
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    n1 = viewer.evaluate("async () => await LA.framesDecoded(window.__viewer.pc)")
    buf1 = viewer.evaluate(PLAYOUT_JS)
    g2g = viewer.evaluate("window.__viewer.meter.samples.slice()")
    press_times = studio.evaluate("window.__studio.presses.map(p => p.t)")
    changes = viewer.evaluate("window.__viewer.meter.eventChanges.map(c => c.t)")
    stats = _fresh_stats(studio)
    rates = _window_rates(stats0, stats)
    viewer.close()
    t2p = []
    for tp in press_times:
        after = [tc for tc in changes if tc >= tp]
        if after and after[0] - tp < 5000:
            t2p.append(after[0] - tp)

    # 2. The picture alone (?audio=0: OBS capturing the voice itself; the studio preview).
    picture = _open_viewer(ctx, url, "?audio=0", warmup_s)
    time.sleep(seconds / 2)
    g2g_picture = picture.evaluate("window.__viewer.meter.samples.slice()")
    picture.close()
    studio.close()

    g, gp, t = report.stats(g2g), report.stats(g2g_picture), report.stats(t2p)
    ms, ms95 = stats.get("ms", {}), stats.get("ms_p95", {})
    lag = stats.get("loop_lag_ms", {})
    nan = float("nan")
    rows = [
        report.row("glass_to_glass", g["median"], g["p95"], "ms",
                   f"camera capture -> viewer presentation, with voice in sync, {g['n']} frames; "
                   "goal p50<=150, p95<=250"),
        report.row("glass_to_glass_picture_only", gp["median"], gp["p95"], "ms",
                   f"the same with ?audio=0 (voice from OBS's own mic; studio preview), {gp['n']} frames"),
        report.row("trigger_to_pixel", t["median"], t["p95"], "ms",
                   f"studio key -> first viewer frame with the event, {t['n']}/{presses} presses"),
        report.row("capture_to_ingest", float(ms.get("capture_to_ingest", nan)),
                   float(ms95.get("capture_to_ingest", nan)), "ms",
                   "browser encode + network + jitter buffer + VP8 decode"),
        report.row("capture_to_cues", float(ms.get("capture_to_cues", nan)),
                   float(ms95.get("capture_to_cues", nan)), "ms", "... + perception"),
        report.row("capture_to_render", float(stats.get("capture_to_render_ms", nan)),
                   float(ms95.get("capture_to_render", nan)), "ms",
                   "... + wait for the output tick + conditioning + render"),
        report.row("viewer_video_buffer", _buffer_ms(buf0, buf1, "video"), None, "ms",
                   "browser jitter buffer per frame"),
        report.row("viewer_audio_buffer", _buffer_ms(buf0, buf1, "audio"), None, "ms",
                   "browser jitter buffer per sample"),
        report.row("voice_after_picture", _buffer_ms(buf0, buf1, "audio") - _buffer_ms(buf0, buf1, "video")
                   - VOICE_LEAD_MS, None, "ms",
                   f"lip sync: audio buffer - video buffer - the {VOICE_LEAD_MS:.0f} ms the voice is sent early "
                   "(> 0: voice late; ITU-R BT.1359 detectability: 45 ms early, 125 ms late)"),
        report.row("event_loop_lag", float(lag.get("median", nan)), float(lag.get("p95", nan)), "ms",
                   "service asyncio loop wake-up delay"),
        report.row("viewer_fps", (n1 - n0) / elapsed, None, "fps", "frames decoded by the viewer"),
        report.row("service_fps_out", rates["out"], None, "fps",
                   "frames the service rendered, over the whole window (studio stats' totals)"),
        report.row("perception_fps", rates["perceived"], None, "fps",
                   "camera frames perception kept up with (it yields first under load)"),
        report.row("camera_fps_at_service", rates["in"], None, "fps", "camera frames the service received"),
        report.row("render_batch", float(stats.get("render_ms", nan)), None, "ms",
                   f"generator, {size}x{size}, 1 session"),
    ]
    return report.result("e2e", rows, seconds=elapsed, size=size, presses=presses)
