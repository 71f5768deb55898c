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
  const state = window.__viewer = { connected: false, error: null, frames: 0, meter, renderer: null, via: null };
  const show = (text, onclick) => {
    notice.textContent = text; notice.style.display = text ? "block" : "none"; notice.onclick = onclick || null;
  };

  let conn = null;
  const audio = p.get("audio") !== "0";
  // Through the SFU when the service publishes this session there (serve --sfu), else directly
  // (WHEP). ?direct=1 always watches directly.
  async function sfuInfo() {
    if (p.get("direct") === "1") return null;
    const info = await LA.api(LA.sessionPath("sfu")).catch(() => null);
    return info && info.kind === "janus" && info.live ? info : null;
  }
  async function connect() {
    let retried = false;
    const retry = (ms) => {
      if (retried) return;
      retried = true;
      state.connected = false;
      if (conn) conn.close();
      setTimeout(connect, ms);
    };
    try {
      conn = null;
      const sfu = await sfuInfo();
      if (sfu) {
        try {
          conn = await LAJanus.watch(video, sfu, (await LA.config()).ice_servers, { audio });
          conn.onended = () => retry(1000);
        } catch (e) {
          console.warn("through Janus failed, watching directly:", e);
          conn = null;
        }
      }
      if (!conn) {
        const direct = await LA.watch(video, { audio });
        conn = { pc: direct.pc, via: "direct", resource: direct.resource,
                 close: () => { LA.hangup(direct.resource); direct.pc.close(); } };
      }
      state.pc = conn.pc;
      state.via = conn.via;
      conn.pc.onconnectionstatechange = () => {
        state.connected = conn.pc.connectionState === "connected";
        if (["failed", "closed"].includes(conn.pc.connectionState)) retry(2000);
      };
      show("");
    } catch (e) {
      state.error = String(e.message || e);
      show("Cannot reach the avatar: " + state.error + " (retrying)");
      setTimeout(connect, 3000);
    }
  }
  // Watching directly while the SFU is down: move back to it once the session is live there.
  setInterval(async () => {
    if (conn && conn.via === "direct" && await sfuInfo()) {
      const old = conn;
      conn = null;
      old.pc.onconnectionstatechange = null;
      old.close();
      connect();
    }
  }, 5000);
  window.addEventListener("pagehide", () => conn && conn.resource && LA.hangup(conn.resource));

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
