// Viewer: plays the session's avatar with the streamer's voice. ?transparent=1 gives a truly
// transparent page (OBS browser source); ?bg=green (or ?bg=%23rrggbb) a chroma-key colour;
// ?audio=0 the picture alone, with the least delay (voice captured by OBS itself).
"use strict";
(async () => {
  const video = document.getElementById("feed");
  const canvas = document.getElementById("avatar");
  const notice = document.getElementById("notice");
  const p = LA.params;
  if (p.get("transparent") === "1") {
    document.documentElement.style.background = "transparent";
    document.body.style.background = "transparent";
  } else if (p.get("bg")) {
    const named = { green: "#00ff00", blue: "#0000ff", magenta: "#ff00ff", black: "#000000", white: "#ffffff" };
    const raw = p.get("bg").toLowerCase();
    const bg = named[raw] || (/^#[0-9a-f]{3}([0-9a-f]{3})?$/.test(raw) ? raw : null);
    if (bg) { document.documentElement.style.background = bg; document.body.style.background = bg; }
  }
  const meter = new LA.LatencyMeter();
  const state = window.__viewer = { connected: false, error: null, frames: 0, meter, renderer: null };
  const show = (text, onclick) => {
    notice.textContent = text; notice.style.display = text ? "block" : "none"; notice.onclick = onclick || null;
  };

  let conn = null;
  async function connect() {
    try {
      conn = await LA.watch(video, { audio: p.get("audio") !== "0" });
      state.pc = conn.pc;
      conn.pc.onconnectionstatechange = () => {
        state.connected = conn.pc.connectionState === "connected";
        if (["failed", "closed"].includes(conn.pc.connectionState)) setTimeout(connect, 2000);
      };
      show("");
    } catch (e) {
      state.error = String(e.message || e);
      show("Cannot reach the avatar: " + state.error + " (retrying)");
      setTimeout(connect, 3000);
    }
  }
  window.addEventListener("pagehide", () => conn && LA.hangup(conn.resource));

  state.renderer = new LA.PackedRenderer(canvas, video);
  state.renderer.onFrame = (info) => { meter.frame(info); state.frames++; };
  await connect();
  try {
    await video.play();
  } catch (e) {
    // Browsers without an autoplay exemption need a gesture for sound; keep the picture going.
    video.muted = true;
    video.play().catch(() => {});
    show("Click for sound", () => { video.muted = false; video.play(); show(""); });
  }
})();
