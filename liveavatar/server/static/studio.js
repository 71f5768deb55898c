// Studio: camera + microphone to the service (WHIP), the avatar preview (WHEP, packed),
// emotion/action controls with keyboard shortcuts, calibration, character picker, stats.
"use strict";
(async () => {
  const $ = (id) => document.getElementById(id);
  const camVideo = $("camera-video"), overlay = $("overlay-canvas"), statusEl = $("status");
  const meter = new LA.LatencyMeter();
  const useTimecode = LA.params.get("timecode") !== "0";
  const S = window.__studio = { publishing: false, previewing: false, error: null, stats: null,
                                presses: [], controls: null, meter, acks: 0, lastCues: null };
  const message = (text) => { $("message").textContent = text || ""; };
  const setStatus = (text, ok) => { statusEl.textContent = text; statusEl.className = "pill " + (ok ? "ok" : "bad"); };

  // ---- event stream -----------------------------------------------------------------------
  let ws = null;
  function openSocket() {
    ws = LA.eventsSocket(onEvent);
    ws.onopen = () => { if ($("overlay").checked) ws.send(JSON.stringify({ type: "subscribe", cues: true })); };
    ws.onclose = () => setTimeout(openSocket, 2000);
  }
  function onEvent(ev) {
    if (ev.type === "hello") buildControls(ev.state);
    else if (ev.type === "stats") { S.stats = ev; renderStats(); }
    else if (ev.type === "control") flash(ev.kind, ev.name);
    else if (ev.type === "cues") { S.lastCues = ev; drawOverlay(ev); }
    else if (ev.type === "ack") S.acks++;
    else if (ev.type === "recording") onRecording(ev);
    else if (ev.type === "error") message(ev.error);
  }

  // ---- controls ---------------------------------------------------------------------------
  const keyMap = {};
  function buildControls(state) {
    S.controls = state.controls;
    const mk = (parent, kind, item) => {
      const b = document.createElement("button");
      b.dataset.kind = kind; b.dataset.name = item.name;
      b.innerHTML = item.name + (item.key ? "<kbd>" + item.key.toUpperCase() + "</kbd>" : "");
      b.onclick = () => trigger(kind, item.name);
      parent.appendChild(b);
      if (item.key) keyMap[item.key] = [kind, item.name];
    };
    $("emotions").innerHTML = ""; $("actions").innerHTML = "";
    for (const k of Object.keys(keyMap)) delete keyMap[k];
    state.controls.emotions.forEach((e) => mk($("emotions"), "emotion", e));
    state.controls.actions.forEach((a) => mk($("actions"), "action", a));
    const sel = $("character");
    sel.innerHTML = "";
    state.characters.forEach((c) => { const o = new Option(c, c, false, c === state.character); sel.add(o); });
  }
  function trigger(kind, name) {
    const msg = { type: kind, name, source: "studio" };
    if (kind === "emotion") {
      msg.mode = $("mode").value;
      msg.hold_s = parseFloat($("hold").value) || 3;
    }
    S.presses.push({ t: Date.now(), kind, name });
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg));
    else LA.api(LA.sessionPath(kind), msg).catch((e) => message(e.message));
  }
  function flash(kind, name) {
    document.querySelectorAll(`button[data-kind="${kind}"][data-name="${name}"]`).forEach((b) => {
      b.classList.add("flash"); setTimeout(() => b.classList.remove("flash"), 300);
    });
  }
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
    const hit = keyMap[e.key.toLowerCase()];
    if (hit) { e.preventDefault(); trigger(hit[0], hit[1]); }
  });
  $("calibrate").onclick = () => {
    LA.api(LA.sessionPath("calibrate"), { source: "studio" })
      .then(() => message("Calibrating: look at the camera with a neutral face for 3 seconds"))
      .catch((e) => message(e.message));
  };
  $("character").onchange = (e) => LA.api(LA.sessionPath("character"), { name: e.target.value, source: "studio" }).catch((err) => message(err.message));
  $("overlay").onchange = (e) => {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "subscribe", cues: e.target.checked }));
    if (!e.target.checked) overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  };

  // ---- record a take of your own motion as an action ------------------------------------
  // Countdown (3 s, shown here and timed by the service), the take, then it is saved under the
  // name and bound at once (a button and a key appear); Preview plays it, Discard removes it.
  const COUNTDOWN_S = 3;
  const recStatus = (text) => { $("record-status").textContent = text; };
  let countdownTimer = null;
  function onRecording(ev) {
    if (ev.phase === "recording") { clearInterval(countdownTimer); recStatus(`recording ${ev.seconds} s...`); }
    if (ev.phase === "saved") refreshControls();
  }
  async function refreshControls() {
    try { buildControls(await LA.api(LA.sessionPath("state"))); } catch (e) { message(e.message); }
  }
  $("record-start").onclick = async () => {
    const name = $("record-name").value.trim();
    const seconds = Math.min(10, Math.max(3, parseFloat($("record-seconds").value) || 5));
    if (!/^[a-z0-9][a-z0-9_-]{0,39}$/.test(name)) { message("Action name: lower-case letters, digits, _ or -"); return; }
    $("record-start").disabled = true; $("record-preview").hidden = $("record-discard").hidden = true;
    let left = COUNTDOWN_S;
    recStatus(`get ready: ${left}`);
    countdownTimer = setInterval(() => { left -= 1; if (left > 0) recStatus(`get ready: ${left}`); }, 1000);
    S.recording = { name, phase: "countdown" };
    try {
      const r = await LA.api(LA.sessionPath("actions/record"), {
        name, seconds, countdown_s: COUNTDOWN_S, parts: $("record-parts").value,
        loop: $("record-loop").checked, source: "studio" });
      S.recording = { name, phase: "saved", action: r.action };
      recStatus(`saved "${name}" (${r.action.duration_s.toFixed(1)} s)`);
      $("record-preview").hidden = $("record-discard").hidden = false;
      await refreshControls();
    } catch (e) {
      S.recording = { name, phase: "failed", error: e.message };
      recStatus(""); message(e.message);
    } finally {
      clearInterval(countdownTimer);
      $("record-start").disabled = false;
    }
  };
  $("record-preview").onclick = () => { if (S.recording) trigger("action", S.recording.name); };
  $("record-discard").onclick = async () => {
    if (!S.recording) return;
    const r = await fetch("/api/actions/" + encodeURIComponent(S.recording.name),
                          { method: "DELETE", headers: LA.token ? { Authorization: "Bearer " + LA.token } : {} });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { message(data.error || ("HTTP " + r.status)); return; }
    recStatus(`discarded "${S.recording.name}"`);
    $("record-preview").hidden = $("record-discard").hidden = true;
    S.recording = null;
    await refreshControls();
  };

  // ---- tracking overlay -------------------------------------------------------------------
  function drawOverlay(c) {
    if (!$("overlay").checked) return;
    const w = camVideo.videoWidth || 640, h = camVideo.videoHeight || 480;
    if (overlay.width !== w) { overlay.width = w; overlay.height = h; }
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const dots = (pts, color, r) => {
      if (!pts) return;
      ctx.fillStyle = color;
      for (const [x, y] of pts) ctx.fillRect(x * w - r / 2, y * h - r / 2, r, r);
    };
    dots(c.pose, "#4cf", 6); dots(c.face, "#9f9", 2); dots(c.hand_left, "#fc4", 4); dots(c.hand_right, "#f7c", 4);
  }

  // ---- stats line -------------------------------------------------------------------------
  function renderStats() {
    const st = S.stats || {};
    const ms = st.ms || {};
    const g2g = meter.recent();
    const dropped = st.dropped ? Object.values(st.dropped).reduce((a, b) => a + b, 0) : 0;
    const models = (st.perception && st.perception.ms) || {};
    const perceptionMs = ["pose", "face", "hands"].filter((k) => k in models).map((k) => `${k} ${models[k]}`).join(" ");
    const parts = [
      `in ${st.fps_in ?? "-"} fps`, `perceived ${st.fps_perceived ?? "-"} fps`, `out ${st.fps_out ?? "-"} fps`,
      `capture→ingest ${ms.capture_to_ingest ?? "-"} ms`, `decode ${ms.decode ?? "-"} ms`,
      `perception ${perceptionMs || "-"} ms`, `capture→cues ${ms.capture_to_cues ?? "-"} ms`,
      `condition ${ms.condition ?? "-"} ms`, `render ${st.render_ms ?? "-"} ms`, `pack ${ms.pack ?? "-"} ms`,
      `encode ${ms.encode ?? "-"} ms`, `capture→render ${st.capture_to_render_ms ?? "-"} ms`,
      `glass-to-glass ${isNaN(g2g) ? "-" : Math.round(g2g)} ms`, `dropped ${dropped}`,
    ];
    $("stats").textContent = parts.join(" · ");
  }

  // ---- camera + microphone -> WHIP --------------------------------------------------------
  let media = null, pc = null, resource = null, sendTrack = null;
  async function openMedia() {
    const camId = $("camera").value, micId = $("mic").value;
    const m = await navigator.mediaDevices.getUserMedia({
      video: Object.assign({ width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
                           camId ? { deviceId: { exact: camId } } : {}),
      audio: Object.assign({ echoCancellation: true, noiseSuppression: true }, micId ? { deviceId: { exact: micId } } : {}),
    });
    if (media) media.getTracks().forEach((t) => t.stop());
    media = m;
    camVideo.srcObject = new MediaStream(m.getVideoTracks());
    await camVideo.play().catch(() => {});
    sendTrack = useTimecode ? stampedTrack(m.getVideoTracks()[0]) : m.getVideoTracks()[0];
    await fillDevices();
  }
  // Each camera frame gets a timecode strip (its capture time) along the bottom, so the service
  // and viewers can measure glass-to-glass latency. Done on the track's frames themselves
  // (insertable streams), not through page rendering: the studio usually sits in a background
  // tab while streaming, where rendering callbacks are throttled to ~1 fps. Browsers without
  // insertable streams send the plain camera (no glass-to-glass figure then).
  function stampedTrack(camera) {
    if (!("MediaStreamTrackProcessor" in window && "MediaStreamTrackGenerator" in window && "OffscreenCanvas" in window)) {
      S.timecode = false;
      return camera;
    }
    const processor = new MediaStreamTrackProcessor({ track: camera });
    const generator = new MediaStreamTrackGenerator({ kind: "video" });
    let canvas = null, ctx = null;
    const stamp = new TransformStream({
      transform(frame, controller) {
        const w = frame.displayWidth, h = frame.displayHeight;
        if (!canvas || canvas.width !== w || canvas.height !== h) {
          canvas = new OffscreenCanvas(w, h);
          ctx = canvas.getContext("2d", { alpha: false });
        }
        ctx.drawImage(frame, 0, 0, w, h);
        const sh = LA.cameraStripHeight(h);
        LA.drawStamp(ctx, 0, h - sh, w, sh, [Date.now() % LA.MS_MOD], LA.CAMERA_FIELDS);
        const out = new VideoFrame(canvas, { timestamp: frame.timestamp });
        frame.close();
        controller.enqueue(out);
      },
    });
    processor.readable.pipeThrough(stamp).pipeTo(generator.writable).catch(() => {});
    S.timecode = true;
    return generator;
  }
  async function fillDevices() {
    const devs = await navigator.mediaDevices.enumerateDevices();
    for (const [id, kind, track] of [["camera", "videoinput", media.getVideoTracks()[0]], ["mic", "audioinput", media.getAudioTracks()[0]]]) {
      const sel = $(id), current = track && track.getSettings().deviceId;
      sel.innerHTML = "";
      devs.filter((d) => d.kind === kind).forEach((d, i) => sel.add(new Option(d.label || `${kind} ${i + 1}`, d.deviceId, false, d.deviceId === current)));
    }
  }
  async function publish() {
    const cfg = await LA.config();
    pc = S.pc = new RTCPeerConnection({ iceServers: cfg.ice_servers });
    // Listen before negotiating: on a fast localhost link the connection can come up while we
    // are still awaiting below, and a handler attached later would never hear "connected".
    const thisPc = pc;
    pc.onconnectionstatechange = () => {
      if (thisPc !== pc) return;  // a replaced connection's late events
      S.publishing = pc.connectionState === "connected";
      setStatus(S.publishing ? "live" : pc.connectionState, S.publishing);
      if (["failed", "closed"].includes(pc.connectionState)) setTimeout(startPublishing, 2000);
    };
    const vt = pc.addTransceiver(sendTrack, { direction: "sendonly" });
    const at = media.getAudioTracks()[0];
    if (at) pc.addTransceiver(at, { direction: "sendonly" });
    resource = await LA.negotiate(pc, "/whip/" + encodeURIComponent(LA.session));
    try {  // hold 640x480 instead of letting bandwidth estimation shrink the camera
      const p = vt.sender.getParameters();
      p.degradationPreference = "maintain-resolution";
      await vt.sender.setParameters(p);
    } catch (e) { /* older browsers */ }
  }
  async function startPublishing() {
    try {
      if (pc) { pc.close(); LA.hangup(resource); }
      await publish();
      message("");
    } catch (e) {
      S.error = String(e.message || e);
      setStatus("offline", false);
      message("Cannot connect the camera: " + S.error + " (retrying)");
      setTimeout(startPublishing, 3000);
    }
  }
  async function switchDevice() {
    try {
      await openMedia();
      if (pc) {
        const senders = pc.getSenders();
        const v = senders.find((s) => s.track && s.track.kind === "video");
        const a = senders.find((s) => s.track && s.track.kind === "audio");
        if (v) await v.replaceTrack(sendTrack);
        if (a && media.getAudioTracks()[0]) await a.replaceTrack(media.getAudioTracks()[0]);
      }
    } catch (e) { message("Cannot open that device: " + e.message); }
  }
  $("camera").onchange = switchDevice;
  $("mic").onchange = switchDevice;

  // ---- avatar preview ---------------------------------------------------------------------
  async function startPreview() {
    const feed = $("preview-feed");
    const r = new LA.PackedRenderer($("avatar"), feed);
    r.onFrame = (info) => meter.frame(info);
    S.renderer = r;
    try {
      // The streamer hears themselves already: the preview is picture only (and the fastest).
      const conn = await LA.watch(feed, { audio: false });
      S.previewPc = conn.pc;
      conn.pc.onconnectionstatechange = () => { S.previewing = conn.pc.connectionState === "connected"; };
      window.addEventListener("pagehide", () => LA.hangup(conn.resource));
    } catch (e) { message("Cannot show the avatar: " + e.message); }
  }

  window.addEventListener("pagehide", () => LA.hangup(resource));
  openSocket();
  try {
    await openMedia();
  } catch (e) {
    setStatus("no camera", false);
    message("Camera/microphone unavailable: " + e.message + ". The avatar idles (or plays the demo) until one connects.");
    await startPreview();
    return;
  }
  // ?preview=0 skips the avatar preview (saves an encode and a decode on small machines)
  await Promise.all([startPublishing(), LA.params.get("preview") === "0" ? null : startPreview()]);
  setInterval(renderStats, 1000);
})();
