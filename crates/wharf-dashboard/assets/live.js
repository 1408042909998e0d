// The live parts of wharf's dashboard. On the matrix, the controller's event stream
// sends each cell that changed, and it replaces that cell in place. On a service's
// page, its logs grow as the instances write. Without this script every page still
// reads, as of when it was loaded.
"use strict";
(function () {
  if (!window.EventSource) {
    return;
  }
  const live = document.getElementById("live");
  if (live) {
    const say = (text) => { live.textContent = text; };
    const source = new EventSource("/ui/events");
    source.addEventListener("open", () => say("live"));
    source.addEventListener("error", () => say("reconnecting…"));
    source.addEventListener("cell", (event) => {
      const update = JSON.parse(event.data);
      const cell = document.getElementById(update.id);
      if (!cell) {
        // A service or environment the page does not have yet: load it again.
        window.location.reload();
        return;
      }
      if (cell.dataset.v === update.v) {
        return;
      }
      cell.className = update.class;
      cell.innerHTML = update.html;
      cell.dataset.v = update.v;
    });
  }
  // Logs: the stream starts with the last lines (`reset`, in place of the page's copy,
  // which may be older), then sends every line written after them. The most recent
  // lines are kept, a few screenfuls of them.
  const KEPT = 1000;
  for (const log of document.querySelectorAll("pre[data-follow]")) {
    const source = new EventSource(log.dataset.follow);
    source.addEventListener("reset", (event) => {
      log.textContent = event.data ? event.data + "\n" : "";
      log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("log", (event) => {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      const lines = (log.textContent + event.data + "\n").split("\n");
      log.textContent = lines.slice(Math.max(0, lines.length - KEPT - 1)).join("\n");
      if (atEnd) {
        log.scrollTop = log.scrollHeight;
      }
    });
  }
})();
