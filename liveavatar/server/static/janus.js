// Watching a session through the Janus SFU (serve --sfu): the VideoRoom subscriber side of
// Janus's WebSocket API. Janus offers, we answer. Used by the viewer page when the service says
// the session is live in Janus (GET /api/sessions/{sid}/sfu); otherwise the page watches directly.
"use strict";

const LAJanus = (() => {
  function tx() { return Math.random().toString(36).slice(2) + Date.now().toString(36); }

  class Connection {
    constructor(url) {
      this.ws = new WebSocket(url, "janus-protocol");
      this.pending = new Map();
      this.sessionId = null;
      this.onclose = null;
      this.opened = new Promise((resolve, reject) => {
        this.ws.onopen = resolve;
        this.ws.onerror = () => reject(new Error("cannot reach Janus at " + url));
      });
      this.ws.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.janus === "ack") return;            // the real reply follows with the same transaction
        const p = this.pending.get(msg.transaction);
        if (p) { this.pending.delete(msg.transaction); p(msg); }
        else if (msg.janus === "hangup" || msg.janus === "detached") this.close();
      };
      this.ws.onclose = () => {
        clearInterval(this.keepalive);
        for (const p of this.pending.values()) p({ janus: "error", error: { reason: "Janus closed the connection" } });
        this.pending.clear();
        if (this.onclose) this.onclose();
      };
    }
    send(msg) {
      const t = tx();
      msg.transaction = t;
      if (this.sessionId) msg.session_id = this.sessionId;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { this.pending.delete(t); reject(new Error("Janus did not answer")); }, 10000);
        this.pending.set(t, (reply) => {
          clearTimeout(timer);
          if (reply.janus === "error") return reject(new Error("Janus: " + reply.error.reason));
          const data = (reply.plugindata || {}).data || {};
          if (data.error) return reject(new Error("Janus VideoRoom: " + data.error));
          resolve(reply);
        });
        this.ws.send(JSON.stringify(msg));
      });
    }
    async start() {
      await this.opened;
      this.sessionId = (await this.send({ janus: "create" })).data.id;
      // Janus forgets a session after 60 s without a message.
      // Janus answers it with a bare "ack": send it without waiting for a reply.
      this.keepalive = setInterval(() => {
        if (this.ws.readyState === WebSocket.OPEN)
          this.ws.send(JSON.stringify({ janus: "keepalive", session_id: this.sessionId, transaction: tx() }));
      }, 25000);
    }
    close() { try { this.ws.close(); } catch (e) { /* already closed */ } }
  }

  // Janus names one media stream for all of a feed's tracks, so the browser would hold the
  // picture back to lip-sync it with its (longer) audio buffer. The service already lines the
  // voice up with the picture; give the audio its own stream id, as the direct path does.
  function ownVoiceStream(sdp) {
    return sdp.split(/(?=\r\nm=)/).map((section) =>
      section.startsWith("\r\nm=audio") ? section.replace(/a=msid:(\S+) /g, "a=msid:$1-voice ") : section
    ).join("");
  }

  // Play `info.feed` of `info.room` into `video`; returns {pc, via, close()}.
  async function watch(video, info, iceServers, { audio = true } = {}) {
    const conn = new Connection(info.url);
    await conn.start();
    const handle = (await conn.send({ janus: "attach", plugin: "janus.plugin.videoroom" })).data.id;
    const join = { request: "join", ptype: "subscriber", room: info.room, streams: [{ feed: info.feed }] };
    if (info.pin) join.pin = info.pin;
    const joined = await conn.send({ janus: "message", handle_id: handle, body: join });
    const pc = new RTCPeerConnection({ iceServers });
    const stream = new MediaStream();
    pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
    await pc.setRemoteDescription({ type: "offer", sdp: ownVoiceStream(joined.jsep.sdp) });
    if (!audio) {   // the picture alone (OBS captures the voice itself): decline the audio
      for (const t of pc.getTransceivers()) if (t.receiver.track.kind === "audio") t.direction = "inactive";
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await LA.gathered(pc);
    await conn.send({ janus: "message", handle_id: handle, body: { request: "start" },
                      jsep: { type: "answer", sdp: pc.localDescription.sdp } });
    for (const r of pc.getReceivers()) {
      try { r.playoutDelayHint = 0; } catch (e) { /* not Chromium */ }
    }
    const watching = { pc, via: "janus", onended: null, close: () => { conn.onclose = null; conn.close(); pc.close(); } };
    // Janus went away (or hung up): the page reconnects, directly if the service says so.
    conn.onclose = () => { pc.close(); if (watching.onended) watching.onended(); };
    return watching;
  }

  return { watch };
})();
