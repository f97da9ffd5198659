// dpsd console: the overview's live rates, and a confirmation before a
// delete. The pages work without it; the Content-Security-Policy allows
// this file and nothing inline.
"use strict";

document.addEventListener("submit", (e) => {
  const msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    e.preventDefault();
  }
});

(() => {
  const reg = document.getElementById("rate-registrations");
  const ref = document.getElementById("rate-refusals");
  if (!reg || !ref) {
    return;
  }
  const update = async () => {
    try {
      const r = await fetch("/console/stats", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) {
        return;
      }
      const s = await r.json();
      if (s.measured) {
        reg.textContent = s.registrationsPerSecond.toFixed(1);
        ref.textContent = s.refusalsPerSecond.toFixed(1);
      }
    } catch (err) {
      // The server is unreachable for a moment; the next tick retries.
    }
  };
  update();
  setInterval(update, 2000);
})();
