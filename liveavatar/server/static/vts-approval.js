// The studio's prompt for VTube Studio plugins (serve --vts-port): a plugin asking for a token
// waits until the streamer allows or denies it here.
"use strict";

(() => {
  const shown = new Set();

  function prompt(req) {
    if (shown.has(req.id)) return;
    shown.add(req.id);
    const bar = document.createElement("div");
    bar.className = "vts-approval";
    bar.dataset.id = req.id;
    bar.style.cssText = "position:fixed;top:8px;left:50%;transform:translateX(-50%);z-index:1000;" +
      "background:#222;color:#fff;padding:10px 14px;border-radius:6px;font:14px sans-serif";
    const text = document.createElement("span");
    text.textContent = `VTube Studio plugin "${req.plugin}" by ${req.developer} wants to control the avatar. `;
    bar.appendChild(text);
    for (const [label, allow] of [["Allow", true], ["Deny", false]]) {
      const b = document.createElement("button");
      b.textContent = label;
      b.style.marginLeft = "8px";
      b.onclick = async () => {
        bar.remove();
        try { await LA.api("/api/vts/approvals/" + req.id, { allow }); } catch (e) { /* it timed out */ }
      };
      bar.appendChild(b);
    }
    document.body.appendChild(bar);
  }

  async function poll() {
    try {
      const r = await LA.api("/api/vts/approvals");
      r.pending.forEach(prompt);
    } catch (e) {
      return false; // no --vts-port: nothing to watch
    }
    return true;
  }

  poll().then((on) => {
    if (!on) return;
    LA.eventsSocket((ev) => { if (ev.type === "vts_permission") prompt(ev); });
  });
})();
