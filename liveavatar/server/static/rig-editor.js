// Studio "New character": upload a picture, see its automatic rig (joints + face boxes drawn over
// the art), drag them, save. The saved character joins the character picker and goes live.
// Routes: liveavatar/server/characters.py.
"use strict";
(() => {
  const JOINT_COLOURS = { l: "#4cf", r: "#f7c", c: "#ffd54a" };
  const BOXES = ["eye_l", "eye_r", "brow_l", "brow_r", "mouth"];
  const HIT = 9;            // px on screen
  const E = window.__rigEditor = { rig: null, name: null, scale: 1, saved: 0, error: null, busy: false };
  const headers = (extra) => Object.assign(LA.token ? { Authorization: "Bearer " + LA.token } : {}, extra || {});

  async function call(path, opts) {
    const r = await fetch(path, Object.assign({ headers: headers() }, opts || {}));
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  // ---- the dialog ----------------------------------------------------------------------------
  const dlg = document.createElement("dialog");
  dlg.id = "rig-editor";
  dlg.innerHTML = `
    <form method="dialog" class="rig-head">
      <strong>New character</strong>
      <label>Picture <input type="file" id="rig-file" accept="image/png,image/webp,image/jpeg,.psd"></label>
      <label>Name <input id="rig-name" placeholder="mia" pattern="[a-z0-9][a-z0-9_\\-]{0,63}" size="12"></label>
      <button type="button" id="rig-upload">Import</button>
      <button type="button" id="rig-manual" hidden>Place the rig by hand</button>
      <label>or edit <select id="rig-existing"><option value="">-</option></select></label>
      <button type="submit" id="rig-close">Close</button>
    </form>
    <div id="rig-status">Upload a picture (PNG, WebP, JPEG or a layered PSD): the rig is placed automatically; drag the
      joints and face boxes to fix it, then save.</div>
    <div class="rig-stage checker"><canvas id="rig-canvas" width="480" height="480"></canvas></div>
    <div class="rig-foot"><button type="button" id="rig-save" disabled>Save rig</button>
      <small>joints: drag the dots · face: drag a box, or its corner to resize · the yellow circle is the head</small></div>`;
  document.body.appendChild(dlg);
  const $ = (id) => document.getElementById(id);
  const canvas = $("rig-canvas"), ctx = canvas.getContext("2d");
  const status = (text, bad) => { $("rig-status").textContent = text; $("rig-status").className = bad ? "bad" : ""; };

  const open = document.createElement("button");
  open.id = "new-character";
  open.textContent = "New character";
  open.title = "Import your own character from a picture, and fix its rig";
  open.onclick = () => { refreshExisting(); dlg.showModal(); };
  const picker = $("character");
  (picker && picker.parentElement ? picker.parentElement : document.querySelector("header")).after(open);

  async function refreshExisting() {
    try {
      const list = await call("/api/characters");
      const sel = $("rig-existing");
      sel.innerHTML = '<option value="">-</option>';
      list.characters.filter((c) => c.editable && !c.shipped).forEach((c) => sel.add(new Option(c.name, c.name)));
      return list;
    } catch (e) { status(e.message, true); return null; }
  }

  // ---- loading ---------------------------------------------------------------------------------
  const art = new Image();
  async function load(name, rig) {
    E.name = name;
    E.rig = rig || await call(`/api/characters/${encodeURIComponent(name)}/rig`);
    await new Promise((ok, bad) => {
      art.onload = ok; art.onerror = () => bad(new Error("the art could not be loaded"));
      art.src = `/api/characters/${encodeURIComponent(name)}/art.png?t=${Date.now()}` +
        (LA.token ? "&token=" + encodeURIComponent(LA.token) : "");
    });
    const [w, h] = E.rig.canvas;
    const room = Math.min(window.innerWidth - 80, 640), roomH = Math.max(240, window.innerHeight - 230);
    E.scale = Math.min(room / w, roomH / h);
    canvas.width = Math.round(w * E.scale); canvas.height = Math.round(h * E.scale);
    $("rig-save").disabled = false;
    draw();
  }

  async function upload(manual) {
    const file = $("rig-file").files[0], name = $("rig-name").value.trim();
    if (!file) return status("choose a picture first", true);
    if (!name) return status("give the character a name (a-z 0-9 _ -)", true);
    const form = new FormData();
    form.append("name", name);
    if (manual) form.append("manual", "1");
    form.append("picture", file, file.name);
    E.busy = true; E.error = null; $("rig-manual").hidden = true;
    status("importing " + file.name + " ...");
    try {
      const r = await fetch("/api/characters", { method: "POST", body: form, headers: headers() });
      const res = await r.json().catch(() => ({}));
      if (r.status === 422) $("rig-manual").hidden = false;      // no figure found: place it by hand
      if (!r.ok) throw new Error(res.error || ("HTTP " + r.status));
      await load(res.name, res.rig);
      status(`imported ${res.name}: ${res.method} cut-out, joints by ${res.joints_by}, face by ` +
             `${res.rig.face.detected_by} (${res.seconds} s). Drag to fix, then save.`);
    } catch (e) { E.error = e.message; status(e.message, true); }
    E.busy = false;
  }
  $("rig-upload").onclick = () => upload(false);
  $("rig-manual").onclick = () => upload(true);
  $("rig-existing").onchange = (e) => { if (e.target.value) load(e.target.value).catch((err) => status(err.message, true)); };

  // ---- drawing ---------------------------------------------------------------------------------
  const S = (v) => v * E.scale;
  function side(name) { return name.endsWith("_l") ? "l" : name.endsWith("_r") ? "r" : "c"; }
  const BONES = [["hips", "shoulders"], ["shoulders", "head"], ["shoulder_l", "elbow_l"], ["elbow_l", "wrist_l"],
    ["shoulder_r", "elbow_r"], ["elbow_r", "wrist_r"], ["hip_l", "knee_l"], ["knee_l", "ankle_l"],
    ["hip_r", "knee_r"], ["knee_r", "ankle_r"], ["shoulders", "shoulder_l"], ["shoulders", "shoulder_r"],
    ["hips", "hip_l"], ["hips", "hip_r"]];
  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!E.rig) return;
    ctx.drawImage(art, 0, 0, canvas.width, canvas.height);
    const J = E.rig.joints, F = E.rig.face || {};
    ctx.lineWidth = 2; ctx.strokeStyle = "rgba(255,255,255,.8)";
    for (const [a, b] of BONES) {
      if (!J[a] || !J[b]) continue;
      ctx.beginPath(); ctx.moveTo(S(J[a].x), S(J[a].y)); ctx.lineTo(S(J[b].x), S(J[b].y)); ctx.stroke();
    }
    if (F.head_center && F.head_radius) {
      ctx.strokeStyle = "#ffd54a"; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.arc(S(F.head_center[0]), S(F.head_center[1]), S(F.head_radius), 0, 2 * Math.PI); ctx.stroke();
      ctx.setLineDash([]);
    }
    for (const key of BOXES) {
      const b = F[key];
      if (!b) continue;
      ctx.strokeStyle = key.startsWith("mouth") ? "#ff8a65" : key.startsWith("brow") ? "#aed581" : "#80deea";
      ctx.strokeRect(S(b[0]), S(b[1]), S(b[2]), S(b[3]));
      ctx.fillStyle = ctx.strokeStyle; ctx.fillRect(S(b[0] + b[2]) - 3, S(b[1] + b[3]) - 3, 6, 6);
    }
    for (const [name, j] of Object.entries(J)) {
      ctx.fillStyle = JOINT_COLOURS[side(name)];
      ctx.beginPath(); ctx.arc(S(j.x), S(j.y), 5, 0, 2 * Math.PI); ctx.fill();
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.stroke(); ctx.lineWidth = 2;
    }
  }

  // ---- dragging --------------------------------------------------------------------------------
  let drag = null;
  function pick(x, y) {
    const J = E.rig.joints, F = E.rig.face || {};
    let best = null, bestD = HIT;
    for (const [name, j] of Object.entries(J)) {
      const d = Math.hypot(S(j.x) - x, S(j.y) - y);
      if (d <= bestD) { best = { kind: "joint", name }; bestD = d; }
    }
    if (best) return best;
    if (F.head_center && Math.hypot(S(F.head_center[0]) - x, S(F.head_center[1]) - y) <= HIT)
      return { kind: "head" };
    for (const key of BOXES) {
      const b = F[key];
      if (!b) continue;
      if (Math.hypot(S(b[0] + b[2]) - x, S(b[1] + b[3]) - y) <= HIT) return { kind: "resize", name: key };
    }
    for (const key of BOXES) {
      const b = F[key];
      if (b && x >= S(b[0]) && x <= S(b[0] + b[2]) && y >= S(b[1]) && y <= S(b[1] + b[3])) return { kind: "box", name: key };
    }
    if (F.head_center && F.head_radius &&
        Math.abs(Math.hypot(S(F.head_center[0]) - x, S(F.head_center[1]) - y) - S(F.head_radius)) <= HIT)
      return { kind: "radius" };
    return null;
  }
  function local(ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  }
  canvas.addEventListener("pointerdown", (ev) => {
    if (!E.rig) return;
    const [x, y] = local(ev);
    const hit = pick(x, y);
    if (!hit) return;
    drag = Object.assign(hit, { x0: x, y0: y, orig: JSON.parse(JSON.stringify(E.rig)) });
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const [x, y] = local(ev);
    const dx = (x - drag.x0) / E.scale, dy = (y - drag.y0) / E.scale, o = drag.orig, F = E.rig.face;
    if (drag.kind === "joint") {
      const j = E.rig.joints[drag.name];
      j.x = o.joints[drag.name].x + dx; j.y = o.joints[drag.name].y + dy;
    } else if (drag.kind === "head") {
      F.head_center = [o.face.head_center[0] + dx, o.face.head_center[1] + dy];
    } else if (drag.kind === "radius") {
      F.head_radius = Math.max(2, Math.hypot(x / E.scale - F.head_center[0], y / E.scale - F.head_center[1]));
    } else if (drag.kind === "box") {
      const b = o.face[drag.name];
      F[drag.name] = [b[0] + dx, b[1] + dy, b[2], b[3]];
    } else if (drag.kind === "resize") {
      const b = o.face[drag.name];
      F[drag.name] = [b[0], b[1], Math.max(2, b[2] + dx), Math.max(2, b[3] + dy)];
    }
    draw();
  });
  const endDrag = () => { drag = null; };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);

  // ---- saving ----------------------------------------------------------------------------------
  $("rig-save").onclick = async () => {
    if (!E.rig) return;
    E.busy = true; E.error = null;
    status("saving ...");
    try {
      const res = await call(`/api/characters/${encodeURIComponent(E.name)}/rig`, {
        method: "PUT", headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ joints: E.rig.joints, face: E.rig.face, framing: E.rig.framing }) });
      E.rig = res.rig; E.saved++;
      draw();
      await useCharacter(E.name);
      status(`saved ${E.name}` + (res.reloaded ? " and reloaded it live" : "") + ".");
    } catch (e) { E.error = e.message; status(e.message, true); }
    E.busy = false;
  };

  // The picker lists what the running generator can render; pick the new character there.
  async function useCharacter(name) {
    const list = await refreshExisting();
    const sel = $("character");
    if (!list || !sel) return;
    const live = list.characters.filter((c) => c.live).map((c) => c.name);
    if (!live.includes(name)) {
      status(`${name} saved; the running generator does not render imported characters ` +
             "(start the service with the default --generator auto, or mesh)", true);
      return;
    }
    const keep = sel.value;
    sel.innerHTML = "";
    live.forEach((c) => sel.add(new Option(c, c, false, c === keep)));
    sel.value = name;
    await LA.api(LA.sessionPath("character"), { name, source: "studio" });
  }

  E.jointClientPos = (name) => {
    const r = canvas.getBoundingClientRect(), j = E.rig.joints[name];
    return { x: r.left + S(j.x) * r.width / canvas.width, y: r.top + S(j.y) * r.height / canvas.height };
  };
})();
