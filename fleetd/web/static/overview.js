// The overview's live part (counts, workers, running tasks, processes) is fetched again
// every few seconds and put in place, so the page stays current without a reload and the
// enqueue form keeps what is being typed.
"use strict";
(function () {
  if (!document.getElementById("live")) return;
  async function refresh() {
    try {
      const response = await fetch(location.pathname, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      const shown = document.getElementById("live");
      if (fresh && shown) shown.replaceWith(fresh);
    } catch (error) {
      // fleetd restarting or gone: keep what is shown, and try again next time
    }
  }
  setInterval(refresh, 3000);
})();
