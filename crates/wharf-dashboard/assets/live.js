// The live parts of wharf's dashboard: the controller's event stream sends each cell
// that changed, and it replaces that cell in place. Without this script the page
// still reads, as of when it was loaded.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !window.EventSource) {
    return;
  }
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
})();
