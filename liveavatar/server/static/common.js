// Shared by the studio and viewer pages: API calls, WHIP/WHEP, the packed colour|alpha
// renderer and the debug timecode (mirrors liveavatar/server/timecode.py).
"use strict";

const LA = (() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const session = params.get("session") || "default";

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function api(path, body) {
    const opts = { headers: authHeaders() };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  function sessionPath(tail) {
    return "/api/sessions/" + encodeURIComponent(session) + "/" + tail;
  }

  function eventsSocket(onMessage) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let url = proto + "//" + location.host + "/api/events?session=" + encodeURIComponent(session);
    if (token) url += "&token=" + encodeURIComponent(token);
    const ws = new WebSocket(url);
    ws.onmessage = (m) => onMessage(JSON.parse(m.data));
    return ws;
  }

  // ---------------------------------------------------------------------------------------
  // WebRTC: non-trickle offers (ICE gathered first), as WHIP/WHEP clients do.
  // ---------------------------------------------------------------------------------------
  let clientConfig = null;
  async function config() {
    if (!clientConfig) clientConfig = await api("/api/config");
    return clientConfig;
  }

  function gathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs || 2000);
    });
  }

  async function negotiate(pc, url) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const r = await fetch(url, {
      method: "POST", headers: authHeaders({ "Content-Type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
    if (r.status !== 201) {
      const data = await r.json().catch(() => ({}));
      throw new Error(data.error || ("HTTP " + r.status));
    }
    const resource = r.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    return resource;
  }

  function hangup(resource) {
    if (!resource) return;
    fetch(resource, { method: "DELETE", headers: authHeaders(), keepalive: true }).catch(() => {});
  }

  // Play the session's avatar (packed layout) into `video`; returns {pc, resource}.
  // The voice arrives as its own stream, already lined up with the picture by the service, so
  // the browser shows each frame as soon as it is decoded. Without audio: the studio preview,
  // or an OBS source whose voice comes from OBS's own microphone capture.
  async function watch(video, { audio = true } = {}) {
    const cfg = await config();
    const pc = new RTCPeerConnection({ iceServers: cfg.ice_servers });
    pc.addTransceiver("video", { direction: "recvonly" });
    if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
    const resource = await negotiate(pc, "/whep/" + encodeURIComponent(session) + "?layout=packed");
    // A live avatar wants the smallest playout buffer the network allows (latency over smoothness).
    for (const r of pc.getReceivers()) {
      try { r.playoutDelayHint = 0; } catch (e) { /* not Chromium */ }
    }
    return { pc, resource };
  }

  async function framesDecoded(pc) {
    let n = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded || 0;
    });
    return n;
  }

  // ---------------------------------------------------------------------------------------
  // Timecode: guard (1,0), fields MSB first, 8-bit check byte; blocks span the full width.
  // ---------------------------------------------------------------------------------------
  const MS_MOD = 1 << 24;
  const CAMERA_FIELDS = [24];
  const AVATAR_FIELDS = [24, 24, 8];

  function checkByte(values, fields) {
    let c = 0xA5;
    values.forEach((v, i) => { for (let s = 0; s < fields[i]; s += 8) c ^= (v >>> s) & 0xFF; });
    return c;
  }

  function encodeBits(values, fields) {
    const bits = [1, 0];
    values.forEach((v, i) => {
      const n = fields[i];
      v = v % Math.pow(2, n);
      for (let b = n - 1; b >= 0; b--) bits.push(Math.floor(v / Math.pow(2, b)) % 2);
    });
    const c = checkByte(values.map((v, i) => v % Math.pow(2, fields[i])), fields);
    for (let b = 7; b >= 0; b--) bits.push((c >> b) & 1);
    return bits;
  }

  function drawStamp(ctx, x, y, w, h, values, fields) {
    const bits = encodeBits(values, fields);
    for (let i = 0; i < bits.length; i++) {
      const x0 = x + Math.floor(i * w / bits.length), x1 = x + Math.floor((i + 1) * w / bits.length);
      ctx.fillStyle = bits[i] ? "#fff" : "#000";
      ctx.fillRect(x0, y, x1 - x0, h);
    }
  }

  function cameraStripHeight(h) { return Math.max(6, Math.floor(h / 32)); }

  // Reads a strip by drawing it (downscaled, which averages each block) into a tiny canvas.
  class StripReader {
    constructor(fields) {
      this.fields = fields;
      this.nb = 2 + fields.reduce((a, b) => a + b, 0) + 8;
      this.canvas = document.createElement("canvas");
      this.canvas.width = this.nb * 4;
      this.canvas.height = 4;
      this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    }
    read(source, sx, sy, sw, sh) {
      this.ctx.drawImage(source, sx, sy, sw, sh, 0, 0, this.canvas.width, 4);
      const px = this.ctx.getImageData(0, 2, this.canvas.width, 1).data;
      const bit = (i) => {
        const o = (i * 4 + 2) * 4;
        return (px[o] + px[o + 1] + px[o + 2]) / 3 > 127 ? 1 : 0;
      };
      if (bit(0) !== 1 || bit(1) !== 0) return null;
      let pos = 2;
      const values = this.fields.map((n) => {
        let v = 0;
        for (let b = 0; b < n; b++) v = v * 2 + bit(pos++);
        return v;
      });
      let check = 0;
      for (let b = 0; b < 8; b++) check = (check << 1) | bit(pos++);
      return check === checkByte(values, this.fields) ? values : null;
    }
  }

  function ageMs(stampMs) { return (((Date.now() % MS_MOD) - stampMs) % MS_MOD + MS_MOD) % MS_MOD; }

  // ---------------------------------------------------------------------------------------
  // Packed colour|alpha -> RGBA. WebGL where available; a 2D-canvas fallback otherwise.
  // ---------------------------------------------------------------------------------------
  class PackedRenderer {
    constructor(canvas, video) {
      this.canvas = canvas;
      this.video = video;
      this.reader = new StripReader(AVATAR_FIELDS);
      this.onFrame = null;   // (info) per presented frame: {captureMs, renderedMs, events}
      this.frames = 0;
      this.gl = canvas.getContext("webgl", { alpha: true, premultipliedAlpha: true, preserveDrawingBuffer: true, antialias: false });
      this.mode = this.gl ? "webgl" : "2d";
      if (this.gl) this._initGL(); else this._init2D();
      const tick = (now, meta) => { this._draw(); video.requestVideoFrameCallback(tick); };
      video.requestVideoFrameCallback(tick);
    }
    _initGL() {
      const gl = this.gl;
      const vs = "attribute vec2 p; varying vec2 uv; void main(){ uv = vec2((p.x+1.0)*0.5, (1.0-p.y)*0.5); gl_Position = vec4(p,0.0,1.0); }";
      const fs = "precision mediump float; varying vec2 uv; uniform sampler2D t; uniform float vh;" +
        "void main(){ vec3 c = texture2D(t, vec2(uv.x*0.5, uv.y*vh)).rgb;" +
        " float a = texture2D(t, vec2(0.5+uv.x*0.5, uv.y*vh)).r;" +
        " a = clamp((a-0.04)/0.92, 0.0, 1.0);" +   // codec noise near 0 stays transparent
        " gl_FragColor = vec4(min(c, vec3(a)), a); }";
      const sh = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
      const prog = gl.createProgram();
      gl.attachShader(prog, sh(gl.VERTEX_SHADER, vs));
      gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, fs));
      gl.linkProgram(prog);
      gl.useProgram(prog);
      const buf = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buf);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
      const loc = gl.getAttribLocation(prog, "p");
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
      const tex = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, tex);
      for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
                            [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]])
        gl.texParameteri(gl.TEXTURE_2D, k, v);
      this.vhLoc = gl.getUniformLocation(prog, "vh");
    }
    _init2D() {
      this.ctx = this.canvas.getContext("2d");
      this.scratch = document.createElement("canvas");
      this.sctx = this.scratch.getContext("2d", { willReadFrequently: true });
    }
    _draw() {
      const v = this.video;
      const w = v.videoWidth, h = v.videoHeight;
      if (!w || !h) return;
      const s = w / 2;
      if (this.canvas.width !== s) { this.canvas.width = s; this.canvas.height = s; }
      if (this.mode === "webgl") {
        const gl = this.gl;
        gl.viewport(0, 0, s, s);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, v);
        gl.uniform1f(this.vhLoc, s / h);
        gl.clearColor(0, 0, 0, 0);
        gl.clear(gl.COLOR_BUFFER_BIT);
        gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      } else {
        if (this.scratch.width !== w) { this.scratch.width = w; this.scratch.height = s; }
        this.sctx.drawImage(v, 0, 0, w, s, 0, 0, w, s);
        const src = this.sctx.getImageData(0, 0, w, s).data;
        const out = this.ctx.createImageData(s, s);
        const o = out.data;
        for (let y = 0; y < s; y++) {
          for (let x = 0; x < s; x++) {
            const ci = (y * w + x) * 4, ai = ci + s * 4, oi = (y * s + x) * 4;
            let a = Math.max(0, Math.min(255, (src[ai] - 10) * 1.087));
            // canvas ImageData is straight alpha; the video carries premultiplied colour
            const k = a > 0 ? 255 / a : 0;
            o[oi] = Math.min(255, src[ci] * k); o[oi + 1] = Math.min(255, src[ci + 1] * k);
            o[oi + 2] = Math.min(255, src[ci + 2] * k); o[oi + 3] = a;
          }
        }
        this.ctx.putImageData(out, 0, 0);
      }
      this.frames++;
      const tc = this.reader.read(v, 0, s, w, h - s);
      if (tc && this.onFrame) this.onFrame({ captureMs: tc[0], renderedMs: tc[1], events: tc[2] });
    }
  }

  function median(a) {
    if (!a.length) return NaN;
    const s = a.slice().sort((x, y) => x - y);
    return s[Math.floor(s.length / 2)];
  }

  // Glass-to-glass: camera capture (the studio's stamp) -> this page presenting the frame.
  class LatencyMeter {
    constructor() { this.lastCapture = -1; this.samples = []; this.lastEvents = -1; this.eventChanges = []; }
    frame(info) {
      if (info.captureMs && info.captureMs !== this.lastCapture) {
        this.lastCapture = info.captureMs;
        const age = ageMs(info.captureMs);
        if (age < 10000) { this.samples.push(age); if (this.samples.length > 600) this.samples.shift(); }
      }
      if (info.events !== this.lastEvents) {
        if (this.lastEvents >= 0) this.eventChanges.push({ t: Date.now(), events: info.events });
        this.lastEvents = info.events;
      }
    }
    recent() { return median(this.samples.slice(-60)); }
  }

  return { params, token, session, api, sessionPath, eventsSocket, config, gathered, negotiate, hangup, watch,
           framesDecoded, drawStamp, cameraStripHeight, CAMERA_FIELDS, AVATAR_FIELDS, MS_MOD,
           PackedRenderer, LatencyMeter, median, ageMs };
})();
